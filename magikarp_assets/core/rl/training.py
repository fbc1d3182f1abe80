"""Train a slot-shared portfolio policy on one market episode with PPO, A2C or SAC, reproducibly from a seed,
and turn a saved model back into daily slot scores."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch as th
from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.save_util import json_to_data
from stable_baselines3.common.utils import set_random_seed

from magikarp_assets.core.registry import RegistryError
from magikarp_assets.core.rl.env import MarketEpisode, PortfolioEnv
from magikarp_assets.core.rl.policy import (
    DEFAULT_EMBED_ARCH,
    DEFAULT_HEAD_ARCH,
    POLICY_VERSION,
    SlotSharedActorCriticPolicy,
)
from magikarp_assets.core.rl.sac_policy import SlotSharedSACPolicy

Algorithm = Literal["ppo", "a2c", "sac"]

ALGORITHMS: dict[str, tuple[type[BaseAlgorithm], type]] = {
    "ppo": (PPO, SlotSharedActorCriticPolicy),
    "a2c": (A2C, SlotSharedActorCriticPolicy),
    "sac": (SAC, SlotSharedSACPolicy),
}

# SB3 constructor defaults we change. SAC's replay buffer keeps every observation twice (obs and next obs):
# memory = buffer_size * 2 * S * 35 * 4 bytes, i.e. about 1 GB for 1,000 transitions at S = 3,600.
DEFAULT_HYPER_PARAMETERS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 256, "batch_size": 64, "n_epochs": 5},
    "a2c": {"n_steps": 16},
    "sac": {"buffer_size": 1_000, "batch_size": 64, "learning_starts": 100},
}

# Keys of ``hyper_parameters`` handled here rather than passed to the SB3 constructor.
TRAINING_KEYS = ("env_kwargs", "normalize_features", "n_threads")

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainingResult:
    """A trained model and how its training went.

    :param model_bytes: the SB3 model saved as a .zip (load with :func:`load_policy`).
    :param algorithm: "ppo", "a2c" or "sac".
    :param episode_reward_curve: total reward of each completed episode, in order (weights mode: the
        episode's log growth of portfolio value).
    :param timesteps: environment steps actually taken.
    :param wall_seconds: wall-clock duration of training.
    :param n_parameters: trainable parameters (SAC's target critic copy not counted).
    :param normalisation: per-feature "feature_mean" and "feature_std" fitted on the training episode and
        stored inside the model, or None when feature normalisation is off.
    """

    model_bytes: bytes
    algorithm: str
    episode_reward_curve: list[float]
    timesteps: int
    wall_seconds: float
    n_parameters: int
    normalisation: dict[str, list[float]] | None


class _EpisodeRewardCallback(BaseCallback):
    """Collects each finished episode's total reward and reports progress through ``log``."""

    def __init__(self, log: Log | None) -> None:
        super().__init__()
        self._log = log
        self._running = 0.0
        self.curve: list[float] = []

    def _on_training_start(self) -> None:
        self._say(f"training {type(self.model).__name__} for {self.locals['total_timesteps']} timesteps")

    def _on_step(self) -> bool:
        self._running += float(self.locals["rewards"][0])
        if self.locals["dones"][0]:
            self.curve.append(self._running)
            self._say(
                f"episode {len(self.curve)} reward {self._running:.6f} after {self.num_timesteps} timesteps"
            )
            self._running = 0.0
        return True

    def _say(self, message: str) -> None:
        if self._log is not None:
            self._log(message)


def feature_normalisation(episode: MarketEpisode) -> dict[str, list[float]]:
    """Per-feature mean and standard deviation over the episode's tradable cells (std 1 where constant).

    :param episode: the training episode; its statistics are frozen into the model.
    :return: {"feature_mean": [N_FEATURES], "feature_std": [N_FEATURES]}.
    """
    cells = episode.features[episode.tradable].astype(np.float64)
    if cells.shape[0] == 0:
        raise ValueError(
            f"episode {episode.dates[0].date()}..{episode.dates[-1].date()} has no tradable cell to fit "
            "feature normalisation on"
        )
    std = cells.std(axis=0)
    return {
        "feature_mean": cells.mean(axis=0).tolist(),
        "feature_std": np.where(std > 1e-8, std, 1.0).tolist(),
    }


@contextmanager
def _deterministic_torch(seed: int, n_threads: int | None) -> Iterator[None]:
    previous_threads, previous_deterministic = th.get_num_threads(), th.are_deterministic_algorithms_enabled()
    set_random_seed(seed)
    th.use_deterministic_algorithms(True)
    if n_threads is not None:
        th.set_num_threads(n_threads)
    try:
        yield
    finally:
        th.set_num_threads(previous_threads)
        th.use_deterministic_algorithms(previous_deterministic)


def _algorithm_class(algorithm: str) -> type[BaseAlgorithm]:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm={algorithm!r} breaks the rule algorithm in {sorted(ALGORITHMS)}")
    return ALGORITHMS[algorithm][0]


def count_parameters(model: BaseAlgorithm) -> int:
    """Trainable parameters of a model's policy, not counting SAC's target critic.

    :param model: an SB3 model.
    """
    return sum(
        p.numel() for name, p in model.policy.named_parameters() if not name.startswith("critic_target.")
    )


def train_policy(
    episode: MarketEpisode,
    algorithm: Algorithm,
    total_timesteps: int,
    seed: int,
    hyper_parameters: dict[str, Any],
    log: Log | None = None,
) -> TrainingResult:
    """Train a slot-shared policy in weights mode on one episode, on the CPU, deterministically from ``seed``.

    ``hyper_parameters`` holds SB3 constructor arguments (over :data:`DEFAULT_HYPER_PARAMETERS`; its
    "policy_kwargs" reach the policy, with "net_arch" and the encoder's "embed_arch" filled in from the
    policy defaults and stored in the model) plus "env_kwargs" (for :class:`PortfolioEnv`, mode is always
    "weights"), "normalize_features" (default True) and "n_threads" (torch threads, default 1).

    :param episode: training data; it must end before any day the model will be used on.
    :param algorithm: "ppo", "a2c" or "sac".
    :param total_timesteps: environment steps to train for (PPO/A2C round up to whole rollouts).
    :param seed: seeds python, numpy, torch and the environment.
    :param hyper_parameters: see above.
    :param log: receives progress messages (one per finished episode).
    :return: the saved model and its training record.
    """
    algorithm_class = _algorithm_class(algorithm)
    if total_timesteps <= 0:
        raise ValueError(f"total_timesteps={total_timesteps} breaks the rule total_timesteps > 0")
    settings = {**DEFAULT_HYPER_PARAMETERS[algorithm], **hyper_parameters}
    env_kwargs = dict(settings.pop("env_kwargs", {}))
    if env_kwargs.pop("mode", "weights") != "weights":
        raise ValueError("env_kwargs['mode'] breaks the rule: training uses mode='weights'")
    normalisation = feature_normalisation(episode) if settings.pop("normalize_features", True) else None
    n_threads = settings.pop("n_threads", 1)
    # The architecture is written into the saved model, so it loads whatever the defaults become later.
    policy_kwargs = {"net_arch": list(DEFAULT_HEAD_ARCH), **settings.pop("policy_kwargs", {})}
    policy_kwargs["features_extractor_kwargs"] = {
        "embed_arch": list(DEFAULT_EMBED_ARCH),
        **policy_kwargs.get("features_extractor_kwargs", {}),
        **(normalisation or {}),
        "policy_version": POLICY_VERSION,
    }
    for reserved in ("policy", "env", "seed", "device"):
        if reserved in settings:
            raise ValueError(f"hyper_parameters[{reserved!r}] breaks the rule: it is set by train_policy")

    started = time.perf_counter()
    with _deterministic_torch(seed, n_threads):
        model = algorithm_class(
            ALGORITHMS[algorithm][1],
            PortfolioEnv(episode, mode="weights", **env_kwargs),
            seed=seed,
            device="cpu",
            policy_kwargs=policy_kwargs,
            **settings,
        )
        callback = _EpisodeRewardCallback(log)
        model.learn(total_timesteps=total_timesteps, callback=callback)
    wall_seconds = time.perf_counter() - started
    buffer = io.BytesIO()
    model.save(
        buffer, exclude=["_last_obs", "_last_original_obs"]
    )  # the last training day is not model state
    if log is not None:
        log(f"trained {model.num_timesteps} timesteps in {wall_seconds:.1f} s")
    return TrainingResult(
        model_bytes=buffer.getvalue(),
        algorithm=algorithm,
        episode_reward_curve=callback.curve,
        timesteps=int(model.num_timesteps),
        wall_seconds=wall_seconds,
        n_parameters=count_parameters(model),
        normalisation=normalisation,
    )


class _ServingOptimizer:
    """Stands in for the training optimizer of a model loaded to serve: building a torch optimizer imports
    torch._dynamo, seconds of a fresh run process spent on something inference never uses. Accepts (and
    drops) the optimizer state stored in the model file."""

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self.param_groups: list[dict[str, Any]] = []

    def load_state_dict(self, state: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        """Ignore the stored optimizer state: serving never takes a gradient step."""

    def state_dict(self) -> dict[str, Any]:
        return {}


class PolicyVersionError(RegistryError):
    """The model was saved by another version of the policy network than this code loads."""


def load_policy(model_bytes: bytes, algorithm: Algorithm) -> BaseAlgorithm:
    """Load a model saved by :func:`train_policy` onto the CPU for inference only: no optimizer is built
    (see :class:`_ServingOptimizer`) and SAC gets a 1-transition replay buffer instead of the training one.
    Do not train the returned model further.

    :param model_bytes: :attr:`TrainingResult.model_bytes`.
    :param algorithm: the algorithm it was trained with.
    :raises PolicyVersionError: the model records another :data:`POLICY_VERSION` (or none).
    """
    with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
        data = json_to_data(archive.read("data").decode())
    saved = (data.get("policy_kwargs") or {}).get("features_extractor_kwargs", {}).get("policy_version")
    if saved != POLICY_VERSION:
        raise PolicyVersionError(
            f"model saved by policy network version {saved or 'unrecorded (saved before versions were kept)'}"
            f", but this code loads version {POLICY_VERSION}: retrain it, or serve a model of this version"
        )
    policy_kwargs = {**(data.get("policy_kwargs") or {}), "optimizer_class": _ServingOptimizer}
    custom_objects: dict[str, Any] = {"policy_kwargs": policy_kwargs}
    if algorithm == "sac":
        custom_objects["buffer_size"] = 1
    return _algorithm_class(algorithm).load(
        io.BytesIO(model_bytes), device="cpu", custom_objects=custom_objects
    )


def predict_weights(model: BaseAlgorithm, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """Deterministic scores for one day; :func:`~magikarp_assets.core.rl.accounting.target_weights` (as the
    env does) turns them into weights.

    :param model: a loaded model.
    :param obs: one observation of :class:`PortfolioEnv` ("slots" [S, 35], "portfolio" [2]).
    :return: slot scores float64 [S] in [-1, 1] and the cash score.
    """
    n_actions = model.action_space.shape[0]  # type: ignore[index]
    if np.shape(obs["slots"])[:1] != (n_actions - 1,):
        raise ValueError(f"obs['slots'] shape {np.shape(obs['slots'])} breaks the rule ({n_actions - 1}, 35)")
    action, _ = model.predict(obs, deterministic=True)
    action = np.asarray(action, dtype=np.float64)
    return action[:-1], float(action[-1])
