"""Ticker symbol normalisation: one canonical (Yahoo-style) spelling across sources."""

from __future__ import annotations

import re

# Canonical form: upper case, class shares joined with a dash (BRK-B), as Yahoo spells them;
# index symbols keep Yahoo's caret (^GSPC).
_VALID = re.compile(r"^\^?[A-Z0-9]+(-[A-Z0-9]+)?$")
MAX_LENGTH = 10
# iShares holdings drop the class separator: BRKB -> BRK-B, BFB -> BF-B. Only the known
# class-share names are mapped; guessing from the last letter would break real tickers (e.g. ALB).
CLASS_SHARE_NO_DOT = {
    "BRKB": "BRK-B",
    "BRKA": "BRK-A",
    "BFB": "BF-B",
    "BFA": "BF-A",
    "LENB": "LEN-B",
    "HEIA": "HEI-A",
    "MOGA": "MOG-A",
    "MOGB": "MOG-B",
    "GEFB": "GEF-B",
    "CWENA": "CWEN-A",
    "UHALB": "UHAL-B",
    "BIOB": "BIO-B",
    "CRDA": "CRD-A",  # Crawford & Co class A (Russell 2000)
    "BHA": "BH-A",  # Biglari Holdings class A (Russell 2000)
    "NWSA": "NWSA",
}


class InvalidTickerError(ValueError):
    """A ticker symbol that cannot be normalised."""


def normalize_ticker(raw: str) -> str:
    """`brk.b`, `BRK/B`, `BRK B` -> `BRK-B`; raises InvalidTickerError naming the symbol."""
    if not isinstance(raw, str):
        raise InvalidTickerError(f"ticker {raw!r} is not a string")
    sym = raw.strip().upper().replace(".", "-").replace("/", "-").replace(" ", "-")
    sym = CLASS_SHARE_NO_DOT.get(sym, sym)
    if len(sym.lstrip("^")) > MAX_LENGTH or not _VALID.match(sym):
        raise InvalidTickerError(
            f"ticker {raw!r} is not a valid symbol "
            "(letters, digits and one class separator, at most 10 chars)"
        )
    return sym


def to_polygon(ticker: str) -> str:
    """Polygon spells class shares with a dot: BRK.B."""
    return ticker.replace("-", ".")
