"""Serving a trained policy on one day: the observation the environment would show it, and the target
weights the environment would trade to, so live recommendations match what the policy learned on."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm

from magikarp_assets.core.rl.accounting import target_weights
from magikarp_assets.core.rl.env import COL_SELLABLE, COL_TRADABLE, COL_WEIGHT, N_SLOT_COLUMNS
from magikarp_assets.core.rl.training import predict_weights
from magikarp_assets.core.spec import N_FEATURES


def _slot_vector(name: str, values: np.ndarray, n_slots: int) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (n_slots,):
        raise ValueError(f"{name} has shape {values.shape}; the rule is ({n_slots},), one entry per slot")
    return values


def build_observation(
    features: np.ndarray,
    tradable: np.ndarray,
    sellable: np.ndarray,
    slot_weights: np.ndarray,
    cash_weight: float,
) -> dict[str, np.ndarray]:
    """The observation :class:`~magikarp_assets.core.rl.env.PortfolioEnv` shows the policy for a day and a
    book, laid out exactly as the environment does.

    :param features: float [S, N_FEATURES] the day's features, finite.
    :param tradable: bool [S] slots that may be bought today (active and priced).
    :param sellable: bool [S] slots held and priced today.
    :param slot_weights: float [S] value held per slot at the last known close over portfolio value.
    :param cash_weight: cash over portfolio value (clipped to [0, 1], as the environment does).
    :return: {"slots": float32 [S, N_FEATURES + 3], "portfolio": float32 [2] (cash weight, share of slots
        tradable)}.
    """
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[1] != N_FEATURES:
        raise ValueError(f"features has shape {features.shape}; the rule is (S, {N_FEATURES})")
    if not np.isfinite(features).all():
        slot = int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0])
        raise ValueError(f"features break the rule 'finite' at slot {slot}")
    n_slots = features.shape[0]
    tradable = _slot_vector("tradable", tradable, n_slots).astype(bool)
    sellable = _slot_vector("sellable", sellable, n_slots).astype(bool)
    slot_weights = _slot_vector("slot_weights", slot_weights, n_slots)
    if not np.isfinite(cash_weight):
        raise ValueError(f"cash_weight={cash_weight!r} breaks the rule 'finite'")
    slots = np.zeros((n_slots, N_SLOT_COLUMNS), dtype=np.float32)
    slots[:, :N_FEATURES] = features
    slots[:, COL_TRADABLE] = tradable
    slots[:, COL_SELLABLE] = sellable
    slots[:, COL_WEIGHT] = slot_weights
    cash_share = min(max(float(cash_weight), 0.0), 1.0)
    portfolio = np.array([cash_share, tradable.mean() if n_slots else 0.0], np.float32)
    return {"slots": slots, "portfolio": portfolio}


def infer_target_weights(
    model: BaseAlgorithm,
    obs: dict[str, np.ndarray],
    tradable: np.ndarray,
    sellable_cap: np.ndarray,
    frozen_weight: np.ndarray | None = None,
    temperature: float = 1.0,
) -> np.ndarray:
    """The target weights the environment would trade to after this observation: the policy's
    deterministic scores, clipped to [-1, 1] like an environment action, through
    :func:`~magikarp_assets.core.rl.accounting.target_weights`.

    :param model: a policy loaded with :func:`~magikarp_assets.core.rl.training.load_policy`.
    :param obs: the day's observation from :func:`build_observation`.
    :param tradable: bool [S] slots that may be bought today.
    :param sellable_cap: float [S] current weight of held, priced, non-buyable slots (archived names), 0
        elsewhere: they may only shrink.
    :param frozen_weight: float [S] current weight of held slots with no price today (they keep it), or
        None when there are none.
    :param temperature: the softmax temperature the model was trained with (the environment's).
    :return: float64 [S + 1] target weights, slots then cash, summing to 1.
    """
    scores, cash_score = predict_weights(model, obs)
    n_slots = scores.shape[0]
    tradable = _slot_vector("tradable", tradable, n_slots).astype(bool)
    cap = _slot_vector("sellable_cap", sellable_cap, n_slots)
    if frozen_weight is not None:
        frozen_weight = _slot_vector("frozen_weight", frozen_weight, n_slots)
    return target_weights(
        np.clip(scores, -1.0, 1.0),
        float(np.clip(cash_score, -1.0, 1.0)),
        tradable,
        cap,
        frozen_weight,
        temperature,
    )
