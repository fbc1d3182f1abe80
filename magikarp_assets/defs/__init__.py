"""The Dagster shell: assets, checks, schedules and sensors, grouped by domain."""

import warnings

import dagster as dg

# Single-run backfills (BackfillPolicy) are beta in Dagster 1.13; we rely on them knowingly.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
