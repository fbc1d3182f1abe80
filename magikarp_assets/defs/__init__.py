"""The Dagster shell: assets, checks, schedules and sensors, grouped by domain."""
