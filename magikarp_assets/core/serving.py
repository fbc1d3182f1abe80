"""Which model serves a session: the production version when its artifact is intact, else the previous
approved version from the production history, so a corrupt, missing or mismatched file never stops the day."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from magikarp_assets.core.promotion import ProductionPointer
from magikarp_assets.core.registry import Manifest, ModelRegistry, RegistryError

T = TypeVar("T")


class NoServableModelError(RegistryError):
    """Neither the production version nor any earlier approved version could be loaded."""


@dataclass(frozen=True)
class Refusal:
    """A version the registry refused to hand over before unpickling, and why."""

    version: str
    reason: str


def fallback_versions(pointer: ProductionPointer) -> list[str]:
    """The versions that served before the current one, most recent first, each once.

    :param pointer: the production pointer with its history.
    """
    seen: list[str] = []
    for event in reversed(pointer.history):
        for version in (event.version, event.previous):
            if version and version != pointer.version and version not in seen:
                seen.append(version)
    return seen


def load_with_fallback(
    registry: ModelRegistry,
    versions: list[str],
    feature_spec_hash: str,
    build: Callable[[Manifest, bytes], T],
) -> tuple[str, T, list[Refusal]]:
    """Load the first of ``versions`` the registry accepts (feature spec and SHA-256 checked before any
    unpickling, by :meth:`ModelRegistry.load`) and ``build`` accepts (a RegistryError from it, such as a
    model of another policy network version, refuses the version too).

    :param registry: the model registry.
    :param versions: the version to serve, then its fallbacks in order.
    :param feature_spec_hash: hash of the feature spec the model will be fed.
    :param build: turns a manifest and its verified artifact into the served object.
    :return: the version served, the built object and the versions refused before it.
    :raises NoServableModelError: when every version was refused (each reason listed).
    """
    refused: list[Refusal] = []
    for version in versions:
        try:
            manifest = registry.manifest(version)
            artifact = registry.load(version, expected_feature_spec_hash=feature_spec_hash)
            built = build(manifest, artifact)  # may refuse too, e.g. a model of another policy version
        except RegistryError as error:
            refused.append(Refusal(version, str(error)))
            continue
        return version, built, refused
    reasons = "; ".join(f"{r.version}: {r.reason}" for r in refused) or "no version given"
    raise NoServableModelError(f"no model can serve: every candidate was refused ({reasons})")
