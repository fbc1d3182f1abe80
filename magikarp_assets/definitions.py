"""Wires the platform's assets, checks, jobs and schedules with the deployment's resources."""

from __future__ import annotations

import dagster as dg

from magikarp_assets.defs.features import sql_assets, tensor_asset
from magikarp_assets.defs.ingestion import assets as ingestion_assets
from magikarp_assets.defs.ingestion import schedules as ingestion_schedules
from magikarp_assets.defs.models import assets as model_assets
from magikarp_assets.defs.models import backtest as model_backtest
from magikarp_assets.defs.models import production as model_production
from magikarp_assets.defs.models import shadow as model_shadow
from magikarp_assets.defs.reporting import assets as reporting_assets
from magikarp_assets.defs.resources import resources_for
from magikarp_assets.defs.signals import assets as signal_assets
from magikarp_assets.defs.signals import reporting, sensors
from magikarp_assets.defs.universe import assets as universe_assets
from magikarp_assets.settings import deployment, environment

ASSET_MODULES = [
    ingestion_assets,
    universe_assets,
    sql_assets,
    tensor_asset,
    model_assets,
    signal_assets,
    reporting,
    model_backtest,
    model_shadow,
    model_production,
    reporting_assets,
]


def build_definitions(deployment_name: str | None = None) -> dg.Definitions:
    return dg.Definitions(
        # Each asset links to its source file and line in the UI (local file references).
        assets=dg.with_source_code_references(dg.load_assets_from_modules(ASSET_MODULES)),
        asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
        jobs=[
            ingestion_schedules.daily_ingestion_job,
            ingestion_schedules.reference_data_job,
            reporting.daily_signals_job,
            *model_production.JOBS,
        ],
        schedules=[
            ingestion_schedules.daily_ingestion_schedule,
            ingestion_schedules.reference_data_schedule,
            model_production.monthly_model_schedule,
        ],
        # Alert sensors (and real email) only where ENVIRONMENTS says so: staging and prod.
        sensors=[model_production.shadow_report_sensor, reporting_assets.monthly_report_after_month_end]
        + (
            [sensors.run_failure_alert, sensors.blocking_check_alert]
            if environment(deployment_name or deployment()).alert_sensors
            else []
        ),
        resources=resources_for(deployment_name or deployment()),
    )


defs = build_definitions()
