"""Operator email content: the daily recommendation and alert messages, rendered from templates with
their level, date and title in headers, secrets masked."""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from enum import StrEnum
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

RECOMMENDATION_COLUMNS = (
    "ticker", "action", "current_weight", "target_weight", "confidence", "rank", "price", "model_version",
)  # fmt: skip
TABLE_COLUMNS = ("rank", "ticker", "current", "target", "change", "confidence", "price")
TOP_N = 10
LEVEL_HEADER, DATE_HEADER, TITLE_HEADER = "X-TMagikarp-Level", "X-TMagikarp-Date", "X-TMagikarp-Title"
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|api_?key|credential", re.IGNORECASE)
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent.parent / "templates"),
    autoescape=jinja2.select_autoescape(["html.j2"], default=False),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class Level(StrEnum):
    """critical: run failures, model integrity; warning: failed or quarantining data checks, stale data;
    info: daily recommendations, monthly performance."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


_COLOURS = {Level.CRITICAL: "#b42318", Level.WARNING: "#b54708", Level.INFO: "#1f6feb"}


def parse_level(value: str) -> Level:
    """The level named by ``value`` (case-insensitive).

    :param value: critical, warning or info.
    :raises ValueError: naming the value and the allowed levels.
    """
    try:
        return Level(str(value).lower())
    except ValueError:
        raise ValueError(f"notification level {value!r} is not one of {', '.join(Level)}") from None


def subject_for(level: str, title: str) -> str:
    """The subject line, e.g. ``[TMagikarp CRITICAL] Run failed``.

    :param level: the notification level.
    :param title: the human title (whitespace is collapsed so it cannot break the header).
    """
    return f"[TMagikarp {parse_level(level).upper()}] {' '.join(title.split())}"


def redact(text: str, secrets: Sequence[str | None]) -> str:
    """``text`` with every non-empty secret, and its base64 form, replaced by ``***``.

    :param text: any message, e.g. an exception's text.
    :param secrets: values that must never appear (passwords, AWS keys).
    """
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        for form in (secret, base64.b64encode(secret.encode()).decode()):
            text = text.replace(form, "***")
    return text


def slug(text: str) -> str:
    """Lower-case ``text`` as a file-name and Content-ID safe slug (at most 60 chars).

    :param text: any title.
    """
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "message"


def _pct(value: Any, signed: bool = False) -> str:
    return "n/a" if pd.isna(value) else f"{value:+.2%}" if signed else f"{value:.2%}"


def _money(value: Any) -> str:
    return "n/a" if pd.isna(value) else f"${value:,.2f}"


def _summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Labels and formatted values: keys naming a return, ``vs`` or drawdown are signed percentages,
    keys naming a value, cash or equity are dollars, anything else is shown as given."""
    rows = []
    for key, value in summary.items():
        label = key.replace("_", " ")
        lowered = key.lower()
        if isinstance(value, int | float | np.number) and not isinstance(value, bool):
            if any(word in lowered for word in ("return", "vs", "drawdown", "excess")):
                value = _pct(value, signed=True)
            elif any(word in lowered for word in ("value", "cash", "equity")):
                value = _money(value)
        rows.append((label[:1].upper() + label[1:], str(value)))
    return rows


def _top_rows(recs: pd.DataFrame, action: str) -> list[dict[str, str]]:
    chosen = recs[recs["action"].astype(str).str.upper() == action]
    chosen = chosen.sort_values(["confidence", "rank"], ascending=[False, True]).head(TOP_N)
    return [
        {
            "rank": str(int(row.rank)) if pd.notna(row.rank) else "n/a",
            "ticker": str(row.ticker),
            "current": _pct(row.current_weight),
            "target": _pct(row.target_weight),
            "change": _pct(row.target_weight - row.current_weight, signed=True),
            "confidence": "n/a" if pd.isna(row.confidence) else f"{row.confidence:.2f}",
            "price": _money(row.price),
        }
        for row in chosen.itertuples(index=False)
    ]


def _text_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "  (none)"
    widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in TABLE_COLUMNS}
    lines = [{c: c for c in TABLE_COLUMNS}, *rows]
    return "\n".join(("  " + "  ".join(x[c].ljust(widths[c]) for c in TABLE_COLUMNS)).rstrip() for x in lines)


def _new_message(level: Level, title: str, as_of: dt.date, template: str, **context: Any) -> EmailMessage:
    """multipart/alternative of ``template``.txt.j2 and .html.j2; headers carry the level, date and title."""
    context.update(
        subject=subject_for(level, title), title=title, level=level.value, colour=_COLOURS[level],
        as_of=as_of.isoformat(),
    )  # fmt: skip
    message = EmailMessage()
    message["Subject"] = subject_for(level, title)
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    message["Message-ID"] = make_msgid(domain="tmagikarp")
    message[LEVEL_HEADER] = level.value
    message[DATE_HEADER] = as_of.isoformat()
    message[TITLE_HEADER] = " ".join(title.split())
    message.set_content(_ENV.get_template(f"{template}.txt.j2").render(context))
    message.add_alternative(_ENV.get_template(f"{template}.html.j2").render(context), subtype="html")
    return message


def build_recommendation_email(
    recs: pd.DataFrame, portfolio_summary: Mapping[str, Any], charts: Mapping[str, bytes], as_of: dt.date
) -> EmailMessage:
    """The daily info email: portfolio summary, top BUY and top SELL tables (10 each, by confidence) and
    charts as inline images, with a plain-text alternative.

    :param recs: one row per ticker with RECOMMENDATION_COLUMNS; weights as fractions, action BUY/SELL/HOLD.
    :param portfolio_summary: e.g. value, cash, daily_return, vs_QQQ (see ``_summary_rows`` for formats).
    :param charts: chart title -> PNG bytes, embedded as multipart/related parts referenced by ``cid:``.
    :param as_of: the trading day the recommendations are for.
    :raises ValueError: naming missing columns or a chart that is not a PNG.
    """
    missing = [c for c in RECOMMENDATION_COLUMNS if c not in recs.columns]
    if missing:
        raise ValueError(f"recommendations for {as_of} lack {missing}; need {RECOMMENDATION_COLUMNS}")
    for name, png in charts.items():
        if not png.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError(f"chart {name!r} for {as_of} is not PNG data")
    actions = recs["action"].astype(str).str.upper()
    counts = {action: int((actions == action).sum()) for action in ("BUY", "SELL", "HOLD")}
    versions = sorted(recs["model_version"].dropna().astype(str).unique()) or ["unknown"]
    buys, sells, summary = _top_rows(recs, "BUY"), _top_rows(recs, "SELL"), _summary_rows(portfolio_summary)
    cids = {name: f"{slug(name)}.{as_of:%Y%m%d}@tmagikarp" for name in charts}
    title = f"Daily recommendations for {as_of:%Y-%m-%d}"
    message = _new_message(
        Level.INFO, title, as_of, "recommendations", summary=summary, buys=buys, sells=sells, counts=counts,
        model_versions=versions, columns=TABLE_COLUMNS, charts=list(cids.items()),
        buy_table=_text_table(buys), sell_table=_text_table(sells),
    )  # fmt: skip
    html_part = message.get_body(("html",))
    assert html_part is not None  # added just above by add_alternative
    for name, png in charts.items():
        html_part.add_related(
            png, maintype="image", subtype="png", cid=f"<{cids[name]}>",
            filename=f"{slug(name)}.png", disposition="inline",
        )  # fmt: skip
    return message


def build_alert_email(
    level: str,
    title: str,
    details: Mapping[str, Any],
    run_url: str | None = None,
    as_of: dt.date | None = None,
    secrets: Sequence[str | None] = (),
) -> EmailMessage:
    """An alert (run failure, failed check, stale data...) listing ``details`` as a table.

    :param level: critical, warning or info.
    :param title: what happened, e.g. ``Check ohlcv_coverage failed for 2017-01-05``.
    :param details: field -> value; values of keys that look secret (password, token, key) are masked.
    :param run_url: link to the Dagster run, when known.
    :param as_of: the day the alert is about (default: today, UTC).
    :param secrets: values masked wherever they appear in the details.
    """
    chosen = parse_level(level)
    as_of = as_of or dt.datetime.now(dt.UTC).date()
    rows = [
        (str(key), "***" if _SECRET_KEY.search(str(key)) else redact(str(value), secrets))
        for key, value in details.items()
    ]
    return _new_message(chosen, title, as_of, "alert", details=rows, run_url=run_url)


def address(message: EmailMessage, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """Set From and To (replacing any previous ones) and return the same message.

    :param sender: the From address.
    :param recipients: To addresses; may be empty for the outbox transport.
    """
    del message["From"], message["To"]
    message["From"] = sender
    if recipients:
        message["To"] = ", ".join(recipients)
    return message
