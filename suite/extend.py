"""Your own code in a spec, without forking: a whole model, or a variant of one part of
the Perceiver, registered under a name that a config chooses.

The names below are public and stable from perceiver-suite 0.2: ``PARTS``, ``Inputs``,
``NoKnobs``, ``Entry``, ``register``, ``register_model``, ``register_cross_attention``,
``register_self_attention``, ``register_mlp``, ``register_position_encoding``,
``register_latent_init``, ``get``, ``names``, ``entries``, ``knobs_of``,
``load_plugins``, ``loaded_plugins``. The built-in models and parts register through
them exactly as yours do (``suite.models.builtins``).

Choosing (config key: built-in names)::

    model.kind               a whole model                     perceiver, transformer, vit, convnet
    model.cross_attention    the attention of each cross-attend          standard
    model.self_attention     the attention of each latent self-attend    standard
    model.mlp                the MLP of every cross- and self-attend     standard
    model.position_encoding  the position features of the inputs        fourier, learned, none
    model.latent_init        the initial latent array                    truncated_normal

A name is an identifier, one per part; registering a taken name is one line naming
both places (``module:qualname``; the same place again replaces it, as a re-run cell
does). Each ``register_*`` is also a decorator (``@register_mlp("gated")``), and takes
a ``"module:qualname"`` string for a target imported on first use. The Perceiver's parts
serve its encoder (the query decoder of ``model.decoder='query'`` keeps the standard
ones); the built-in baselines use ``model.position_encoding`` only.

Knobs. ``knobs=`` takes a frozen dataclass whose every field has a default (int, float,
bool, str, a tuple of them, a Literal, or any of these ``| None``). Its fields are config
keys ``model.<name>.<field>`` (``model.inverted.renorm_eps=1e-6``; in a spec,
``"model.inverted.renorm_eps" = [1e-6, 1e-3]``): coerced and validated like built-in
keys (unknown keys with a suggestion, finite numbers; ``__post_init__`` may raise
ValueError for its own invariants), in the run id when not at their defaults, in
``config.json``, ``describe`` and ``results.csv``. Two variants with knobs cannot share
a name. Your class gets the instance as its first argument (``NoKnobs()`` without).

Contracts. ``m`` is the run's ``ModelConfig`` (every built-in knob: ``latent_dim``,
``dropout``, ``gelu_approximate``, ...); ``dtype`` the matmuls' compute dtype (None:
float32; ``jnp.bfloat16`` under ``model.precision='bfloat16'``): keep parameters
float32 and cast at use. Shapes: B batch, N latents (queries), M inputs, H heads.

- model: ``cls(knobs, m, inputs: Inputs, *, rngs: nnx.Rngs)``; called with keywords
  ``inputs`` (``[B, *index_dims, C]``, or ``{modality: [B, *dims, C]}`` for several
  modalities) and, where the task has them, ``positions [B, M, pos_dim]`` (point clouds),
  ``index [B, M]`` (a permutation's item indices) and ``keep {modality: [B]}`` (modality
  dropout), returning logits ``[B, num_classes]``. Inputs it cannot take: raise
  ``suite.errors.ConfigError`` naming the key (one line, exit status 2).
  ``flops(knobs, config) -> float | dict[str, float]`` (``config``: the resolved Config).
- cross_attention: ``cls(knobs, m, *, q_dim, kv_dim, qk_channels, out_dim, num_heads,
  rngs, dtype)``; ``__call__(q_in [B, N, q_dim], kv_in [B, M, kv_dim], *, mask=None)
  -> [B, N, out_dim]``: ``q_in`` the latents and ``kv_in`` the inputs after their
  LayerNorms, ``mask [B, M]`` bool (True: may be attended; modality dropout masks a
  dropped modality's inputs) or None. The Perceiver adds the result to the latents, then
  its MLP. Optional hooks: ``attention_logits(q_in, kv_in) -> [B, H, N, M]``, the scaled
  pre-softmax logits that ``perceiver-suite attention`` draws (without it, ``attention``
  says so in one line); ``keys_values(kv_in)`` returning any pytree that
  ``__call__(q_in, None, kv=that, mask=...)`` accepts, to compute a weight-shared
  cross-attend's keys and values once. ``model.cross_attention_chunk`` streams the
  standard attention only.
  ``flops(knobs, m, *, queries, inputs, q_dim, kv_dim, qk_channels, out_dim, num_heads)``.
- self_attention: ``cls(knobs, m, *, dim, num_heads, rngs, dtype)``; ``__call__(x [B, N,
  dim]) -> [B, N, dim]`` (``x`` after the LayerNorm; the Perceiver adds the residual).
  ``flops(knobs, m, *, tokens, dim, num_heads)``.
- mlp: ``cls(knobs, m, *, dim, widening_factor, rngs, dtype)``; ``__call__(x [..., dim])
  -> [..., dim]``. ``flops(knobs, m, *, tokens, dim, widening_factor)``.
- position_encoding: ``cls(knobs, m, *, grid, channels, pos_dim, modality, rngs)``:
  ``grid`` the item grid the model sees (the patch grid with ``data.patch_size``),
  ``channels`` each item's channels, ``pos_dim`` the coordinates' dims of a point cloud
  (else None), ``modality`` its name with several (else None). It sets ``self.width``
  (channels of its features; 0 adds none; under ``model.position_combine='add'`` it must
  be ``channels``) and ``__call__(positions [B, M, p] | None, index [B, M] | None) ->
  [M, width] | [B, M, width]``. ``flops(knobs, m, *, grid, channels, pos_dim, modality)``.
- latent_init: a function ``fn(knobs, m, key, shape) -> array [N, D]``.

FLOPs: each ``flops`` (forward FLOPs per example, multiplies and adds counted apart) is
a classmethod of the class or ``register_*(..., flops=fn)``. Without one, ``describe``
says it uses XLA's count of the compiled program, and a run's MFU uses XLA's count.

Plugins (``suite.plugins``): a spec's ``plugins = ["my_variants.py", "pkg.module"]``,
``--plugin FILE_OR_MODULE`` on the commands that build or read a model, or an installed
package's ``perceiver_suite.plugins`` entry point. A run records the plugins its config
uses in ``config.json`` (its worker and a resumed run load them again) and every
plugin's path and SHA-256 in ``summary.json``. A module that registers when imported
the ordinary way (``import my_variants`` in a script) is recorded by its name; a worker
process cannot import what a notebook or ``__main__`` registered.

Also public, for the suite's own use and not covered by the promise: ``knob_types``,
``knob_entry``, ``knob_keys``, ``selected``, ``stored_knobs``, ``plugin_records``.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import typing
from collections.abc import Callable, Iterable
from typing import Any

from suite import plugins as plugin_lib
from suite.errors import ConfigError, PluginError, did_you_mean

# part -> the ModelConfig field that chooses it
PARTS: dict[str, str] = {
    "model": "kind", "cross_attention": "cross_attention", "self_attention": "self_attention",
    "mlp": "mlp", "position_encoding": "position_encoding", "latent_init": "latent_init",
}
LABELS = {"model": "model", "cross_attention": "cross-attention variant",
          "self_attention": "self-attention variant", "mlp": "MLP variant",
          "position_encoding": "position encoding", "latent_init": "latent init"}
BUILTINS = "suite.models.builtins"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclasses.dataclass(frozen=True)
class NoKnobs:
    """The knobs of a model or part that has none."""


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What a model is built for: the task's input and output shapes."""

    index_dims: tuple[int, ...]  # the input grid ([H, W], [T, H, W]) or item count ([M])
    channels: int  # C, values per item (before position features)
    num_classes: int
    pos_dim: int | None = None  # coordinates per item of a point cloud, else None
    layouts: tuple[Any, ...] = ()  # suite.config.layout.Layout per input array: name
    # ("inputs", or the modality), dims, channels, patch (or None), grid, items

    @property
    def multimodal(self) -> bool:
        return len(self.layouts) > 1 or bool(self.layouts and self.layouts[0].name != "inputs")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registration: a part's name, what it builds, its knobs and where it came from."""

    part: str
    name: str
    target: Any  # the class (a function for latent_init), or "module:qualname"
    knobs: type
    flops_fn: Any  # a function, "module:qualname", or None: the class's ``flops``, if any
    where: str  # "module:qualname" (a plugin file: "path:qualname")
    plugin: plugin_lib.Plugin | None  # the plugin that registered it (None: built in)

    @property
    def obj(self) -> Any:
        """The class (or function) itself, imported on first use where named by a string."""
        return _imported(self.target) if isinstance(self.target, str) else self.target

    @property
    def flops(self) -> Callable[..., Any] | None:
        if self.flops_fn is not None:
            return _imported(self.flops_fn) if isinstance(self.flops_fn, str) else self.flops_fn
        counted = getattr(self.obj, "flops", None) if isinstance(self.obj, type) else None
        return counted if callable(counted) else None

    @property
    def has_knobs(self) -> bool:
        return bool(dataclasses.fields(self.knobs))


_REGISTRY: dict[str, dict[str, Entry]] = {part: {} for part in PARTS}
_READY = False


def _ensure() -> None:
    """The built-ins, then installed entry points, the first time the registry is read."""
    global _READY
    if _READY:
        return
    _READY = True  # before the imports: their registrations read the registry too
    try:
        importlib.import_module(BUILTINS)
        plugin_lib.load_entry_points()
    except BaseException:
        _READY = False
        raise


def register(part: str, name: str, target: Any = None, *, knobs: type | None = None,
             flops: Any = None) -> Any:
    """Register ``target`` as ``name`` of ``part`` (one of :data:`PARTS`); without
    ``target``, a decorator. ``target`` may be ``"module:qualname"``, imported on first use."""
    if target is None:
        return lambda obj: register(part, name, obj, knobs=knobs, flops=flops)
    _ensure()
    if part not in PARTS:
        raise PluginError(f"register: part {part!r} is not one of {', '.join(PARTS)}")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise PluginError(f"register {part}: name {name!r} must be an identifier "
                          "(letters, digits, _), as it becomes a config value and key")
    knobs = knobs or NoKnobs
    where = _where(target)
    plugin_lib.check_knobs(knobs, f"{part} {name!r} ({where})")
    taken = _REGISTRY[part].get(name)
    if taken is not None and taken.where != where:
        raise PluginError(f"{LABELS[part]} {name!r} is registered twice: by {taken.where} and by "
                          f"{where}; rename one")
    clash = next((e for e in _knobbed().values() if e.name == name and e.part != part), None)
    if clash is not None and dataclasses.fields(knobs):
        raise PluginError(f"knob keys model.{name}.* of {LABELS[part]} {name!r} ({where}) are "
                          f"taken by {LABELS[clash.part]} {name!r} ({clash.where}); rename one")
    plugin = plugin_lib.current() or plugin_lib.of_module(where.partition(":")[0])
    _REGISTRY[part][name] = Entry(part, name, target, knobs, flops, where, plugin)
    return target


def register_model(name: str, cls: Any = None, *, knobs: type | None = None,
                   flops: Any = None) -> Any:
    """A whole model, chosen by ``model.kind=name``; see the module's contracts."""
    return register("model", name, cls, knobs=knobs, flops=flops)


def register_cross_attention(name: str, cls: Any = None, *, knobs: type | None = None,
                             flops: Any = None) -> Any:
    """The attention of each cross-attend, chosen by ``model.cross_attention=name``."""
    return register("cross_attention", name, cls, knobs=knobs, flops=flops)


def register_self_attention(name: str, cls: Any = None, *, knobs: type | None = None,
                            flops: Any = None) -> Any:
    """The attention of each latent self-attend, chosen by ``model.self_attention=name``."""
    return register("self_attention", name, cls, knobs=knobs, flops=flops)


def register_mlp(name: str, cls: Any = None, *, knobs: type | None = None,
                 flops: Any = None) -> Any:
    """The MLP of every cross- and self-attend, chosen by ``model.mlp=name``."""
    return register("mlp", name, cls, knobs=knobs, flops=flops)


def register_position_encoding(name: str, cls: Any = None, *, knobs: type | None = None,
                               flops: Any = None) -> Any:
    """Position features of the inputs, chosen by ``model.position_encoding=name``."""
    return register("position_encoding", name, cls, knobs=knobs, flops=flops)


def register_latent_init(name: str, fn: Any = None, *, knobs: type | None = None) -> Any:
    """The initial latent array ``fn(knobs, m, key, shape)``, chosen by ``model.latent_init``."""
    return register("latent_init", name, fn, knobs=knobs)


def names(part: str) -> list[str]:
    """The registered names of ``part``, in registration order (built-ins first)."""
    _ensure()
    return list(_REGISTRY[part])


def entries(part: str | None = None) -> list[Entry]:
    """Every registration (of ``part``), built-ins first."""
    _ensure()
    return [e for p in ([part] if part else PARTS) for e in _REGISTRY[p].values()]


def get(part: str, name: str) -> Entry:
    """The registration ``name`` of ``part``; ConfigError naming the key, with a suggestion."""
    _ensure()
    entry = _REGISTRY[part].get(name)
    if entry is None:
        known = list(_REGISTRY[part])
        hint = did_you_mean(str(name), known) or \
            "; a plugin's? load it with --plugin FILE or the spec's plugins = [...]"
        raise ConfigError(f"model.{PARTS[part]}={name!r} is not one of the registered "
                          f"{LABELS[part]}s ({', '.join(map(repr, known))}){hint}")
    return entry


def selected(m: Any) -> list[Entry]:
    """The registrations a ModelConfig chooses, one per part."""
    return [get(part, getattr(m, field)) for part, field in PARTS.items()]


def knobs_of(m: Any, part: str) -> Any:
    """The knobs instance of the ``part`` that ``m`` chooses (its defaults where unset)."""
    entry = get(part, getattr(m, PARTS[part]))
    stored = dict(getattr(m, "variants", ()))
    return stored[entry.name] if entry.name in stored else entry.knobs()


def stored_knobs(m: Any) -> dict[str, Any]:
    """``{variant name: knobs}`` that ``m`` holds, with defaults for chosen variants unset."""
    out = dict(getattr(m, "variants", ()))
    for entry in selected(m):
        if entry.has_knobs and entry.name not in out:
            out[entry.name] = entry.knobs()
    return out


def _knobbed() -> dict[str, Entry]:
    return {e.name: e for part in PARTS for e in _REGISTRY[part].values() if e.has_knobs}


def knob_types(name: str) -> dict[str, Any] | None:
    """``{field: type}`` of the variant ``name``'s knobs, or None if it has none."""
    _ensure()
    entry = _knobbed().get(name)
    return None if entry is None else typing.get_type_hints(entry.knobs)


def knob_entry(name: str) -> Entry | None:
    _ensure()
    return _knobbed().get(name)


def knob_keys() -> list[str]:
    """Every ``model.<variant>.<field>`` key registered."""
    _ensure()
    return [f"model.{e.name}.{f.name}" for e in _knobbed().values()
            for f in dataclasses.fields(e.knobs)]


def plugin_records(m: Any) -> list[dict[str, Any]]:
    """The plugins whose registrations ``m`` uses (chosen, or holding knobs), as a run
    records them; built-ins and installed entry points (loaded everywhere) are left out."""
    used = [*selected(m), *(e for e in (knob_entry(n) for n, _ in getattr(m, "variants", ()))
                            if e is not None)]
    seen: dict[str, dict[str, Any]] = {}
    for entry in used:
        if entry.plugin is not None and entry.plugin.kind != "entry-point":
            seen.setdefault(entry.plugin.source, entry.plugin.record())
    return list(seen.values())


def load_plugins(specs: Iterable[str], *, base: Any = None) -> list[plugin_lib.Plugin]:
    """Import plugins (files relative to ``base``, or module names), each once per
    process; a plugin that fails leaves none of its registrations behind."""
    _ensure()
    out = []
    for spec in specs:
        before = {part: dict(names) for part, names in _REGISTRY.items()}
        try:
            out.append(plugin_lib.load(spec, base))
        except BaseException:
            for part, kept in before.items():
                _REGISTRY[part] = kept
            raise
    return out


def loaded_plugins() -> list[plugin_lib.Plugin]:
    """Every plugin this process loaded (files, modules, entry points), in order."""
    return plugin_lib.loaded()


def _imported(target: str) -> Any:
    module, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _where(target: Any) -> str:
    if isinstance(target, str):
        if ":" not in target:
            raise PluginError(f"register: {target!r} must be 'module:qualname'")
        return target
    module = getattr(target, "__module__", "?")
    qualname = getattr(target, "__qualname__", type(target).__name__)
    plugin = plugin_lib.current()
    if plugin is not None and plugin.kind == "file" and module.startswith("perceiver_suite_plugin"):
        module = plugin.path or module
    return f"{module}:{qualname}"
