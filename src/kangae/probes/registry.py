"""The registry of explanation methods: adding one touches one place.

As timm registers its models, each method registers itself where it is written::

    @register_explainer("saliency", gradient=True, description="|d logit / d x|")
    def _saliency(model, x, t, ctx, **options): ...

and ``explain(..., method="saliency")``, ``kangae explain --method``, ``explain-bench``, the
web app's method list and the tour all read :func:`explainers` instead of their own lists.

Two kinds of function register:

* ``kind="attribution"`` (the default): ``fn(model, x, t, ctx, **options) -> Tensor`` for one
  chunk of images already on the model's device, with the targets resolved; ``explain``
  does the input handling, the chunking, the frozen model and the :class:`Explanation`.
* ``kind="explanation"``: ``fn(model, images, target, seed=..., **options) -> Explanation``
  for methods that batch in their own way (the masks, RISE).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UnknownNameError

KINDS = ("attribution", "explanation")
# Modules whose import registers the built-in methods, in the order they are listed.
BUILTIN_MODULES = ("kangae.probes.attribution",)


@dataclass(frozen=True)
class Context:
    """What ``explain`` hands an attribution function beside the chunk: the layer (for
    layer methods), the seed for this chunk, and how many images fit one forward pass."""

    layer: str | None
    seed: int
    chunk: int  # images per forward pass on this device (see chunk_size)
    per_image: int  # forward passes of perturbed copies per image that fill one chunk


@dataclass(frozen=True)
class ExplainerSpec:
    """One registered method and what the CLI, the web app and the tour need to know."""

    name: str
    fn: Callable[..., Any]
    kind: str = "attribution"
    needs_layer: bool = False  # takes a conv layer (``layer=``; a default is chosen)
    needs_conv: bool = False  # only works on a model with a convolutional layer
    gradient: bool = True  # uses the model's gradients (else: forward passes only)
    baseline: bool = False  # a reference to compare with (random), not an explanation
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    aliases: tuple[str, ...] = ()
    options: tuple[str, ...] = ()  # the keyword options a user may set (beyond ``defaults``)
    # > 0: its chunks may run side by side on a busy machine (kangae.utils.threads.map_pieces),
    # in pieces of at least this many images: it adds no hooks to the shared model, touches no
    # global RNG, and gives each image the same answer however the images are grouped. Methods
    # that fill each forward pass with perturbed copies of a few images take small pieces.
    pieces: int = 0

    def accepted(self) -> frozenset[str]:
        """The option names the method takes: its keyword-only parameters, ``defaults`` and
        ``options`` (a ``**rest`` catch-all in its signature accepts nothing more)."""
        params = inspect.signature(self.fn).parameters.values()
        named = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        return frozenset(named | set(self.defaults) | set(self.options))

    def settings(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The defaults overridden by ``options``; an option the method does not take is a
        TypeError naming the ones it does, instead of being silently dropped."""
        unknown = sorted(set(options) - self.accepted())
        if unknown:
            takes = ", ".join(sorted(self.accepted())) or "none"
            raise TypeError(f"explanation method '{self.name}' takes no option "
                            f"{', '.join(map(repr, unknown))} (its options: {takes})")
        return {**self.defaults, **options}


_REGISTRY: dict[str, ExplainerSpec] = {}
_ALIASES: dict[str, str] = {}
_loaded = False


def register_explainer(name: str, *, kind: str = "attribution", needs_layer: bool = False,
                       needs_conv: bool | None = None, gradient: bool = True, baseline: bool = False,
                       defaults: Mapping[str, Any] | None = None, description: str = "",
                       aliases: Iterable[str] = (), options: Iterable[str] = (), pieces: int = 0
                       ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` as the explanation method ``name`` (returns ``fn`` unchanged)."""
    if kind not in KINDS:
        raise ValueError(f"unknown explainer kind '{kind}'; use one of {', '.join(KINDS)}")

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY or name in _ALIASES:
            raise ValueError(f"explanation method '{name}' is already registered")
        spec = ExplainerSpec(name, fn, kind, needs_layer, needs_layer if needs_conv is None else needs_conv,
                             gradient, baseline, dict(defaults or {}), description, tuple(aliases),
                             tuple(options), int(pieces))
        _REGISTRY[name] = spec
        for alias in spec.aliases:
            _ALIASES[alias] = name
        return fn

    return wrap


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def explainers() -> dict[str, ExplainerSpec]:
    """Every registered method by name: explanations in registration order, then baselines."""
    _load()
    specs = list(_REGISTRY.values())
    return {s.name: s for s in [s for s in specs if not s.baseline] + [s for s in specs if s.baseline]}


def explainer_names() -> tuple[str, ...]:
    return tuple(explainers())


def aliases() -> dict[str, str]:
    _load()
    return dict(_ALIASES)


def get_explainer(name: str) -> ExplainerSpec:
    """The spec of ``name`` (or an alias); :class:`UnknownNameError` with a suggestion otherwise."""
    specs = explainers()
    spec = specs.get(_ALIASES.get(name, name))
    if spec is None:
        raise UnknownNameError("explanation method", name, specs)
    return spec
