"""Slot-shared policy networks: one small network scores every stock slot from its own row plus a pooled
portfolio context, so the model stays tiny whatever the number of slots and treats all slots alike."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import DiagGaussianDistribution, SquashedDiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel, BasePolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN, SACPolicy
from torch import nn

from magikarp_assets.core.rl.env import COL_TRADABLE, N_SLOT_COLUMNS
from magikarp_assets.core.spec import N_FEATURES

DEFAULT_EMBED_ARCH = (64, 64)
DEFAULT_HEAD_ARCH = (64,)
SLOT_KEYS = {"slots", "portfolio"}


def check_slot_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> int:
    """Check the spaces follow the slot contract and return the number of slots S.

    :param observation_space: Dict with "slots" Box (S, 35) and "portfolio" Box (2,).
    :param action_space: Box (S + 1,): S slot scores then the cash score.
    :return: S.
    """
    if not isinstance(observation_space, spaces.Dict) or set(observation_space.spaces) != SLOT_KEYS:
        raise ValueError(f"observation space {observation_space} breaks the rule Dict(slots, portfolio)")
    slots, portfolio = observation_space["slots"].shape or (), observation_space["portfolio"].shape
    if len(slots) != 2 or slots[1] != N_SLOT_COLUMNS:
        raise ValueError(f"'slots' shape {slots} breaks the rule (S, {N_SLOT_COLUMNS})")
    if portfolio != (2,):
        raise ValueError(f"'portfolio' shape {portfolio} breaks the rule (2,)")
    n_slots = int(slots[0])
    if not isinstance(action_space, spaces.Box) or action_space.shape != (n_slots + 1,):
        raise ValueError(f"action space {action_space} breaks the rule Box(shape=({n_slots + 1},))")
    return n_slots


def mlp(in_dim: int, arch: list[int] | tuple[int, ...], activation_fn: type[nn.Module]) -> nn.Sequential:
    """Linear + activation per hidden size, no output layer.

    :param in_dim: input width.
    :param arch: hidden sizes.
    :param activation_fn: activation class placed after every Linear.
    """
    layers: list[nn.Module] = []
    for width in arch:
        layers += [nn.Linear(in_dim, width), activation_fn()]
        in_dim = width
    return nn.Sequential(*layers)


def masked_pool(embedded: th.Tensor, mask: th.Tensor) -> th.Tensor:
    """Mean and max of non-negative slot embeddings over the masked-in slots (zeros when none is in).

    Embeddings are >= 0 (ReLU), so zeroing masked-out slots leaves the max over masked-in slots unchanged.

    :param embedded: float [B, S, H], >= 0.
    :param mask: bool [B, S].
    :return: float [B, 2H].
    """
    weight = mask.unsqueeze(-1).to(embedded.dtype)
    kept = embedded * weight
    return th.cat([kept.sum(dim=1) / weight.sum(dim=1).clamp(min=1.0), kept.amax(dim=1)], dim=1)


def _preprocess(obs: PyTorchObs, observation_space: spaces.Space) -> dict[str, th.Tensor]:
    return cast(dict[str, th.Tensor], preprocess_obs(obs, observation_space))


def _encoder(model: BaseModel) -> SlotSetEncoder:
    if not isinstance(model.features_extractor, SlotSetEncoder):
        raise TypeError(f"{type(model).__name__} needs a SlotSetEncoder, got {model.features_extractor!r}")
    return model.features_extractor


class SlotSetEncoder(BaseFeaturesExtractor):
    """Embeds every slot row with one shared ReLU MLP and pools the embeddings over tradable slots.

    As an SB3 features extractor its output is the context: [masked mean, masked max, portfolio vector].
    Feature normalisation is folded into the first layer's weights, so the large input is never rescaled.

    :param observation_space: the slot Dict space.
    :param embed_arch: hidden sizes of the per-slot MLP; the last one is the embedding width H.
    :param feature_mean: per-feature mean (N_FEATURES) subtracted from columns 0..31, fitted on training data.
    :param feature_std: per-feature scale (N_FEATURES) dividing columns 0..31.
    :param extra_slot_inputs: extra per-slot inputs appended to each row (1 for a critic's action).
    """

    feature_mean: th.Tensor
    feature_std: th.Tensor

    def __init__(
        self,
        observation_space: spaces.Dict,
        embed_arch: list[int] | tuple[int, ...] = DEFAULT_EMBED_ARCH,
        feature_mean: list[float] | None = None,
        feature_std: list[float] | None = None,
        extra_slot_inputs: int = 0,
    ) -> None:
        if not embed_arch:
            raise ValueError("embed_arch breaks the rule: at least one hidden layer")
        embed_dim = int(embed_arch[-1])
        super().__init__(observation_space, features_dim=2 * embed_dim + 2)
        self.embed_dim, self.extra_slot_inputs = embed_dim, extra_slot_inputs
        self.embed_in = nn.Linear(N_SLOT_COLUMNS + extra_slot_inputs, embed_arch[0])
        self.embed_rest = nn.Sequential(nn.ReLU(), mlp(embed_arch[0], embed_arch[1:], nn.ReLU))
        mean = np.zeros(N_FEATURES) if feature_mean is None else np.asarray(feature_mean, dtype=np.float64)
        std = np.ones(N_FEATURES) if feature_std is None else np.asarray(feature_std, dtype=np.float64)
        if mean.shape != (N_FEATURES,) or std.shape != (N_FEATURES,) or not (std > 0).all():
            raise ValueError(f"feature_mean/feature_std break the rule: {N_FEATURES} values each, std > 0")
        self.register_buffer("feature_mean", th.as_tensor(mean, dtype=th.float32))
        self.register_buffer("feature_std", th.as_tensor(std, dtype=th.float32))

    def encode(
        self, obs: dict[str, th.Tensor], extra: th.Tensor | None = None
    ) -> tuple[th.Tensor, th.Tensor]:
        """Per-slot embeddings and the pooled context.

        :param obs: preprocessed observation, "slots" [B, S, 35] and "portfolio" [B, 2].
        :param extra: optional [B, S, extra_slot_inputs] appended to each slot row.
        :return: embeddings [B, S, H] (>= 0) and context [B, 2H + 2].
        """
        slots = obs["slots"]
        rows = slots if extra is None else th.cat([slots, extra], dim=-1)
        untouched = th.zeros(N_SLOT_COLUMNS - N_FEATURES + self.extra_slot_inputs, device=slots.device)
        weight = self.embed_in.weight / th.cat([self.feature_std, untouched + 1.0])
        bias = self.embed_in.bias - weight @ th.cat([self.feature_mean, untouched])
        embedded = self.embed_rest(nn.functional.linear(rows, weight, bias))
        context = th.cat([masked_pool(embedded, slots[..., COL_TRADABLE] > 0.5), obs["portfolio"]], dim=1)
        return embedded, context

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:  # type: ignore[override]
        return self.encode(observations)[1]


class SlotScoreHead(nn.Module):
    """One MLP shared by all slots, fed [slot embedding, context]; the context term is computed once.

    :param embed_dim: slot embedding width.
    :param context_dim: context width.
    :param arch: hidden sizes (at least one).
    :param activation_fn: activation class.
    :param n_out: outputs per slot.
    """

    def __init__(
        self,
        embed_dim: int,
        context_dim: int,
        arch: list[int],
        activation_fn: type[nn.Module],
        n_out: int,
    ) -> None:
        super().__init__()
        if not arch:
            raise ValueError("net_arch breaks the rule: the slot head needs at least one hidden layer")
        self.slot_in = nn.Linear(embed_dim, arch[0])
        self.context_in = nn.Linear(context_dim, arch[0], bias=False)
        self.hidden = nn.Sequential(activation_fn(), mlp(arch[0], arch[1:], activation_fn))
        self.out = nn.Linear(arch[-1], n_out)

    def forward(self, embedded: th.Tensor, context: th.Tensor) -> th.Tensor:
        """:return: [B, S, n_out]."""
        return self.out(self.hidden(self.slot_in(embedded) + self.context_in(context).unsqueeze(1)))


def context_head(
    context_dim: int, arch: list[int], activation_fn: type[nn.Module], n_out: int
) -> nn.Sequential:
    """MLP from the pooled context to ``n_out`` numbers (cash score, value, Q)."""
    return nn.Sequential(
        mlp(context_dim, arch, activation_fn), nn.Linear(arch[-1] if arch else context_dim, n_out)
    )


class SlotSharedActorCriticPolicy(ActorCriticPolicy):
    """PPO/A2C policy: per-slot mean actions from a shared head, cash score and value from the context.

    One log-std scalar is shared by all action dimensions, so permuting slots permutes the whole sampling
    distribution. ``net_arch`` (list of ints) sets the hidden sizes of the slot, cash and value heads;
    ``features_extractor_kwargs`` configure :class:`SlotSetEncoder`. Other arguments are SB3's.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = SlotSetEncoder,
        **kwargs: Any,
    ) -> None:
        check_slot_spaces(observation_space, action_space)
        if (
            kwargs.get("use_sde")
            or kwargs.get("squash_output")
            or not kwargs.get("share_features_extractor", True)
        ):
            raise ValueError(
                "SlotSharedActorCriticPolicy breaks the rule: no gSDE, no squashing, shared encoder"
            )
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=list(DEFAULT_HEAD_ARCH) if net_arch is None else list(net_arch),
            activation_fn=activation_fn,
            features_extractor_class=features_extractor_class,
            **{key: value for key, value in kwargs.items() if key not in ("use_sde", "squash_output")},
        )

    def _build(self, lr_schedule: Schedule) -> None:
        encoder, arch = _encoder(self), cast(list[int], self.net_arch)
        self.slot_head = SlotScoreHead(encoder.embed_dim, encoder.features_dim, arch, self.activation_fn, 1)
        self.cash_head = context_head(encoder.features_dim, arch, self.activation_fn, 1)
        self.value_head = context_head(encoder.features_dim, arch, self.activation_fn, 1)
        self.log_std = nn.Parameter(th.full((1,), float(self.log_std_init)))
        if self.ortho_init:
            self.apply(lambda module: self.init_weights(module, gain=np.sqrt(2)))
            for layer, gain in (
                (self.slot_head.out, 0.01),
                (self.cash_head[-1], 0.01),
                (self.value_head[-1], 1),
            ):
                self.init_weights(layer, gain=gain)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _encode(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        return _encoder(self).encode(_preprocess(obs, self.observation_space))

    def _mean_actions(self, embedded: th.Tensor, context: th.Tensor) -> th.Tensor:
        return th.cat([self.slot_head(embedded, context).squeeze(-1), self.cash_head(context)], dim=1)

    def action_means(self, obs: PyTorchObs) -> th.Tensor:
        """Mean action [B, S + 1] (slot scores then cash score) before clipping to the action bounds.

        :param obs: observation tensors.
        """
        return self._mean_actions(*self._encode(obs))

    def _distribution(self, embedded: th.Tensor, context: th.Tensor) -> DiagGaussianDistribution:
        distribution = cast(DiagGaussianDistribution, self.action_dist)
        return distribution.proba_distribution(self._mean_actions(embedded, context), self.log_std)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        embedded, context = self._encode(obs)
        distribution = self._distribution(embedded, context)
        actions = distribution.get_actions(deterministic=deterministic)
        return actions, self.value_head(context), distribution.log_prob(actions)

    def evaluate_actions(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        embedded, context = self._encode(obs)
        distribution = self._distribution(embedded, context)
        return (
            self.value_head(context),
            distribution.log_prob(actions),
            cast(th.Tensor, distribution.entropy()),
        )

    def get_distribution(self, obs: PyTorchObs) -> DiagGaussianDistribution:
        return self._distribution(*self._encode(obs))

    def predict_values(self, obs: PyTorchObs) -> th.Tensor:
        return self.value_head(self._encode(obs)[1])


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
        embedded, context = _encoder(self).encode(_preprocess(obs, self.observation_space))
        params = th.cat([self.slot_head(embedded, context), self.cash_head(context).unsqueeze(1)], dim=1)
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
        _, context = encoder.encode(
            _preprocess(obs, self.observation_space), actions[:, : self.n_slots, None]
        )
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
