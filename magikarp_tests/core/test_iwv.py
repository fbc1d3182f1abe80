"""The IWV holdings parser reads both iShares file versions and refuses malformed files loudly."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import pickle
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from magikarp_assets.core.tickers import CLASS_SHARE_NO_DOT
from magikarp_assets.core.universe import (
    HOLDINGS_COLUMNS,
    UNIVERSE_COLUMNS,
    HoldingsFormatError,
    parse_iwv_holdings,
    universe_from_holdings,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "iwv"
RECENT = FIXTURES / "IWV_holdings_2025-11-21.csv"  # BOM, preamble, "Quantity", LF, footer
OLDER = FIXTURES / "IWV_holdings_2019-06-28.csv"  # no preamble, "Shares", other column order, CRLF

RECENT_HEADER = (
    "Ticker,Name,Sector,Asset Class,Market Value,Weight (%),Notional Value,Quantity,Price,"
    "Location,Exchange,Currency,FX Rate,Market Currency,Accrual Date"
)
SRC = "IWV test"


def holding(
    ticker: str,
    *,
    name: str = "ACME CORP",
    sector: str = "Industrials",
    asset_class: str = "Equity",
    weight: str = "0.10",
    quantity: str = "1,000.00",
    market_value: str = "10,000.00",
    exchange: str = "NASDAQ",
) -> list[str]:
    """One data row in the recent layout (15 fields, as iShares writes them)."""
    return [
        ticker, name, sector, asset_class, market_value, weight, market_value, quantity, "10.00",
        "United States", exchange, "USD", "1.00", "USD", "-",
    ]  # fmt: skip


def render(rows: list[list[str]], *, as_of: str = "Nov 21, 2025", newline: str = "\n") -> str:
    """A recent-layout file: preamble (header on line 10), rows from line 11, then the footer."""
    out = io.StringIO()
    out.write(f'iShares Russell 3000 ETF\nFund Holdings as of,"{as_of}"\nInception Date,"May 22, 2000"\n')
    out.write('Shares Outstanding,"42,250,000.00"\nStock,"-"\nBond,"-"\nCash,"-"\nOther,"-"\n\xa0\n')
    out.write(RECENT_HEADER + "\n")
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    out.write(
        '\xa0\n"The content contained herein is owned or licensed by BlackRock and/or its\nthird-party."\n'
    )
    return out.getvalue().replace("\n", newline)


def test_recent_fixture_keeps_equities_with_canonical_tickers_and_the_as_of_date() -> None:
    df = parse_iwv_holdings(RECENT.read_bytes(), source_name=RECENT.name)
    assert list(df.columns) == HOLDINGS_COLUMNS
    assert df["ticker"].tolist() == [
        "NVDA", "AAPL", "MSFT", "AMZN", "GOOGL", "AVGO", "META", "GOOG", "TSLA", "BRK-B",
        "JPM", "LLY", "HEI-A", "LEN-B", "BF-B", "BF-A", "CRD-A", "RILY",
    ]  # fmt: skip
    assert (df["asset_class"] == "Equity").all()
    assert (df["as_of"] == dt.date(2025, 11, 21)).all() and df.attrs["as_of"] == dt.date(2025, 11, 21)
    for col in ("weight", "shares", "market_value"):
        assert df[col].dtype == "float64"
    nvda = df.iloc[0]
    assert (nvda["name"], nvda["sector"], nvda["location"], nvda["exchange"]) == (
        "NVIDIA CORP", "Information Technology", "United States", "NASDAQ",
    )  # fmt: skip
    assert (nvda["weight"], nvda["shares"], nvda["market_value"]) == (6.53, 6_012_455.0, 1_075_507_950.40)
    brk = df.set_index("ticker").loc["BRK-B"]
    assert (brk["name"], brk["weight"], brk["shares"]) == ("BERKSHIRE HATHAWAY INC CLASS B", 1.48, 481_212.0)
    assert df.set_index("ticker").loc["LLY", "market_value"] == 223_643_326.80  # "1,059.70" price row


def test_recent_fixture_accounts_for_every_dropped_row_with_its_line_and_reason() -> None:
    skipped = parse_iwv_holdings(RECENT.read_bytes()).attrs["skipped_rows"]
    assert [(s["line"], s["ticker"]) for s in skipped] == [
        (23, "XTSLA"), (30, "ADRO"), (31, "-"), (32, "ADRO"), (33, "USD"), (34, "MARGIN_USD"),
        (35, "RTYZ5"), (36, "ESZ5"),
    ]  # fmt: skip
    reasons = {s["ticker"]: s["reason"] for s in skipped}
    assert reasons["XTSLA"] == "asset class 'Money Market' is not Equity"
    assert reasons["RTYZ5"] == "asset class 'Futures' is not Equity"
    assert reasons["MARGIN_USD"] == "asset class 'Cash Collateral and Margins' is not Equity"
    assert reasons["ADRO"] == "unlisted equity (exchange 'NO MARKET (E.G. UNLISTED)')"
    assert reasons["-"].startswith("equity without a ticker ('-')")
    assert skipped[2]["name"] == "ESC GCI LIBERTY INC SR ESCROW"


def test_older_fixture_without_preamble_reads_shares_and_reordered_columns() -> None:
    df = parse_iwv_holdings(OLDER.read_bytes(), source_name=OLDER.name)
    assert df["ticker"].tolist() == [
        "MSFT", "AAPL", "AMZN", "FB", "BRK-B", "JNJ", "JPM", "GOOG", "GOOGL", "XOM", "V", "PG",
        "BF-B", "LEN-B", "HEI-A", "MOG-A", "AMSWA",
    ]  # fmt: skip
    assert df["as_of"].isna().all() and df.attrs["as_of"] is None
    amzn = df.set_index("ticker").loc["AMZN"]
    assert (amzn["weight"], amzn["shares"], amzn["market_value"]) == (3.13, 234_672.0, 444_381_939.36)
    assert (amzn["sector"], amzn["exchange"], amzn["location"]) == (
        "Consumer Discretionary", "NASDAQ", "United States",
    )  # fmt: skip
    assert [s["ticker"] for s in df.attrs["skipped_rows"]] == ["XTSLA", "USD", "ESU9", "RTYU9"]


def test_bom_and_crlf_and_text_input_parse_the_same_as_the_lf_bytes() -> None:
    raw = RECENT.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" not in raw
    expected = parse_iwv_holdings(raw)
    crlf = raw.replace(b"\n", b"\r\n")
    for variant in (crlf, crlf.decode("utf-8"), raw.decode("utf-8"), raw.removeprefix(b"\xef\xbb\xbf")):
        got = parse_iwv_holdings(variant)
        pd.testing.assert_frame_equal(got, expected)
        assert got.attrs["skipped_rows"] == expected.attrs["skipped_rows"]  # same line numbers


def test_space_and_dot_separated_class_shares_are_canonical() -> None:
    rows = [holding("BRK B"), holding("MOG A", weight="0.20"), holding("bf.b"), holding("BRKB", weight="0")]
    with pytest.raises(HoldingsFormatError, match=r"line 14: duplicate ticker 'BRK-B': 'BRKB'"):
        parse_iwv_holdings(render(rows), source_name=SRC)
    df = parse_iwv_holdings(render(rows[:3]), source_name=SRC)
    assert df["ticker"].tolist() == ["BRK-B", "MOG-A", "BF-B"]


def test_dash_means_missing_and_optional_columns_may_be_absent() -> None:
    df = parse_iwv_holdings(render([holding("ACME", sector="-", quantity="-", market_value="-")]))
    row = df.iloc[0]
    assert row["sector"] is None and math.isnan(row["shares"]) and math.isnan(row["market_value"])
    minimal = "Ticker,Name,Sector,Asset Class,Weight\nAAPL,APPLE INC,Information Technology,Equity,6.1\n"
    df = parse_iwv_holdings(minimal)
    assert df.loc[0, "weight"] == 6.1 and math.isnan(df.loc[0, "shares"])
    assert df.loc[0, "location"] is None and df.loc[0, "exchange"] is None and df.loc[0, "as_of"] is None


def test_trailing_empty_fields_are_tolerated() -> None:
    text = "Ticker,Name,Sector,Asset Class,Weight (%)\nAAPL,APPLE INC,Information Technology,Equity,6.1,,\n"
    assert parse_iwv_holdings(text)["ticker"].tolist() == ["AAPL"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "IWV test: no header row starting with a 'Ticker' column in its 0 line(s)"),
        (
            b'iShares Russell 3000 ETF\nFund Holdings as of,"Nov 21, 2025"\nSymbol,Name\nAAPL,APPLE\n',
            "IWV test: no header row starting with a 'Ticker' column in its 4 line(s)",
        ),
        (
            b"Ticker,Name,Sector,Weight (%)\nAAPL,APPLE INC,Information Technology,6.1\n",
            "IWV test, line 1: header lacks required column(s) ['Asset Class']; "
            "found ['Ticker', 'Name', 'Sector', 'Weight (%)']",
        ),
        (
            b"Ticker,Name,Sector,Asset Class,Weight (%),Shares,Quantity\n",
            "IWV test, line 1: header has two columns for shares: 'Shares' and 'Quantity'",
        ),
        (
            b'Fund Holdings as of,"21/11/2025"\nTicker,Name,Sector,Asset Class,Weight (%)\n',
            "IWV test, line 1: 'Fund Holdings as of' date '21/11/2025' is not a date like 'Nov 21, 2025'",
        ),
        (
            b"Ticker,Name,Sector,Asset Class,Weight (%)\nAAPL,APPLE INC,Information Technology,Equity\n",
            "IWV test, line 2: row has 4 fields but the header has 5",
        ),
        (
            b"Ticker,Name,Sector,Asset Class,Weight (%)\nAAPL,APPLE INC,Tech,Equity,6.1\n\xff\xfe\n",
            "IWV test, line 3: not UTF-8 text (invalid start byte at byte 73)",
        ),
    ],
)
def test_malformed_files_name_the_source_line_and_rule(content: bytes, message: str) -> None:
    with pytest.raises(HoldingsFormatError) as info:
        parse_iwv_holdings(content, source_name=SRC)
    assert str(info.value) == message


def test_no_equity_rows_is_an_error_naming_the_header_line_and_what_was_dropped() -> None:
    rows = [
        holding("XTSLA", name="BLK CSH FND TREASURY SL AGENCY", asset_class="Money Market"),
        holding("USD", name="USD CASH", asset_class="Cash"),
        holding("RTYZ5", name="RUSSELL 2000 EMINI DEC 25", asset_class="Futures"),
    ]
    with pytest.raises(HoldingsFormatError) as info:
        parse_iwv_holdings(render(rows), source_name=SRC)
    assert str(info.value) == (
        "IWV test, line 10: no Equity rows after the header (1 x asset class 'Money Market' is not Equity; "
        "1 x asset class 'Cash' is not Equity; 1 x asset class 'Futures' is not Equity)"
    )
    with pytest.raises(
        HoldingsFormatError, match=r"^IWV test, line 10: no Equity rows .*\(no rows at all\)$"
    ):
        parse_iwv_holdings(render([]), source_name=SRC)


def test_duplicate_tickers_after_normalisation_name_both_lines() -> None:
    rows = [holding("AAPL"), holding("BRKB", name="BERKSHIRE B"), holding("BRK.B", name="BERKSHIRE B")]
    with pytest.raises(HoldingsFormatError) as info:
        parse_iwv_holdings(render(rows), source_name=SRC)
    assert str(info.value) == (
        "IWV test, line 13: duplicate ticker 'BRK-B': 'BRK.B' ('BERKSHIRE B') normalises to the same "
        "symbol as 'BRKB' on line 12"
    )


@pytest.mark.parametrize(
    ("field", "value", "column"),
    [
        ("weight", "6.5.3", "Weight (%)"),
        ("quantity", "1,23.00", "Quantity"),
        ("market_value", "nan", "Market Value"),
    ],
)
def test_unparseable_numbers_name_the_line_column_and_value(field: str, value: str, column: str) -> None:
    rows = [holding("AAPL"), holding("MSFT", **{field: value})]
    with pytest.raises(HoldingsFormatError) as info:
        parse_iwv_holdings(render(rows), source_name=SRC)
    assert str(info.value) == f"IWV test, line 12: column {column!r} has {value!r}, which is not a number"


@pytest.mark.parametrize("raw", ["GORO_X", "", "TOOLONGTICKER"])
def test_an_equity_row_with_a_bad_ticker_is_never_dropped_silently(raw: str) -> None:
    rows = [holding("AAPL"), holding("MSFT"), holding(raw, name="FORTITUDE GOLD CORP")]
    with pytest.raises(HoldingsFormatError) as info:
        parse_iwv_holdings(render(rows), source_name=SRC)
    assert str(info.value).startswith(
        f"IWV test, line 13: equity row 'FORTITUDE GOLD CORP' has an invalid ticker {raw!r} (ticker {raw!r}"
    )


def test_a_holding_after_the_footer_is_an_error_not_ignored() -> None:
    text = render([holding("AAPL")]) + ",".join(f'"{cell}"' for cell in holding("MSFT")) + "\n"
    lines = text.count("\n")
    with pytest.raises(HoldingsFormatError) as info:
        parse_iwv_holdings(text, source_name=SRC)
    assert str(info.value) == f"IWV test, line {lines}: holding row after the footer that starts on line 13"


def test_error_survives_pickling_with_its_fields() -> None:
    err = HoldingsFormatError("IWV test", 12, "column 'Weight (%)' has 'x', which is not a number")
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.source_name, back.line, back.rule) == (str(err), "IWV test", 12, err.rule)


def test_universe_is_heaviest_first_then_by_ticker() -> None:
    universe = universe_from_holdings(parse_iwv_holdings(RECENT.read_bytes()))
    assert list(universe.columns) == UNIVERSE_COLUMNS
    assert universe.index.tolist() == list(range(18))
    assert universe["ticker"].tolist() == [
        "NVDA", "AAPL", "MSFT", "AMZN", "GOOGL", "AVGO", "GOOG", "META", "TSLA", "BRK-B",
        "JPM", "LLY", "HEI-A", "BF-B", "BF-A", "LEN-B", "CRD-A", "RILY",
    ]  # fmt: skip
    ties = universe_from_holdings(
        pd.DataFrame({"ticker": ["B", "A", "C", "D"], "name": list("bacd"), "sector": list("xxxx"),
                      "weight": [1.0, 1.0, math.nan, 2.0]})
    )  # fmt: skip
    assert ties["ticker"].tolist() == ["D", "A", "B", "C"]
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['sector'\]"):
        universe_from_holdings(pd.DataFrame({"ticker": [], "name": [], "weight": []}))


# --- property: random equity rows rendered in the recent layout come back unchanged ----------------------

_SECTORS = ["Information Technology", "Financials", "Health Care", "Industrials", "Communication", "Energy"]
_PLAIN = st.from_regex(r"[A-Z]{1,5}", fullmatch=True).filter(lambda t: t not in CLASS_SHARE_NO_DOT)
_CLASS = st.tuples(
    st.from_regex(r"[A-Z]{1,4}", fullmatch=True), st.sampled_from(". /"), st.sampled_from("AB")
)
_TICKER = st.one_of(
    _PLAIN.map(lambda t: (t, t)),
    _CLASS.map(lambda p: (f"{p[0]}{p[1]}{p[2]}", f"{p[0]}-{p[2]}")),
)  # (as written in the file, canonical)
_NAME = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 &,.'\"-/", min_size=1, max_size=30).map(str.strip)
_CENTS = st.integers(min_value=0, max_value=10**14)


def _money(cents: int | None) -> str:
    return "-" if cents is None else format(Decimal(cents).scaleb(-2), ",.2f")


@st.composite
def _holdings_file(draw: st.DrawFn) -> tuple[str, list[tuple[object, ...]], dt.date, int]:
    equities = draw(
        st.lists(
            st.tuples(
                _TICKER,
                _NAME.filter(lambda n: n not in ("", "-")),
                st.sampled_from(_SECTORS),
                st.integers(0, 10_000),
                st.one_of(st.none(), _CENTS),
                st.one_of(st.none(), _CENTS),
            ),
            min_size=1,
            max_size=25,
            unique_by=lambda e: e[0][1],
        )
    )
    rows = [
        ("E", holding(t[0], name=n, sector=s, weight=_money(w), quantity=_money(q), market_value=_money(mv)))
        for t, n, s, w, q, mv in equities
    ]
    cash = draw(st.lists(st.sampled_from(["Cash", "Money Market", "Futures"]), max_size=4))
    rows += [("C", holding("USD", name="USD CASH", asset_class=a, weight="-0.02")) for a in cash]
    rows = draw(st.permutations(rows))
    as_of = draw(st.dates(dt.date(2000, 1, 1), dt.date(2030, 12, 31)))
    text = render(
        [r for _, r in rows], as_of=as_of.strftime("%b %d, %Y"), newline=draw(st.sampled_from(["\n", "\r\n"]))
    )
    by_canonical = {t[1]: (t[1], n, s, w / 100, q, mv) for t, n, s, w, q, mv in equities}
    order = [_canon(r[0]) for kind, r in rows if kind == "E"]
    return text, [by_canonical[c] for c in order], as_of, len(cash)


def _canon(raw: str) -> str:
    return raw.replace(".", "-").replace(" ", "-").replace("/", "-")


def _nan_or(cents: int | None) -> float:
    return math.nan if cents is None else cents / 100


@settings(max_examples=60, deadline=None)
@given(_holdings_file(), st.booleans())
def test_random_equity_rows_round_trip_through_the_recent_format(
    generated: tuple[str, list[tuple[object, ...]], dt.date, int], as_bytes: bool
) -> None:
    text, expected, as_of, n_cash = generated
    df = parse_iwv_holdings(("\ufeff" + text).encode("utf-8") if as_bytes else text)
    assert df["ticker"].tolist() == [e[0] for e in expected]
    assert df["name"].tolist() == [e[1] for e in expected]
    assert df["sector"].tolist() == [e[2] for e in expected]
    assert df["weight"].tolist() == [e[3] for e in expected]
    pd.testing.assert_series_equal(
        df["shares"], pd.Series([_nan_or(e[4]) for e in expected], name="shares", dtype="float64")
    )
    pd.testing.assert_series_equal(
        df["market_value"], pd.Series([_nan_or(e[5]) for e in expected], name="market_value", dtype="float64")
    )
    assert (df["as_of"] == as_of).all()
    assert len(df.attrs["skipped_rows"]) == n_cash
