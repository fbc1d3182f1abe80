"""Reporting assets: the monthly performance report, recommendation history and the system-health
gathering shared by the reports."""
