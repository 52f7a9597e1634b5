"""Resolution (shape fields from the task) and every invariant a config must hold.

Each check raises a :class:`ConfigError` whose message names the key and the value, so
the command line can print it as one line.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Literal

from suite import extend
from suite.config.limits import check_sizes
from suite.config.schema import SECTIONS, Config, DataConfig, ModelConfig, TrainConfig
from suite.config.schema import section_types as _types
from suite.config.tables import is_table_value, table_get  # noqa: F401  (re-exported)
from suite.errors import ConfigError
from suite.tasks import TASKS

MAX_SEED = 2**32  # seeds are uint32 for numpy's and JAX's generators alike


def resolve(config: Config) -> Config:
    """Fill shape fields from the task, then validate. Idempotent."""
    d = config.data
    if d.task not in TASKS:
        raise ConfigError(f"data.task={d.task!r} is unknown; choose one of: {', '.join(TASKS)}")
    info = TASKS[d.task]
    data = dataclasses.replace(
        d,
        index_dims=d.index_dims if d.index_dims is not None else info.index_dims,
        channels=d.channels if d.channels is not None else info.channels,
        num_classes=d.num_classes if d.num_classes is not None else info.num_classes,
        pos_dim=d.pos_dim if d.pos_dim is not None else info.pos_dim,
    )
    if info.modalities and not data.modalities:  # a multimodal task feeds all by default
        data = dataclasses.replace(data, modalities=tuple(sorted(n for n, _ in info.modalities)))
    model = config.model
    if model.max_resolution is None and info.max_resolution is not None and data.pos_dim:
        model = dataclasses.replace(model, max_resolution=info.max_resolution[:1] * data.pos_dim)
    _validate_parts(model)
    knobs = tuple(sorted(extend.stored_knobs(model).items()))  # chosen variants' defaults
    if knobs != model.variants:
        model = dataclasses.replace(model, variants=knobs)
    config = dataclasses.replace(config, data=data, model=model)
    validate(config)
    return config


def describe_type(tp: Any) -> str:
    """A type as the user reads it in an error: "an integer", "one of 'a', 'b'", ..."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if is_union(tp):
        arms = [describe_type(a) for a in args if a is not type(None)]
        return " or ".join(arms) + (" or none" if type(None) in args else "")
    if is_table(tp):
        return f"a table modality=value ({describe_type(typing.get_args(args[0])[1])} each)"
    if typing.get_origin(tp) is tuple:
        return f"a list of {describe_type(args[0])}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, str(tp)
    )


def is_union(tp: Any) -> bool:
    import types

    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def is_optional(tp: Any) -> bool:
    return is_union(tp) and type(None) in typing.get_args(tp)


def is_table(tp: Any) -> bool:
    """``tuple[tuple[str, X], ...]``: a per-modality table (``schema.IntTable`` and kin)."""
    args = typing.get_args(tp)
    return (typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis
            and typing.get_origin(args[0]) is tuple and typing.get_args(args[0])[:1] == (str,))



def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive(key: str, value: int | float | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if is_table_value(value):  # per modality: each entry
        for _, v in value:
            _positive(key, v, allow_zero)
        return
    ok = value >= 0 if allow_zero else value > 0
    _require(ok, f"{key}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


def validate(config: Config) -> None:
    """Every invariant a config must hold; raises ConfigError naming key and value."""
    for section in SECTIONS:  # Literal fields (dataclasses.replace in code bypasses coercion)
        obj = getattr(config, section)
        for name, tp in _types(type(obj)).items():
            if typing.get_origin(tp) is Literal and getattr(obj, name) not in typing.get_args(tp):
                raise ConfigError(
                    f"{section}.{name}={getattr(obj, name)!r} is not {describe_type(tp)}")
    _require(0 <= config.seed < MAX_SEED, f"seed={config.seed} must be in 0..{MAX_SEED - 1}")
    _require(0 <= config.data.permutation_seed < MAX_SEED,
             f"data.permutation_seed={config.data.permutation_seed} must be in "
             f"0..{MAX_SEED - 1}")
    _finite(config)
    check_sizes(config)  # before any size is used: a typo's 10**12 builds nothing
    _validate_parts(config.model)
    if config.data.data_dir is not None:
        try:
            config.data.data_dir.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"data.data_dir={config.data.data_dir!r} is not valid UTF-8 (a "
                              "results folder could not record it); rename the folder") from None
    _require(not TASKS[config.data.task].multi_label or config.train.loss == "sigmoid",
             f"data.task={config.data.task!r} has several labels per example: it needs "
             f"train.loss='sigmoid', not {config.train.loss!r}")
    _validate_model(config.model, config.data)
    _validate_data(config.data)
    _validate_modalities(config)
    _validate_train(config.train)


def _finite(config: Config) -> None:
    """No float knob is inf or nan (``train.learning_rate=inf`` parses as a float)."""
    for section in SECTIONS:
        obj = getattr(config, section)
        for name in _types(type(obj)):
            value = getattr(obj, name)
            values = value if isinstance(value, tuple) else (value,)
            for v in values:
                if isinstance(v, float) and not math.isfinite(v):
                    shown = list(value) if isinstance(value, tuple) else value
                    raise ConfigError(f"{section}.{name}={shown!r} must be a finite number")


BASELINES = ("transformer", "vit", "convnet")


def _validate_parts(m: ModelConfig) -> None:
    """Every model and part chosen is registered (a suggestion where one is close); every
    variant's knobs are its knobs dataclass, numbers finite."""
    extend.selected(m)
    for name, knobs in m.variants:
        entry = extend.knob_entry(name)
        _require(entry is not None, f"model.{name}.*: no registered variant {name!r} has "
                 "knobs; load the plugin that registers it (--plugin FILE)")
        _require(isinstance(knobs, entry.knobs), f"model.{name}: knobs {knobs!r} are not "
                 f"{entry.knobs.__name__} ({entry.where})")
        for f in dataclasses.fields(knobs):
            value = getattr(knobs, f.name)
            for v in value if isinstance(value, tuple) else (value,):
                _require(not isinstance(v, float) or math.isfinite(v),
                         f"model.{name}.{f.name}={value!r} must be a finite number")


def _validate_model(m: ModelConfig, d: DataConfig) -> None:
    for name in ("num_latents", "latent_dim", "num_blocks", "num_cross_attends", "cross_heads",
                 "self_heads", "cross_qk_channels", "widening_factor", "latent_init_scale",
                 "fourier_bands", "learned_pos_dim", "learned_pos_init_scale", "num_layers",
                 "hidden_dim", "patch_size", "decoder_queries", "decoder_query_dim",
                 "decoder_heads", "decoder_init_scale"):
        _positive(f"model.{name}", getattr(m, name))
    _require(m.decoder == "average" or m.kind == "perceiver",
             f"model.decoder={m.decoder!r} is the Perceiver's (Perceiver IO); model.kind="
             f"{m.kind!r} has its own head")
    _require(m.decoder == "query" or m.decoder_queries == 1,
             f"model.decoder_queries={m.decoder_queries} needs model.decoder='query'")
    _positive("model.self_attends_per_block", m.self_attends_per_block, allow_zero=True)
    _positive("model.cross_attention_chunk", m.cross_attention_chunk, allow_zero=True)
    _require(0.0 <= m.dropout < 1.0, f"model.dropout={m.dropout} must be in [0, 1)")
    _require(not (m.remat and m.dropout > 0),
             f"model.remat=true needs model.dropout=0 (dropout={m.dropout}): a recomputed "
             "block would draw other dropout masks")
    if m.kind == "perceiver":
        _validate_perceiver(m)
    if m.kind in ("transformer", "vit"):
        _require(m.hidden_dim % m.self_heads == 0,
                 f"model.self_heads={m.self_heads} must divide model.hidden_dim={m.hidden_dim}")
    if m.kind in ("vit", "convnet"):
        _require(len(d.index_dims or ()) == 2 and d.pos_dim is None,
                 f"model.kind={m.kind!r} needs a 2-D image task, not data.task={d.task!r} "
                 f"with data.index_dims={list(d.index_dims or ())}")
    if m.kind == "vit":
        _require(all(n % m.patch_size == 0 for n in d.index_dims),
                 f"model.patch_size={m.patch_size} must divide "
                 f"data.index_dims={list(d.index_dims)}")
    if m.max_resolution is not None and not is_table_value(m.max_resolution):
        _require(all(r > 0 for r in m.max_resolution),
                 f"model.max_resolution={list(m.max_resolution)} must be > 0")
        n_pos = d.pos_dim or len(d.index_dims or ())
        _require(len(m.max_resolution) in (1, n_pos),
                 f"model.max_resolution={list(m.max_resolution)} needs 1 or {n_pos} values "
                 f"(one per position dimension)")


def _validate_perceiver(m: ModelConfig) -> None:
    if m.cross_attend_placement == "interleaved":
        _require(m.num_cross_attends <= m.num_blocks and m.num_blocks % m.num_cross_attends == 0,
                 f"model.num_cross_attends={m.num_cross_attends} must divide "
                 f"model.num_blocks={m.num_blocks} when placement is interleaved")
    _require(m.latent_dim % m.self_heads == 0,
             f"model.self_heads={m.self_heads} must divide model.latent_dim={m.latent_dim}")
    if m.cross_qk_channels is not None:
        _require(m.cross_qk_channels % m.cross_heads == 0,
                 f"model.cross_heads={m.cross_heads} must divide "
                 f"model.cross_qk_channels={m.cross_qk_channels}")


def _validate_data(d: DataConfig) -> None:
    assert d.index_dims is not None and d.channels is not None and d.num_classes is not None
    _require(len(d.index_dims) >= 1 and all(n > 0 for n in d.index_dims),
             f"data.index_dims={list(d.index_dims)} must be positive sizes")
    _positive("data.channels", d.channels)
    _require(d.num_classes >= 2, f"data.num_classes={d.num_classes} must be >= 2")
    _positive("data.pos_dim", d.pos_dim)
    _require(0.0 < d.eval_fraction < 1.0,
             f"data.eval_fraction={d.eval_fraction} must be in (0, 1)")
    _positive("data.train_limit", d.train_limit)
    _positive("data.eval_limit", d.eval_limit)
    _positive("data.permutation_seed", d.permutation_seed, allow_zero=True)
    _positive("data.frame_stride", d.frame_stride)
    _positive("data.fps", d.fps, allow_zero=True)
    _positive("data.sample_rate", d.sample_rate)
    _positive("data.num_workers", d.num_workers, allow_zero=True)
    _require(d.normalization == "dataset" or d.channels == 3,
             f"data.normalization='imagenet' is for RGB inputs, not data.channels={d.channels}")
    for name in ("mixup", "cutmix"):
        _positive(f"data.{name}", getattr(d, name), allow_zero=True)
    _require(not d.cutmix or (len(d.index_dims) == 2 and d.permutation == "none"
                              and d.pos_dim is None),
             f"data.cutmix={d.cutmix} pastes image boxes: it needs a 2-D image task without "
             f"data.permutation (data.task={d.task!r}, data.permutation={d.permutation!r})")
    _require(not (d.mixup or d.cutmix) or not d.modalities,
             f"data.mixup and data.cutmix blend one input array; data.modalities="
             f"{list(d.modalities)} has several")
    _require(not d.mixup or d.pos_dim is None,
             f"data.mixup={d.mixup} blends input values; data.task={d.task!r} has explicit "
             "positions (point clouds), which it cannot blend")
    _require(0.0 <= d.max_bad_fraction < 1.0,
             f"data.max_bad_fraction={d.max_bad_fraction} must be in [0, 1)")
    _require(isinstance(d.max_bad_files, int) and not isinstance(d.max_bad_files, bool)
             and d.max_bad_files >= 0,
             f"data.max_bad_files={d.max_bad_files!r} must be a whole number >= 0")
    _positive("data.prefetch", d.prefetch)
    _positive("data.randaugment_layers", d.randaugment_layers, allow_zero=True)
    _require(0 <= d.randaugment_magnitude <= 10,
             f"data.randaugment_magnitude={d.randaugment_magnitude} must be in 0..10")


def _validate_modalities(config: Config) -> None:
    """Tables name modalities the task feeds; patches divide their grids."""
    from suite.config.layout import layouts

    m, d = config.model, config.data
    known = [n for n, _ in TASKS[d.task].modalities]
    if d.modalities:
        _require(bool(known), f"data.modalities={list(d.modalities)}: data.task={d.task!r} has "
                 "one input array; multimodal tasks: " + ", ".join(
                     k for k, v in TASKS.items() if v.modalities))
        for name in d.modalities:
            _require(name in known, f"data.modalities: {name!r} is not a modality of "
                     f"data.task={d.task!r} ({', '.join(known)})")
        _require(m.kind not in BASELINES, f"data.modalities={list(d.modalities)} needs "
                 f"model.kind='perceiver' (one model, several inputs), not {m.kind!r}")
    names = set(d.modalities)
    for key, value in (("model.fourier_bands", m.fourier_bands),
                       ("model.max_resolution", m.max_resolution),
                       ("data.patch_size", d.patch_size), ("data.modality_dims", d.modality_dims),
                       ("data.modality_dropout", d.modality_dropout)):
        if is_table_value(value):
            _require(bool(names), f"{key}={_table_text(value)} is a per-modality table; "
                     f"data.task={d.task!r} has one input array")
            stray = sorted(set(dict(value)) - set(known))  # the task's: a subset may be fed
            _require(not stray, f"{key}: {stray[0] if stray else ''!r} is not a modality of "
                     f"data.task={d.task!r} ({', '.join(known)})")
    if is_table_value(m.fourier_bands):
        missing = sorted(names - set(dict(m.fourier_bands)))
        _require(not missing, f"model.fourier_bands={_table_text(m.fourier_bands)} gives no "
                 f"bands for {missing[0] if missing else ''!r}")
    for name, p in d.modality_dropout:
        _require(0.0 <= p < 1.0, f"data.modality_dropout: {name}={p} must be in [0, 1)")
    for lay in layouts(config):
        if lay.patch:
            _require(len(lay.patch) == len(lay.dims) and all(
                n % p == 0 for n, p in zip(lay.dims, lay.patch, strict=True)),
                f"data.patch_size={list(lay.patch)} must divide the input grid "
                f"{list(lay.dims)}" + (f" of {lay.name}" if lay.name != "inputs" else ""))
            _require(d.permutation == "none" and d.pos_dim is None,
                     f"data.patch_size={list(lay.patch)} cuts a grid; data.permutation and "
                     "point clouds have none")
            _require(m.kind not in BASELINES, f"data.patch_size is the Perceiver's input; "
                     f"model.kind={m.kind!r} has model.patch_size")


def _table_text(value: Any) -> str:
    return ",".join(f"{k}={'x'.join(map(str, v)) if isinstance(v, tuple) else v}"
                    for k, v in value)


def _validate_train(t: TrainConfig) -> None:
    for name in ("steps", "batch_size", "eval_batch_size", "learning_rate", "grad_clip",
                 "checkpoint_every", "log_every", "keep_checkpoints"):
        _positive(f"train.{name}", getattr(t, name))
    for name in ("warmup_steps", "weight_decay", "eval_every", "eval_train_examples"):
        _positive(f"train.{name}", getattr(t, name), allow_zero=True)
    _require(t.warmup_steps < t.steps,
             f"train.warmup_steps={t.warmup_steps} must be < train.steps={t.steps}")
    _require(t.init_optimizer == "fresh" or bool(t.init_from),
             f"train.init_optimizer={t.init_optimizer!r} needs train.init_from (the run whose "
             "optimizer state it carries)")
    parse_mesh(t.mesh)  # the syntax; the device count is known at run time
    _require(0.0 <= t.label_smoothing < 1.0,
             f"train.label_smoothing={t.label_smoothing} must be in [0, 1)")


MESH_AXES = ("data", "fsdp")


def parse_mesh(text: str) -> dict[str, int]:
    """``"data=-1,fsdp=2"`` -> ``{"data": -1, "fsdp": 2}`` (empty: no mesh)."""
    axes: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, size = part.partition("=")
        name = name.strip()
        try:
            value = int(size)
        except ValueError:
            value = 0
        if not sep or name not in MESH_AXES or name in axes or value == 0 or value < -1:
            raise ConfigError(f"train.mesh={text!r}: expected axes {' and '.join(MESH_AXES)} as "
                              "name=size (size -1: the remaining devices), e.g. data=-1,fsdp=2")
        axes[name] = value
    if sum(v == -1 for v in axes.values()) > 1:
        raise ConfigError(f"train.mesh={text!r}: only one axis may be -1")
    return axes
