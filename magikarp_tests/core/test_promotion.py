import pytest

from magikarp_assets.core.promotion import PromotionError, production_version, promote, read_pointer, rollback
from magikarp_assets.core.registry import ModelRegistry
from magikarp_assets.core.storage import LocalBlobStore


def _register(registry, version, payload):
    return registry.register(
        payload,
        {
            "version": version,
            "algorithm": "ppo",
            "hyper_parameters": {},
            "training_window": {"start": "2016-01-04", "end": "2016-10-31"},
            "feature_spec_hash": "f" * 64,
            "slot_map_version": "sm-x",
            "metrics": {},
        },
    )


@pytest.fixture
def registry(tmp_path):
    reg = ModelRegistry(LocalBlobStore(tmp_path))
    for i, v in enumerate(["v1", "v2", "v3"]):
        _register(reg, v, f"model {i}".encode())
    return reg


def test_no_production_model_says_how_to_get_one(registry):
    with pytest.raises(PromotionError, match=r"candidate_model.*promote_model"):
        production_version(registry)


def test_ungated_version_needs_force_and_forced_promotion_records_who_and_why(registry):
    with pytest.raises(PromotionError, match="not passed the backtest and shadow gates"):
        promote(registry, "v1", approver="ana", note="looks good")
    pointer = promote(registry, "v1", approver="ana", note="demo", force_reason="demo model, not gated")
    assert pointer.version == "v1" and production_version(registry) == "v1"
    event = read_pointer(registry).history[-1]
    assert (event.action, event.by) == ("force_promote", "ana") and "demo model, not gated" in event.note
    assert registry.manifest("v1").status == "production"


def test_gated_promotion_then_rollback_keeps_full_history(registry):
    promote(registry, "v1", approver="ana", note="", force_reason="bootstrap")
    registry.set_status("v2", "awaiting_approval", by="pipeline")
    promote(registry, "v2", approver="bo", note="passed gates")
    assert registry.manifest("v1").status == "retired"
    assert promote(registry, "v2", approver="bo", note="again").history == read_pointer(registry).history
    pointer = rollback(registry, None, by="monitor", note="drawdown 12% > 10%", automatic=True)
    assert pointer.version == "v1"
    assert [e.action for e in pointer.history] == ["force_promote", "promote", "auto_rollback"]
    assert registry.manifest("v2").status == "rolled_back"
    with pytest.raises(PromotionError, match="not among the retained versions"):
        rollback(registry, "v9", by="ana", note="")
