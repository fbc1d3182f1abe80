"""Slot-shared policy networks: one small network scores every stock slot from its own row plus a pooled
portfolio context, so the model stays tiny whatever the number of slots and treats all slots alike."""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise
from typing import Any, cast

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from torch.nn import functional as F

from magikarp_assets.core.rl.env import COL_TRADABLE, N_SLOT_COLUMNS
from magikarp_assets.core.spec import N_FEATURES

# One 64-wide embedding layer and a 32-wide head: learned as well as 35->64->64 with head [64] (within the
# seed spread) on a per-slot signal, `python -m benchmarks.bench_policy --learning`, for half the compute.
DEFAULT_EMBED_ARCH = (64,)
DEFAULT_HEAD_ARCH = (32,)
# The layout of a saved network (parameter and buffer names and shapes, given the arch sizes) this code
# loads. Saved into every model (the encoder's kwargs) and checked before a model is loaded; bump it with any
# change that makes older model files unloadable (test_policy pins the layout to it).
POLICY_VERSION = "slot-shared-2"
SLOT_KEYS = {"slots", "portfolio"}
# Slot rows run through the per-slot networks at once: a batch is cut into groups of whole samples so every
# per-slot activation stays a few MB (cache-sized, reused by the allocator instead of fresh pages).
CHUNK_ROWS = 32_768


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


def in_chunks(fn: Callable[..., tuple[th.Tensor, ...]], *batched: th.Tensor) -> tuple[th.Tensor, ...]:
    """Apply ``fn`` to equal groups of whole samples and concatenate each of its outputs along the batch.

    Every sample is processed on its own inside ``fn`` (pooling is per sample), so the result equals
    ``fn(*batched)``; only the size of the intermediate per-slot tensors changes.

    :param fn: maps batch-first tensors [b, S, ...] to a tuple of batch-first tensors.
    :param batched: inputs sharing the batch size B; the first is [B, S, ...].
    """
    n_samples, n_slots = batched[0].shape[:2]
    n_groups = -(-n_samples * n_slots // CHUNK_ROWS)
    if n_groups <= 1:
        return fn(*batched)
    size = -(-n_samples // n_groups)
    outputs = [fn(*group) for group in zip(*(tensor.split(size) for tensor in batched), strict=True)]
    return tuple(th.cat(parts) for parts in zip(*outputs, strict=True))


def block_max(values: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """Max over dim 1 of [B, S, H] and the index of a slot holding it, like ``values.max(dim=1)``.

    ``max`` with indices over the slot dimension runs element by element (about 7x slower than ``amax``),
    so the slots are cut into blocks of the divisor of S nearest below sqrt(S): ``amax`` reads the whole
    tensor once for the block maxima, and ``max`` with indices runs on the [B, S / block, H] block maxima
    and on the winning block's [B, block, H] values only.

    :param values: float [B, S, H].
    :return: max [B, H] and winner index [B, H] (int64, into S).
    """
    n_samples, n_slots, width = values.shape
    block = next(size for size in range(math.isqrt(n_slots), 0, -1) if n_slots % size == 0)
    blocks = values.view(n_samples, n_slots // block, block, width)
    top, winning_block = blocks.amax(dim=2).max(dim=1)
    inside = blocks.gather(1, winning_block.view(n_samples, 1, 1, width).expand(-1, 1, block, -1))
    return top, winning_block * block + inside.squeeze(1).argmax(dim=1)


class ReluMeanMax(th.autograd.Function):
    """The embedding's last ReLU, then the mean and max of the embeddings over the masked-in slots (zeros
    when none is in), as one autograd node.

    Embeddings are >= 0, so zeroing masked-out slots leaves the max over masked-in ones unchanged; the max
    is found per block of slots first (:func:`block_max`). One node, because the embedding's gradient from
    the slot head arrives here: the backward adds the mean's share and the max's gradient (at each winning
    slot; none where the max is 0: a masked-out winner, or an embedding whose ReLU passes no gradient
    anyway) to it in one pass and applies the ReLU's mask, without building a separate [B, S, H] pooling
    gradient and summing the two.
    """

    @staticmethod
    def forward(ctx: Any, pre: th.Tensor, mask: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:  # type: ignore[override]
        """:param pre: float [B * S, H] pre-activations (sample-major); the ReLU is applied in place.
        :param mask: float [B, S], 1 for masked-in slots, else 0.
        :return: embeddings relu(pre) [B * S, H] (``pre`` itself), mean [B, H] and max [B, H]."""
        ctx.set_materialize_grads(False)
        embedded = pre.relu_()
        ctx.mark_dirty(pre)
        count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        kept = embedded.view(*mask.shape, -1) * mask.unsqueeze(-1)
        top, winner = block_max(kept)
        ctx.save_for_backward(embedded, mask / count, winner, top > 0)
        return embedded, kept.sum(dim=1) / count, top

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_embedded: th.Tensor | None, grad_mean: th.Tensor | None, grad_top: th.Tensor | None
    ) -> tuple[th.Tensor, None]:
        embedded, share, winner, positive = ctx.saved_tensors
        shape = (*share.shape, embedded.shape[-1])
        mean_part = None if grad_mean is None else (share.unsqueeze(-1), grad_mean.unsqueeze(1))
        if grad_embedded is None:
            grad = embedded.new_zeros(shape) if mean_part is None else mean_part[0] * mean_part[1]
        else:  # a new tensor: the incoming gradient is not ours to write into
            incoming = grad_embedded.reshape(shape)
            grad = incoming.clone() if mean_part is None else th.addcmul(incoming, *mean_part)
        if grad_top is not None:
            grad.scatter_add_(1, winner.unsqueeze(1), (grad_top * positive).unsqueeze(1))
        grad = grad.view_as(embedded)
        return th.ops.aten.threshold_backward.grad_input(grad, embedded, 0.0, grad_input=grad), None


def slot_inputs(obs: PyTorchObs, observation_space: spaces.Space) -> tuple[th.Tensor, th.Tensor]:
    """SB3-preprocessed "slots" [B, S, 35] and "portfolio" [B, 2] tensors.

    :param obs: observation tensors.
    :param observation_space: the slot Dict space.
    """
    tensors = cast(dict[str, th.Tensor], preprocess_obs(obs, observation_space))
    return tensors["slots"], tensors["portfolio"]


def encoder_of(model: BaseModel) -> SlotSetEncoder:
    """The model's :class:`SlotSetEncoder` features extractor.

    :param model: an SB3 policy or actor built with it.
    """
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
    :param policy_version: the :data:`POLICY_VERSION` the model was saved with (recorded, checked on load).
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
        policy_version: str = POLICY_VERSION,
    ) -> None:
        if not embed_arch:
            raise ValueError("embed_arch breaks the rule: at least one hidden layer")
        embed_dim = int(embed_arch[-1])
        super().__init__(observation_space, features_dim=2 * embed_dim + 2)
        self.embed_dim, self.extra_slot_inputs = embed_dim, extra_slot_inputs
        self.policy_version = policy_version
        widths = [N_SLOT_COLUMNS + extra_slot_inputs, *embed_arch]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(widths))
        mean = np.zeros(N_FEATURES) if feature_mean is None else np.asarray(feature_mean, dtype=np.float64)
        std = np.ones(N_FEATURES) if feature_std is None else np.asarray(feature_std, dtype=np.float64)
        if mean.shape != (N_FEATURES,) or std.shape != (N_FEATURES,) or not (std > 0).all():
            raise ValueError(f"feature_mean/feature_std break the rule: {N_FEATURES} values each, std > 0")
        self.register_buffer("feature_mean", th.as_tensor(mean, dtype=th.float32))
        self.register_buffer("feature_std", th.as_tensor(std, dtype=th.float32))

    def encode(
        self, slots: th.Tensor, portfolio: th.Tensor, extra: th.Tensor | None = None
    ) -> tuple[th.Tensor, th.Tensor]:
        """Per-slot embeddings and the pooled context (run it through :func:`in_chunks` for big batches).

        :param slots: [B, S, 35] slot rows.
        :param portfolio: [B, 2] portfolio vector.
        :param extra: optional [B, S, extra_slot_inputs] appended to each slot row.
        :return: embeddings [B * S, H] (>= 0, sample-major) and context [B, 2H + 2].
        """
        n_samples, n_slots = slots.shape[:2]
        rows = slots if extra is None else th.cat([slots, extra], dim=-1)
        first = cast(nn.Linear, self.layers[0])
        untouched = first.weight.new_zeros(N_SLOT_COLUMNS - N_FEATURES + self.extra_slot_inputs)
        weight = first.weight / th.cat([self.feature_std, untouched + 1.0])
        bias = first.bias - weight @ th.cat([self.feature_mean, untouched])
        hidden = F.linear(rows.reshape(n_samples * n_slots, -1), weight, bias)
        for layer in self.layers[1:]:
            hidden = cast(nn.Linear, layer)(hidden.relu_())
        mask = (slots[..., COL_TRADABLE] > 0.5).to(hidden.dtype)
        embedded, mean, top = cast(tuple[th.Tensor, th.Tensor, th.Tensor], ReluMeanMax.apply(hidden, mask))
        return embedded, th.cat([mean, top, portfolio], dim=1)

    def context(self, slots: th.Tensor, portfolio: th.Tensor, extra: th.Tensor | None = None) -> th.Tensor:
        """Pooled context [B, 2H + 2] only, computed in chunks.

        :param slots: [B, S, 35] slot rows.
        :param portfolio: [B, 2] portfolio vector.
        :param extra: optional [B, S, extra_slot_inputs] appended to each slot row.
        """
        inputs = (slots, portfolio) if extra is None else (slots, portfolio, extra)
        return in_chunks(lambda *group: self.encode(*group)[1:], *inputs)[0]

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:  # type: ignore[override]
        return self.context(observations["slots"], observations["portfolio"])


class SlotScoreHead(nn.Module):
    """One MLP shared by all slots, fed [slot embedding, context]. Its first layer is split: the context
    term W_c·c is computed once per sample and broadcast-added to each slot's W_e·e_i, which equals
    W·[e_i, c] without building the [B, S, H + C] concatenation.

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
        """:param embedded: [B * S, H] from :meth:`SlotSetEncoder.encode`.
        :param context: [B, C].
        :return: [B, S, n_out]."""
        n_samples = context.shape[0]
        # slot_in's bias joins the per-sample context term, so the big per-slot term is a bare product that
        # the context term is added to in place (one pass over [B, S, width] fewer than addmm + add).
        context_term = F.linear(context, self.context_in.weight, self.slot_in.bias).unsqueeze(1)
        slot_term = th.matmul(embedded.view(n_samples, -1, embedded.shape[-1]), self.slot_in.weight.t())
        return self.out(self.hidden(slot_term.add_(context_term)))


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
        encoder, arch = encoder_of(self), cast(list[int], self.net_arch)
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

    def _slot_means_and_context(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        encoder = encoder_of(self)

        def chunk(slots: th.Tensor, portfolio: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
            embedded, context = encoder.encode(slots, portfolio)
            return self.slot_head(embedded, context).squeeze(-1), context

        slot_means, context = in_chunks(chunk, *slot_inputs(obs, self.observation_space))
        return slot_means, context

    def _mean_actions(self, slot_means: th.Tensor, context: th.Tensor) -> th.Tensor:
        return th.cat([slot_means, self.cash_head(context)], dim=1)

    def _distribution(self, slot_means: th.Tensor, context: th.Tensor) -> DiagGaussianDistribution:
        distribution = cast(DiagGaussianDistribution, self.action_dist)
        return distribution.proba_distribution(self._mean_actions(slot_means, context), self.log_std)

    def action_means(self, obs: PyTorchObs) -> th.Tensor:
        """Mean action [B, S + 1] (slot scores then cash score) before clipping to the action bounds.

        :param obs: observation tensors.
        """
        return self._mean_actions(*self._slot_means_and_context(obs))

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        slot_means, context = self._slot_means_and_context(obs)
        distribution = self._distribution(slot_means, context)
        actions = distribution.get_actions(deterministic=deterministic)
        return actions, self.value_head(context), distribution.log_prob(actions)

    def evaluate_actions(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        slot_means, context = self._slot_means_and_context(obs)
        distribution = self._distribution(slot_means, context)
        return (
            self.value_head(context),
            distribution.log_prob(actions),
            cast(th.Tensor, distribution.entropy()),
        )

    def get_distribution(self, obs: PyTorchObs) -> DiagGaussianDistribution:
        return self._distribution(*self._slot_means_and_context(obs))

    def predict_values(self, obs: PyTorchObs) -> th.Tensor:
        return self.value_head(encoder_of(self).context(*slot_inputs(obs, self.observation_space)))
