"""The fixed-slot universe: a ticker keeps one column of the 3,600-wide tensors while active or archived."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from magikarp_assets.core.market_data.base import describe_tickers
from magikarp_assets.core.spec import MAX_ACTIVE, N_ARCHIVE, N_SLOTS, SLOT_ACTIVE, SLOT_ARCHIVE, SLOT_PADDING
from magikarp_assets.core.tickers import InvalidTickerError, normalize_ticker

# Occupied slots only (active and archived), sorted by slot. `since` is the day the current state began,
# `first_added` the day the ticker took this slot.
TABLE_COLUMNS = ["slot", "ticker", "state", "since", "first_added"]
# Stored form: all N_SLOTS rows (padding rows have ticker "" and state SLOT_PADDING), plus the map's
# as_of and version so a loaded file can be checked against its content.
FRAME_COLUMNS = [*TABLE_COLUMNS, "as_of", "version"]


class SlotMapError(ValueError):
    """A slot map breaks one of its invariants; the message names the rule and the offending tickers/slots."""


class InvalidUniverseError(ValueError):
    """The active universe given to the slot map has invalid or duplicate tickers."""


class UniverseTooLargeError(InvalidUniverseError):
    """More active tickers than MAX_ACTIVE slots: the slot map refuses rather than truncating."""


def _day(value: dt.date | str | pd.Timestamp) -> pd.Timestamp:
    return pd.Timestamp(value).tz_localize(None).normalize()


def _empty_table() -> pd.DataFrame:
    return _canonical(pd.DataFrame(columns=TABLE_COLUMNS))


def _canonical(table: pd.DataFrame) -> pd.DataFrame:
    out = table.reindex(columns=TABLE_COLUMNS)
    out = out.astype({"slot": np.int64, "ticker": object, "state": np.int8})
    for col in ("since", "first_added"):
        out[col] = pd.to_datetime(out[col]).astype("datetime64[ns]")
    return out.sort_values("slot", kind="stable").reset_index(drop=True)


def _version(table: pd.DataFrame) -> str:
    digest = hashlib.sha256(f"{len(table)}\n".encode())
    digest.update(table["slot"].to_numpy(dtype="<i8").tobytes())
    digest.update(table["state"].to_numpy(dtype="<i1").tobytes())
    for col in ("since", "first_added"):  # whole days since the epoch
        digest.update(table[col].to_numpy(dtype="datetime64[D]").astype("<i8").tobytes())
    digest.update("\n".join(table["ticker"]).encode())
    return "sm-" + digest.hexdigest()[:12]


@dataclass(frozen=True, eq=False)
class SlotMap:
    """Which ticker holds which of the N_SLOTS slots on `as_of`; treat `table` as read-only.

    `version` is a content hash of the assignment and states: it changes iff some slot changes.
    """

    table: pd.DataFrame
    version: str
    as_of: dt.date | None

    @classmethod
    def empty(cls) -> SlotMap:
        """The map before any universe was seen: every slot is padding."""
        table = _empty_table()
        return cls(table=table, version=_version(table), as_of=None)

    @classmethod
    def from_table(cls, table: pd.DataFrame, as_of: dt.date | None) -> SlotMap:
        """Build and validate a map from its occupied rows (columns TABLE_COLUMNS).

        :param table: one row per active or archived ticker.
        :param as_of: the day the map describes.
        """
        canonical = _canonical(table)
        day = None if as_of is None else _day(as_of).date()
        return cls(table=canonical, version=_version(canonical), as_of=day).validate()

    def state_vector(self) -> np.ndarray:
        """int8[N_SLOTS]: SLOT_ACTIVE, SLOT_ARCHIVE or SLOT_PADDING per slot."""
        out = np.full(N_SLOTS, SLOT_PADDING, dtype=np.int8)
        out[self.table["slot"].to_numpy()] = self.table["state"].to_numpy()
        return out

    def ticker_vector(self) -> np.ndarray:
        """object[N_SLOTS]: the ticker in each slot, "" for padding."""
        out = np.full(N_SLOTS, "", dtype=object)
        out[self.table["slot"].to_numpy()] = self.table["ticker"].to_numpy()
        return out

    def slot_of(self, ticker: str) -> int:
        """The slot of an active or archived ticker.

        :param ticker: canonical ticker symbol.
        :raises KeyError: naming the ticker when it holds no slot.
        """
        hit = self.table.loc[self.table["ticker"] == ticker, "slot"]
        if hit.empty:
            raise KeyError(f"ticker {ticker!r} holds no slot in slot map {self.version} as of {self.as_of}")
        return int(hit.iloc[0])

    def tickers(self, state: int) -> list[str]:
        """Sorted tickers in a state (SLOT_ACTIVE or SLOT_ARCHIVE).

        :param state: slot state code from core.spec.
        """
        return sorted(self.table.loc[self.table["state"] == state, "ticker"])

    def validate(self) -> SlotMap:
        """Check every invariant; raises SlotMapError naming the rule broken. Returns self."""
        t = self.table
        if list(t.columns) != TABLE_COLUMNS:
            raise SlotMapError(f"slot map table columns {list(t.columns)} are not {TABLE_COLUMNS}")
        bad_state = t[~t["state"].isin([SLOT_ACTIVE, SLOT_ARCHIVE])]
        if len(bad_state):
            raise SlotMapError(
                f"rule 'state is active or archived' broken by {describe_tickers(list(bad_state['ticker']))}"
            )
        out_of_range = t[(t["slot"] < 0) | (t["slot"] >= N_SLOTS)]
        if len(out_of_range):
            raise SlotMapError(
                f"rule 'slot in [0, {N_SLOTS})' broken by slots {sorted(out_of_range['slot'])[:10]}"
            )
        dup_slots = t.loc[t["slot"].duplicated(keep=False), "slot"]
        if len(dup_slots):
            raise SlotMapError(
                f"rule 'unique slots' broken: slots {sorted(set(dup_slots))[:10]} hold several tickers"
            )
        dup_tickers = t.loc[t["ticker"].duplicated(keep=False), "ticker"]
        if len(dup_tickers):
            names = describe_tickers(sorted(set(dup_tickers)))
            raise SlotMapError(f"rule 'unique tickers' broken: {names} hold several slots")
        bad_names = [x for x in t["ticker"] if not _is_canonical(x)]
        if bad_names:
            raise SlotMapError(
                f"rule 'canonical ticker' broken by {describe_tickers([repr(x) for x in bad_names])}"
            )
        for state, limit, name in (
            (SLOT_ACTIVE, MAX_ACTIVE, "active"),
            (SLOT_ARCHIVE, N_ARCHIVE, "archived"),
        ):
            count = int((t["state"] == state).sum())
            if count > limit:
                raise SlotMapError(f"rule '{name} slots <= {limit}' broken: {count} {name} tickers")
        self._validate_dates()
        if self.version != _version(t):
            raise SlotMapError(f"rule 'version matches content' broken: {self.version} != {_version(t)}")
        return self

    def _validate_dates(self) -> None:
        t = self.table
        missing = t[t["since"].isna() | t["first_added"].isna()]
        if len(missing):
            raise SlotMapError(f"rule 'dates present' broken by {describe_tickers(list(missing['ticker']))}")
        early = t[t["since"] < t["first_added"]]
        if len(early):
            raise SlotMapError(
                f"rule 'first_added <= since' broken by {describe_tickers(list(early['ticker']))}"
            )
        if self.as_of is None:
            if len(t):
                raise SlotMapError("rule 'a non-empty slot map has an as_of date' broken")
            return
        future = t[t["since"] > pd.Timestamp(self.as_of)]
        if len(future):
            raise SlotMapError(
                f"rule 'since <= as_of ({self.as_of})' broken by {describe_tickers(list(future['ticker']))}"
            )

    def to_frame(self) -> pd.DataFrame:
        """All N_SLOTS rows (padding: ticker "", state SLOT_PADDING, NaT dates) with as_of and version."""
        full = pd.DataFrame({"slot": np.arange(N_SLOTS, dtype=np.int64)})
        full = full.merge(self.table, on="slot", how="left")
        full["ticker"] = full["ticker"].fillna("").astype(object)
        full["state"] = full["state"].fillna(SLOT_PADDING).astype(np.int8)
        full["as_of"] = pd.Timestamp(self.as_of) if self.as_of is not None else pd.NaT
        full["as_of"] = full["as_of"].astype("datetime64[ns]")
        full["version"] = self.version
        return full[FRAME_COLUMNS]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> SlotMap:
        """Load a map written by `to_frame`; checks shape, padding rows and the stored version.

        :param frame: N_SLOTS rows with FRAME_COLUMNS.
        :raises SlotMapError: naming the rule the stored frame breaks.
        """
        missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
        if missing:
            raise SlotMapError(f"stored slot map lacks columns {missing}")
        if len(frame) != N_SLOTS or sorted(frame["slot"]) != list(range(N_SLOTS)):
            raise SlotMapError(
                f"rule 'stored slot map has exactly slots 0..{N_SLOTS - 1}' broken ({len(frame)} rows)"
            )
        padding = frame["state"] == SLOT_PADDING
        bad_pad = frame[padding & (frame["ticker"] != "")]
        if len(bad_pad):
            raise SlotMapError(
                f"rule 'padding slots hold no ticker' broken at slots {list(bad_pad['slot'])[:10]}"
            )
        versions, days = frame["version"].unique(), frame["as_of"].unique()
        if len(versions) != 1 or len(days) != 1:
            raise SlotMapError("rule 'one version and as_of per stored slot map' broken")
        as_of = None if pd.isna(days[0]) else pd.Timestamp(days[0]).date()
        loaded = cls.from_table(frame.loc[~padding, TABLE_COLUMNS], as_of)
        if loaded.version != versions[0]:
            raise SlotMapError(
                f"rule 'version matches content' broken: stored {versions[0]}, content gives {loaded.version}"
            )
        return loaded


def _is_canonical(ticker: object) -> bool:
    try:
        return isinstance(ticker, str) and normalize_ticker(ticker) == ticker
    except InvalidTickerError:
        return False


def _clean_universe(active_tickers: Iterable[str], day: pd.Timestamp) -> set[str]:
    if isinstance(active_tickers, str):
        raise InvalidUniverseError(
            f"universe on {day.date()} is the single string {active_tickers!r}, not tickers"
        )
    spellings: dict[str, list[str]] = defaultdict(list)
    invalid: list[str] = []
    for raw in active_tickers:
        try:
            spellings[normalize_ticker(raw)].append(raw)
        except InvalidTickerError:
            invalid.append(repr(raw))
    if invalid:
        raise InvalidUniverseError(
            f"universe on {day.date()} has invalid tickers: {describe_tickers(invalid)}"
        )
    dups = [
        f"{canon} ({', '.join(map(repr, raws))})"
        for canon, raws in sorted(spellings.items())
        if len(raws) > 1
    ]
    if dups:
        raise InvalidUniverseError(
            f"universe on {day.date()} lists tickers more than once: {describe_tickers(dups)}"
        )
    if len(spellings) > MAX_ACTIVE:
        raise UniverseTooLargeError(
            f"universe on {day.date()} has {len(spellings)} tickers, more than the MAX_ACTIVE={MAX_ACTIVE} "
            "active slots; refusing to truncate it"
        )
    return set(spellings)


def update_slot_map(
    previous: SlotMap | None, active_tickers: Iterable[str], as_of: dt.date | str | pd.Timestamp
) -> SlotMap:
    """The slot map for `as_of`, given yesterday's map and today's constituents.

    Tickers keep their slot while active or archived; leavers are archived in place; archived tickers that
    return become active in the same slot; beyond N_ARCHIVE archived, the oldest-archived (ties by ticker)
    are evicted; new entrants take the lowest free slots in sorted ticker order.

    :param previous: the last map (None or SlotMap.empty() for the first day).
    :param active_tickers: today's constituents (normalised; duplicates or invalid symbols raise).
    :param as_of: the day of the new map; must not be before previous.as_of.
    :raises UniverseTooLargeError: more than MAX_ACTIVE tickers.
    :raises InvalidUniverseError: invalid or duplicated tickers, named in the message.
    """
    day = _day(as_of)
    prev = previous if previous is not None else SlotMap.empty()
    if prev.as_of is not None and day.date() < prev.as_of:
        raise SlotMapError(
            f"rule 'as_of moves forward' broken: update for {day.date()} after map of {prev.as_of}"
        )
    tickers = _clean_universe(active_tickers, day)
    table = prev.table.copy()
    listed = table["ticker"].isin(tickers)
    leaving = (table["state"] == SLOT_ACTIVE) & ~listed
    returning = (table["state"] == SLOT_ARCHIVE) & listed
    table.loc[leaving, "state"] = SLOT_ARCHIVE
    table.loc[returning, "state"] = SLOT_ACTIVE
    table.loc[leaving | returning, "since"] = day
    archived = table[table["state"] == SLOT_ARCHIVE].sort_values(["since", "ticker"], kind="stable")
    excess = len(archived) - N_ARCHIVE
    if excess > 0:
        table = table.drop(index=archived.index[:excess])
    entrants = sorted(tickers - set(table["ticker"]))
    free = np.setdiff1d(np.arange(N_SLOTS), table["slot"].to_numpy())[: len(entrants)]
    new_rows = pd.DataFrame(
        {"slot": free, "ticker": entrants, "state": SLOT_ACTIVE, "since": day, "first_added": day}
    )
    parts = [part for part in (table, new_rows) if len(part)]
    combined = pd.concat(parts, ignore_index=True) if parts else table
    return SlotMap.from_table(combined, day.date())
