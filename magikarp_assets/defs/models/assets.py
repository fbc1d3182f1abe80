"""Monthly candidate training: a slot-shared policy trained on the rolling window before the backtest."""

import json

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from magikarp_assets.core.rl.env import MarketEpisode
from magikarp_assets.core.rl.training import train_policy
from magikarp_assets.core.windows import model_windows
from magikarp_assets.defs.features.tensor_asset import FEATURE_TENSOR, load_tensor_window
from magikarp_assets.defs.partitions import monthly_partitions

CANDIDATE_MODEL = dg.AssetKey("candidate_model")
OWNER = "team:ml-platform"


class CandidateConfig(dg.Config):
    """How the month's candidate is trained (typed run config, visible in the launchpad)."""

    algorithm: str = Field(default="ppo", description="ppo | a2c | sac")
    total_timesteps: int = Field(
        default=50_000,
        description="environment steps (one step = one session); the default takes about 13 min at 3,600 "
        "slots on 2 cores (docs/benchmarks.md)",
    )
    seed: int = 0
    training_sessions: int = Field(default=252, description="rolling training window, in sessions")
    backtest_months: int = Field(default=2, description="months between the training window and the month")
    learning_rate: float = 3e-4
    gamma: float = 0.99
    n_steps: int = Field(default=256, description="rollout length (PPO/A2C)")
    batch_size: int = Field(default=64, description="minibatch (PPO/SAC)")
    n_epochs: int = Field(default=5, description="epochs per update (PPO)")

    def hyper_parameters(self) -> dict:
        common = {"learning_rate": self.learning_rate, "gamma": self.gamma}
        if self.algorithm == "ppo":
            return {
                **common,
                "n_steps": self.n_steps,
                "batch_size": self.batch_size,
                "n_epochs": self.n_epochs,
            }
        if self.algorithm == "a2c":
            return {**common, "n_steps": self.n_steps}
        if self.algorithm == "sac":
            return {**common, "batch_size": self.batch_size}
        raise ValueError(f"algorithm {self.algorithm!r} is not one of ppo, a2c, sac")


def episode_from_tensors(days: pd.DatetimeIndex, arrays: dict[str, np.ndarray]) -> MarketEpisode:
    return MarketEpisode(
        features=arrays["features"],
        close=arrays["close"],
        tradable=arrays["tradable"],
        slot_state=arrays["slot_state"],
        dates=np.asarray(days.strftime("%Y-%m-%d")),
    )


@dg.asset(
    key=CANDIDATE_MODEL,
    group_name="models",
    kinds={"pytorch"},
    owners=[OWNER],
    partitions_def=monthly_partitions,
    deps=[FEATURE_TENSOR],
    required_resource_keys={"io_manager", "model_registry"},
)
def candidate_model(context: dg.AssetExecutionContext, config: CandidateConfig) -> dg.MaterializeResult:
    """The month's candidate policy: trained on the rolling window of feature tensors that ends before the
    two backtest months, registered with a manifest (hash, feature spec, slot map, window) for the gates."""
    windows = model_windows(context.partition_key, config.training_sessions, config.backtest_months)
    days = windows.training
    context.log.info(
        f"training {config.algorithm} on {days[0].date()}..{days[-1].date()} ({len(days)} sessions)"
    )
    arrays = load_tensor_window(context.resources.io_manager, days)
    result = train_policy(
        episode_from_tensors(days, arrays),
        config.algorithm,
        config.total_timesteps,
        config.seed,
        config.hyper_parameters(),
        log=context.log.info,
    )
    curve = [float(r) for r in result.episode_reward_curve]
    registry = context.resources.model_registry.registry()
    manifest = registry.register(
        result.model_bytes,
        {
            "algorithm": config.algorithm,
            "hyper_parameters": {
                **config.hyper_parameters(),
                "total_timesteps": config.total_timesteps,
                "seed": config.seed,
            },
            "training_window": {"start": str(days[0].date()), "end": str(days[-1].date())},
            "feature_spec_hash": str(arrays["feature_spec_hash"]),
            "slot_map_version": str(arrays["slot_map_version"]),
            "metrics": {
                "wall_seconds": result.wall_seconds,
                "n_parameters": float(result.n_parameters),
                "episodes": float(len(curve)),
                "final_episode_reward": curve[-1] if curve else float("nan"),
                "mean_episode_reward": float(np.mean(curve)) if curve else float("nan"),
            },
        },
        by="candidate_model",
        note=f"month {context.partition_key}",
    )
    return dg.MaterializeResult(
        metadata={
            "version": manifest.version,
            "algorithm": config.algorithm,
            "timesteps": result.timesteps,
            "wall_seconds": result.wall_seconds,
            "model_bytes": manifest.size_bytes,
            "n_parameters": result.n_parameters,
            "episodes": len(curve),
            "final_episode_reward": curve[-1] if curve else float("nan"),
            "episode_reward_curve": dg.MetadataValue.json(curve),
            "training_window": f"{days[0].date()}..{days[-1].date()}",
            "backtest_window": f"{windows.backtest[0].date()}..{windows.backtest[-1].date()}",
            "sha256": manifest.sha256,
            "config": dg.MetadataValue.json(json.loads(config.model_dump_json())),
        }
    )
