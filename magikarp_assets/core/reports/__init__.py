"""Operator reports as self-contained HTML pages (plotly inline, no network needed to open them): the daily
report, the monthly performance report, the model comparison page, recommendation history and system
health."""
