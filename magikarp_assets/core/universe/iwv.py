"""Turn an iShares IWV (Russell 3000 ETF) holdings file into the equity universe the platform may trade."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from collections import Counter
from collections.abc import Iterator

import pandas as pd

from magikarp_assets.core.tickers import InvalidTickerError, normalize_ticker

HOLDINGS_COLUMNS = [
    "ticker",
    "name",
    "sector",
    "asset_class",
    "weight",
    "shares",
    "market_value",
    "location",
    "exchange",
    "as_of",
]
UNIVERSE_COLUMNS = ["ticker", "name", "sector", "weight"]

# Header spellings across iShares file versions, compared lower-cased with single spaces.
# Older files say "Shares", recent ones "Quantity"; both mean shares held by the fund.
_ALIASES: dict[str, tuple[str, ...]] = {
    "ticker": ("ticker",),
    "name": ("name", "security name"),
    "sector": ("sector",),
    "asset_class": ("asset class",),
    "weight": ("weight (%)", "weight(%)", "weight", "% of net assets"),
    "shares": ("shares", "quantity"),
    "market_value": ("market value",),
    "location": ("location", "location of risk"),
    "exchange": ("exchange",),
}
_FIELD_OF_ALIAS = {alias: field for field, aliases in _ALIASES.items() for alias in aliases}
_REQUIRED = {
    "ticker": "Ticker",
    "name": "Name",
    "sector": "Sector",
    "asset_class": "Asset Class",
    "weight": "Weight (%)",
}
_NUMERIC = ("weight", "shares", "market_value")

_MISSING = frozenset({"", "-"})
_NO_TICKER = "-"  # iShares' ticker for escrows, private vesting shares and cash accruals
_UNLISTED_EXCHANGE = "no market"  # "NO MARKET (E.G. UNLISTED)": CVRs and delisted residuals
_AS_OF_LABEL = "fund holdings as of"
_AS_OF_FORMATS = ("%b %d, %Y", "%B %d, %Y", "%m/%d/%Y", "%Y-%m-%d")
_FOOTER_START = "the content contained herein"
# A plain number, optionally signed, with well-placed thousands separators: 1,234,567.00
_NUMBER = re.compile(r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$")


class HoldingsFormatError(ValueError):
    """A holdings file breaks a format rule; the message names the file, the line and the rule broken."""

    def __init__(self, source_name: str, line: int | None, rule: str) -> None:
        where = source_name if line is None else f"{source_name}, line {line}"
        super().__init__(f"{where}: {rule}")
        self.source_name = source_name
        self.line = line
        self.rule = rule

    def __reduce__(self) -> tuple[type[HoldingsFormatError], tuple[str, int | None, str]]:
        return (type(self), (self.source_name, self.line, self.rule))


def parse_iwv_holdings(content: bytes | str, *, source_name: str = "IWV holdings") -> pd.DataFrame:
    """Parse an iShares holdings CSV (any known version) into one row per equity holding.

    Accepts the recent layout (fund-facts preamble, "Quantity") and the older one (header on line 1,
    "Shares"), a UTF-8 BOM, CRLF or LF line endings, quoted fields, thousands separators, "-" for
    missing values and the legal footer. Rows whose asset class is not Equity (cash, money market,
    futures, collateral) are dropped. Equity rows that cannot be traded are dropped too, but never
    silently: those with ticker "-" (escrows, private vesting shares, cash accruals) and those on
    exchange "NO MARKET (E.G. UNLISTED)" (CVRs, delisted residuals). Every dropped row is listed in
    ``frame.attrs["skipped_rows"]`` as ``{"line", "ticker", "name", "reason"}``; ``frame.attrs`` also
    holds ``source_name`` and ``as_of``.

    :param content: the file's bytes (decoded as UTF-8) or its text.
    :param source_name: how errors name the file, e.g. its URL or path.
    :returns: columns HOLDINGS_COLUMNS in file order; ``ticker`` canonical (BRKB -> BRK-B), ``weight``
        in percent of the fund, ``as_of`` the preamble's "Fund Holdings as of" date or None.
    :raises HoldingsFormatError: no "Ticker" header, a required column missing, a malformed row, an
        equity row with an invalid ticker, a duplicate ticker after normalisation, an unparseable
        number or date, or no equity rows at all; the message names source_name, line and rule.
    """
    records = _records(_decode(content, source_name), source_name)
    as_of: dt.date | None = None
    header: list[str] | None = None
    header_line = last_line = 0
    for line, row in records:
        last_line = line
        first = _norm(row[0]) if row else ""
        if first == "ticker":
            header, header_line = row, line
            break
        if first == _AS_OF_LABEL:
            as_of = _parse_as_of(row, line, source_name)
    if header is None:
        raise HoldingsFormatError(
            source_name, None, f"no header row starting with a 'Ticker' column in its {last_line} line(s)"
        )
    columns = _map_header(header, header_line, source_name)
    kept, skipped = _read_rows(records, header, columns, source_name)
    if not kept:
        reasons = Counter(s["reason"] for s in skipped)
        summary = "; ".join(f"{n} x {reason}" for reason, n in reasons.items()) or "no rows at all"
        raise HoldingsFormatError(source_name, header_line, f"no Equity rows after the header ({summary})")
    frame = pd.DataFrame.from_records(kept, columns=HOLDINGS_COLUMNS[:-1])
    for col in _NUMERIC:
        frame[col] = frame[col].astype("float64")
    frame["as_of"] = pd.Series([as_of] * len(frame), dtype=object)
    frame.attrs = {"source_name": source_name, "as_of": as_of, "skipped_rows": skipped}
    return frame


def universe_from_holdings(df: pd.DataFrame) -> pd.DataFrame:
    """The tradable universe: one row per holding, heaviest first.

    :param df: a frame from parse_iwv_holdings (at least UNIVERSE_COLUMNS).
    :returns: columns UNIVERSE_COLUMNS sorted by weight descending, ties by ticker ascending, missing
        weights last, with a fresh 0..n-1 index.
    :raises ValueError: a column of UNIVERSE_COLUMNS is missing, naming it.
    """
    missing = [c for c in UNIVERSE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"holdings frame lacks column(s) {missing}; expected parse_iwv_holdings output")
    ordered = df.loc[:, UNIVERSE_COLUMNS].sort_values(
        ["weight", "ticker"], ascending=[False, True], na_position="last", kind="mergesort"
    )
    return ordered.reset_index(drop=True)


def _decode(content: bytes | str, source_name: str) -> str:
    if isinstance(content, bytes):
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = content[: exc.start].count(b"\n") + 1
            raise HoldingsFormatError(
                source_name, line, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from exc
    elif isinstance(content, str):
        text = content
    else:
        raise TypeError(f"{source_name}: content must be bytes or str, got {type(content).__name__}")
    return text.removeprefix("\ufeff")


def _records(text: str, source_name: str) -> Iterator[tuple[int, list[str]]]:
    """CSV records with the physical line each one starts on (quoted fields may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise HoldingsFormatError(source_name, start, f"CSV syntax error: {exc}") from exc
        yield start, row
        start = reader.line_num + 1


def _read_rows(
    records: Iterator[tuple[int, list[str]]], header: list[str], columns: dict[str, int], source_name: str
) -> tuple[list[tuple[object, ...]], list[dict[str, object]]]:
    width = len(header)
    labels = {field: header[index].strip() for field, index in columns.items()}
    kept: list[tuple[object, ...]] = []
    skipped: list[dict[str, object]] = []
    seen: dict[str, tuple[int, str]] = {}
    footer_line: int | None = None
    for line, row in records:
        if all(not cell.strip() for cell in row):
            continue  # blank or non-breaking-space-only lines around the table
        if footer_line is None and (len(row) == 1 or _norm(row[0]).startswith(_FOOTER_START)):
            footer_line = line
        if footer_line is not None:
            if len(row) >= width and _norm(row[columns["asset_class"]]) == "equity":
                raise HoldingsFormatError(
                    source_name, line, f"holding row after the footer that starts on line {footer_line}"
                )
            continue
        row = _fit(row, width, line, source_name)
        cell = {field: row[index].strip() for field, index in columns.items()}
        raw_ticker, asset_class = cell["ticker"], cell["asset_class"]
        name, exchange = _text(cell["name"]), _text(cell.get("exchange", ""))
        reason = _skip_reason(asset_class, raw_ticker, exchange)
        if reason is not None:
            skipped.append({"line": line, "ticker": raw_ticker, "name": name, "reason": reason})
            continue
        try:
            ticker = normalize_ticker(raw_ticker)
        except InvalidTickerError as exc:
            raise HoldingsFormatError(
                source_name, line, f"equity row {name!r} has an invalid ticker {raw_ticker!r} ({exc})"
            ) from exc
        if ticker in seen:
            first_line, first_raw = seen[ticker]
            raise HoldingsFormatError(
                source_name,
                line,
                f"duplicate ticker {ticker!r}: {raw_ticker!r} ({name!r}) normalises to the same symbol "
                f"as {first_raw!r} on line {first_line}",
            )
        seen[ticker] = (line, raw_ticker)
        kept.append(
            (
                ticker,
                name,
                _text(cell["sector"]),
                asset_class,
                *(_number(cell.get(f, ""), labels.get(f), line, source_name) for f in _NUMERIC),
                _text(cell.get("location", "")),
                exchange,
            )
        )
    return kept, skipped


def _skip_reason(asset_class: str, raw_ticker: str, exchange: str | None) -> str | None:
    if _norm(asset_class) != "equity":
        return f"asset class {asset_class!r} is not Equity"
    if raw_ticker == _NO_TICKER:
        return "equity without a ticker ('-'): escrow, private placement or cash accrual"
    if exchange is not None and _norm(exchange).startswith(_UNLISTED_EXCHANGE):
        return f"unlisted equity (exchange {exchange!r})"
    return None


def _map_header(header: list[str], line: int, source_name: str) -> dict[str, int]:
    positions: dict[str, int] = {}
    for index, label in enumerate(header):
        field = _FIELD_OF_ALIAS.get(_norm(label))
        if field is None:
            continue
        if field in positions:
            first = header[positions[field]].strip()
            rule = f"header has two columns for {field}: {first!r} and {label.strip()!r}"
            raise HoldingsFormatError(source_name, line, rule)
        positions[field] = index
    missing = [label for field, label in _REQUIRED.items() if field not in positions]
    if missing:
        found = [label.strip() for label in header]
        rule = f"header lacks required column(s) {missing}; found {found}"
        raise HoldingsFormatError(source_name, line, rule)
    return positions


def _fit(row: list[str], width: int, line: int, source_name: str) -> list[str]:
    """The row cut to the header's width (empty trailing cells are tolerated); else an error."""
    if len(row) > width and not any(cell.strip() for cell in row[width:]):
        row = row[:width]
    if len(row) != width:
        raise HoldingsFormatError(source_name, line, f"row has {len(row)} fields but the header has {width}")
    return row


def _number(raw: str, label: str | None, line: int, source_name: str) -> float:
    if raw in _MISSING:
        return math.nan
    if not _NUMBER.match(raw):
        raise HoldingsFormatError(source_name, line, f"column {label!r} has {raw!r}, which is not a number")
    return float(raw.replace(",", ""))


def _parse_as_of(row: list[str], line: int, source_name: str) -> dt.date | None:
    raw = row[1].strip() if len(row) > 1 else ""
    if raw in _MISSING:
        return None
    for fmt in _AS_OF_FORMATS:
        try:
            return dt.datetime.strptime(raw, fmt).date()
        except ValueError:
            continue
    rule = f"'Fund Holdings as of' date {raw!r} is not a date like 'Nov 21, 2025'"
    raise HoldingsFormatError(source_name, line, rule)


def _text(raw: str) -> str | None:
    return None if raw in _MISSING else raw


def _norm(label: str) -> str:
    """Lower case with runs of whitespace (non-breaking spaces included) collapsed to one space."""
    return " ".join(label.split()).lower()
