"""Operator email: what the daily recommendation and alert messages say (render), the charts they carry
(charts) and how they reach people without being lost (delivery)."""

from magikarp_assets.core.notify.charts import equity_curve_png, weights_bar_png
from magikarp_assets.core.notify.delivery import (
    DeliveryError,
    DeliveryQueue,
    DeliveryReceipt,
    OutboxTransport,
    SesTransport,
    SmtpTransport,
    Transport,
    outbox_name,
    read_eml,
    write_eml,
)
from magikarp_assets.core.notify.render import (
    DATE_HEADER,
    LEVEL_HEADER,
    RECOMMENDATION_COLUMNS,
    TITLE_HEADER,
    TOP_N,
    Level,
    address,
    build_alert_email,
    build_recommendation_email,
    parse_level,
    redact,
    subject_for,
)

__all__ = [
    "DATE_HEADER",
    "LEVEL_HEADER",
    "RECOMMENDATION_COLUMNS",
    "TITLE_HEADER",
    "TOP_N",
    "DeliveryError",
    "DeliveryQueue",
    "DeliveryReceipt",
    "Level",
    "OutboxTransport",
    "SesTransport",
    "SmtpTransport",
    "Transport",
    "address",
    "build_alert_email",
    "build_recommendation_email",
    "equity_curve_png",
    "outbox_name",
    "parse_level",
    "read_eml",
    "redact",
    "subject_for",
    "weights_bar_png",
    "write_eml",
]
