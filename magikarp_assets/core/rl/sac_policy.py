"""Slot-shared SAC networks: the actor scores every stock slot with one shared head and each critic values
the whole portfolio from per-slot embeddings of (slot row, slot action), so both treat slots alike."""

from __future__ import annotations

from typing import Any, cast

import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import SquashedDiagGaussianDistribution
from stable_baselines3.common.policies import BaseModel, BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN, SACPolicy
from torch import nn

from magikarp_assets.core.rl.policy import (
    DEFAULT_HEAD_ARCH,
    SlotScoreHead,
    SlotSetEncoder,
    check_slot_spaces,
    context_head,
    encoder_of,
    in_chunks,
    slot_inputs,
)


class SlotSharedSACActor(BasePolicy):
    """SAC actor: a shared per-slot head gives each slot's mean and log-std, the context gives cash's;
    squashed Gaussian as in SB3. Arguments are those SB3's ``SACPolicy`` passes to its actor."""

    action_space: spaces.Box

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: SlotSetEncoder,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        use_sde: bool = False,
        log_std_init: float = -3,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        normalize_images: bool = True,
    ) -> None:
        if use_sde:
            raise ValueError("SlotSharedSACActor breaks the rule: gSDE is not supported")
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
            squash_output=True,
        )
        self.net_arch = list(net_arch)
        self.features_dim = features_dim
        self.activation_fn = activation_fn
        self.log_std_init, self.use_expln, self.clip_mean = log_std_init, use_expln, clip_mean
        self.slot_head = SlotScoreHead(
            features_extractor.embed_dim, features_dim, self.net_arch, activation_fn, 2
        )
        self.cash_head = context_head(features_dim, self.net_arch, activation_fn, 2)
        self.action_dist = SquashedDiagGaussianDistribution(
            check_slot_spaces(observation_space, action_space) + 1
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            net_arch=self.net_arch,
            features_dim=self.features_dim,
            activation_fn=self.activation_fn,
            log_std_init=self.log_std_init,
            use_expln=self.use_expln,
            clip_mean=self.clip_mean,
            features_extractor=self.features_extractor,
        )
        return data

    def get_action_dist_params(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, dict[str, th.Tensor]]:
        """Pre-squash mean [B, S + 1], clamped log-std [B, S + 1] and no extra arguments.

        :param obs: observation tensors.
        """
        encoder = encoder_of(self)

        def chunk(slots: th.Tensor, portfolio: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
            embedded, context = encoder.encode(slots, portfolio)
            return self.slot_head(embedded, context), context

        slot_params, context = in_chunks(chunk, *slot_inputs(obs, self.observation_space))
        params = th.cat([slot_params, self.cash_head(context).unsqueeze(1)], dim=1)
        return params[..., 0], th.clamp(params[..., 1], LOG_STD_MIN, LOG_STD_MAX), {}

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        mean_actions, log_std, _ = self.get_action_dist_params(obs)
        return self.action_dist.actions_from_params(mean_actions, log_std, deterministic=deterministic)

    def action_log_prob(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """Sampled squashed action and its log-probability (used by SAC's losses).

        :param obs: observation tensors.
        """
        mean_actions, log_std, _ = self.get_action_dist_params(obs)
        return self.action_dist.log_prob_from_params(mean_actions, log_std)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self(observation, deterministic)


class SlotSharedCritic(BaseModel):
    """SAC twin Q: each Q embeds every slot row plus that slot's action, pools over tradable slots, appends
    the cash action and maps the context to Q(s, a). Arguments are those SB3's ``SACPolicy`` gives critics,
    plus ``encoder_kwargs`` for the per-slot encoders."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        n_critics: int = 2,
        share_features_extractor: bool = False,
        encoder_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(observation_space, action_space, normalize_images=normalize_images)
        self.n_slots = check_slot_spaces(observation_space, action_space)
        self.share_features_extractor = share_features_extractor
        encoders = [
            SlotSetEncoder(
                cast(spaces.Dict, observation_space), extra_slot_inputs=1, **(encoder_kwargs or {})
            )
            for _ in range(n_critics)
        ]
        self.encoders = nn.ModuleList(encoders)
        self.q_networks = nn.ModuleList(
            context_head(encoder.features_dim + 1, list(net_arch), activation_fn, 1) for encoder in encoders
        )

    def forward(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, ...]:
        return tuple(self._q(index, obs, actions) for index in range(len(self.q_networks)))

    def q1_forward(self, obs: PyTorchObs, actions: th.Tensor) -> th.Tensor:
        """Q-value of the first critic only.

        :param obs: observation tensors.
        :param actions: [B, S + 1] squashed actions.
        """
        return self._q(0, obs, actions)

    def _q(self, index: int, obs: PyTorchObs, actions: th.Tensor) -> th.Tensor:
        encoder = cast(SlotSetEncoder, self.encoders[index])
        slots, portfolio = slot_inputs(obs, self.observation_space)
        context = encoder.context(slots, portfolio, actions[:, : self.n_slots, None])
        return self.q_networks[index](th.cat([context, actions[:, self.n_slots :]], dim=1))


class SlotSharedSACPolicy(SACPolicy):
    """SAC policy with :class:`SlotSharedSACActor` and :class:`SlotSharedCritic`.

    ``net_arch`` (list of ints, or dict pi/qf) sets head hidden sizes; ``features_extractor_kwargs``
    configure every :class:`SlotSetEncoder`. The actor and critics never share encoders. Other arguments
    are SB3's ``SACPolicy`` ones.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        features_extractor_class: type[BaseFeaturesExtractor] = SlotSetEncoder,
        share_features_extractor: bool = False,
        **kwargs: Any,
    ) -> None:
        check_slot_spaces(observation_space, action_space)
        if share_features_extractor:
            raise ValueError("SlotSharedSACPolicy breaks the rule share_features_extractor=False")
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=list(DEFAULT_HEAD_ARCH) if net_arch is None else net_arch,
            features_extractor_class=features_extractor_class,
            **kwargs,
        )

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> SlotSharedSACActor:  # type: ignore[override]
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return SlotSharedSACActor(**actor_kwargs).to(self.device)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> SlotSharedCritic:  # type: ignore[override]
        critic_kwargs: dict[str, Any] = {
            **self.critic_kwargs,
            "encoder_kwargs": self.features_extractor_kwargs,
        }
        return SlotSharedCritic(**critic_kwargs).to(self.device)
