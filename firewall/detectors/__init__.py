"""Detectors: one protocol (`Detector.score(texts) -> results`), a cache, a registry.

`build_detector` builds the detectors a policy names under `detectors:`. The pattern
detector is not built here: the policy compiler builds a `PatternSet` from the policy's
own `lists:` and regexes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from firewall.detectors.base import EMPTY, Detector, DetectorError, DetectorResult, Match
from firewall.detectors.cache import CachedDetector, CacheStats
from firewall.detectors.patterns import PatternError, PatternSet, compile_regex
from firewall.detectors.toxicity import EmbeddedToxicity

__all__ = [
    "EMPTY",
    "CacheStats",
    "CachedDetector",
    "Detector",
    "DetectorError",
    "DetectorResult",
    "EmbeddedToxicity",
    "Match",
    "PatternError",
    "PatternSet",
    "available_detectors",
    "build_detector",
    "compile_regex",
]


def _embedded_toxicity(options: Mapping[str, Any]) -> Detector:
    if options:
        raise ValueError(
            f"toxicity backend 'embedded' takes no options, got: {', '.join(sorted(options))}"
        )
    return EmbeddedToxicity()


def _lazy(module: str) -> Callable[[Mapping[str, Any]], Detector]:
    """A factory from a module imported only when a policy uses it (heavy extras stay
    optional)."""

    def build(options: Mapping[str, Any]) -> Detector:
        from importlib import import_module

        return import_module(f"firewall.detectors.{module}").build(options)

    return build


# detector name -> backend name -> factory taking the config minus "backend"
_BACKENDS: dict[str, dict[str, Callable[[Mapping[str, Any]], Detector]]] = {
    "toxicity": {"embedded": _embedded_toxicity, "detoxify": _lazy("detoxify_backend")},
    "judge": {"openai": _lazy("judge")},
    "injection": {"builtin": _lazy("injection")},
    "pii": {"builtin": _lazy("pii")},
    "secrets": {"builtin": _lazy("secrets")},
    "semantic": {"embeddings": _lazy("semantic")},
}
_DEFAULT_BACKEND = {"toxicity": "embedded", "judge": "openai", "injection": "builtin", "pii": "builtin",
                    "secrets": "builtin", "semantic": "embeddings"}


def available_detectors() -> dict[str, tuple[str, ...]]:
    """Detector names and, for each, the backends `build_detector` accepts."""
    return {name: tuple(backends) for name, backends in _BACKENDS.items()}


def build_detector(name: str, config: Mapping[str, Any]) -> Detector:
    """Build detector `name` from its policy config, e.g. ("toxicity", {"backend": "embedded"}).

    The result is not cached; wrap it in `CachedDetector` where one instance serves
    many exchanges. Raises ValueError naming what is available when `name`, the backend
    or an option is unknown.
    """
    backends = _BACKENDS.get(name)
    if backends is None:
        raise ValueError(
            f"unknown detector {name!r}; available detectors: {', '.join(sorted(_BACKENDS))}"
        )
    options = dict(config)
    backend = options.pop("backend", _DEFAULT_BACKEND[name])
    factory = backends.get(backend)
    if factory is None:
        raise ValueError(
            f"unknown backend {backend!r} for detector {name!r}; "
            f"available backends: {', '.join(sorted(backends))}"
        )
    return factory(options)
