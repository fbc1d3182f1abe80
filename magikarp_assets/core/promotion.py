"""The production pointer: which registered model version serves recommendations, with an audited
history of every promotion and rollback (stored beside the models as `models/production.json`)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field

from magikarp_assets.core.registry import ModelNotFoundError, ModelRegistry

POINTER_KEY = "models/production.json"
# Statuses a version must have reached before it may be promoted without force.
GATES_PASSED = "awaiting_approval"


class PromotionError(ValueError):
    """A promotion or rollback that the rules refuse; the message says which rule."""


@dataclass(frozen=True)
class PointerEvent:
    action: str  # promote | force_promote | rollback | auto_rollback
    version: str
    previous: str | None
    by: str
    note: str
    at: str


@dataclass(frozen=True)
class ProductionPointer:
    version: str | None = None
    history: tuple[PointerEvent, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "history": [asdict(e) for e in self.history]}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ProductionPointer:
        raw = json.loads(text)
        return cls(raw["version"], tuple(PointerEvent(**e) for e in raw["history"]))


def read_pointer(registry: ModelRegistry) -> ProductionPointer:
    store = registry.store
    return (
        ProductionPointer.from_json(store.get_bytes(POINTER_KEY).decode())
        if store.exists(POINTER_KEY)
        else ProductionPointer()
    )


def production_version(registry: ModelRegistry) -> str:
    """The serving version; a clear error saying how to get one when there is none."""
    version = read_pointer(registry).version
    if version is None:
        raise PromotionError(
            "no production model: train one (materialise candidate_model for a month), let it pass the "
            "backtest and shadow gates, then run the promote_model job with its version and your name as "
            "approver"
        )
    return version


def _write(registry: ModelRegistry, pointer: ProductionPointer) -> ProductionPointer:
    registry.store.put_bytes(POINTER_KEY, pointer.to_json().encode())  # one atomic write
    return pointer


def promote(
    registry: ModelRegistry, version: str, approver: str, note: str, force_reason: str | None = None
) -> ProductionPointer:
    """Make `version` the production model. Only versions that passed both gates are accepted, unless
    `force_reason` is given: then the promotion is recorded as forced, with who and why.
    """
    if not approver.strip():
        raise PromotionError("a promotion needs the approver's name")
    try:
        manifest = registry.manifest(version)
    except ModelNotFoundError as exc:
        raise PromotionError(f"cannot promote {version}: not in the registry") from exc
    pointer = read_pointer(registry)
    if pointer.version == version:
        return pointer  # re-running the same approval changes nothing
    forced = manifest.status != GATES_PASSED
    if forced and not (force_reason and force_reason.strip()):
        raise PromotionError(
            f"cannot promote {version}: its status is {manifest.status!r}, not {GATES_PASSED!r} (it has not "
            "passed the backtest and shadow gates); promote with force and a reason to override"
        )
    note = f"FORCED: {force_reason}. {note}".strip() if forced else note
    event = PointerEvent(
        "force_promote" if forced else "promote", version, pointer.version, approver, note, _now()
    )
    registry.set_status(version, "production", by=approver, note=note)
    if pointer.version is not None:
        registry.set_status(pointer.version, "retired", by=approver, note=f"replaced by {version}")
    return _write(registry, ProductionPointer(version, (*pointer.history, event)))


def rollback(
    registry: ModelRegistry, to_version: str | None, by: str, note: str, automatic: bool = False
) -> ProductionPointer:
    """Serve an earlier version again: `to_version`, or the previous production version when None."""
    pointer = read_pointer(registry)
    if pointer.version is None:
        raise PromotionError("cannot roll back: there is no production model")
    if to_version is None:
        earlier = [e.version for e in pointer.history if e.version != pointer.version]
        if not earlier:
            raise PromotionError(f"cannot roll back from {pointer.version}: no earlier production version")
        to_version = earlier[-1]
    if to_version not in registry.versions():
        raise PromotionError(f"cannot roll back to {to_version}: not among the retained versions")
    action = "auto_rollback" if automatic else "rollback"
    event = PointerEvent(action, to_version, pointer.version, by, note, _now())
    registry.set_status(pointer.version, "rolled_back", by=by, note=note)
    registry.set_status(to_version, "production", by=by, note=f"{action}: {note}")
    return _write(registry, ProductionPointer(to_version, (*pointer.history, event)))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
