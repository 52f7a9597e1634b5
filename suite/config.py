"""Frozen, typed configs; presets; ``key=value`` overrides; validation in one place.

A run is fully described by a :class:`Config`. Users address its fields by dotted
paths (``model.num_latents``) on the command line and in ablation specs, so the
field names below are a public interface: keep them.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

from suite.errors import ConfigError
from suite.tasks import TASKS

ModelKind = Literal["perceiver", "transformer", "vit", "convnet"]
Placement = Literal["interleaved", "start"]
PosEncoding = Literal["fourier", "learned", "none"]
PosCombine = Literal["concat", "add"]
Permutation = Literal["none", "fixed"]
Optimizer = Literal["lamb", "adamw", "sgd"]
Schedule = Literal["constant", "step", "constant_cosine", "cosine"]
Loss = Literal["softmax", "sigmoid"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The Perceiver's knobs, named as in ablation specs (defaults: the paper's ImageNet)."""

    kind: ModelKind = "perceiver"  # architecture family; baselines share this schema
    num_latents: int = 512  # N, latent index dimension
    latent_dim: int = 1024  # D, latent channels
    num_blocks: int = 8  # repeats of the latent Transformer
    self_attends_per_block: int = 6  # self-attention layers per latent Transformer
    num_cross_attends: int = 8  # cross-attends in total (the cross-attend frequency)
    cross_attend_placement: Placement = "interleaved"  # paper Table 6
    weight_sharing: bool = True  # CA1 own, CA2..n tied, latent tower tied over repeats
    share_first_cross_attend: bool = False  # tie CA1 too (paper: unstable)
    cross_heads: int = 1  # heads of each cross-attend (paper: 1)
    self_heads: int = 8  # heads of each latent self-attention
    cross_qk_channels: int | None = None  # q/k/v width F of cross-attends; None: input C
    widening_factor: int = 1  # MLP hidden width = widening_factor x width (paper: 1)
    dropout: float = 0.0  # paper v2: no dropout
    latent_init_scale: float = 0.02  # std of the truncated-normal latent array
    position_encoding: PosEncoding = "fourier"
    fourier_bands: int = 64  # K, bands per input dimension
    max_resolution: tuple[float, ...] | None = None  # mu per dim; None: the input grid
    concat_pos: bool = True  # include the raw coordinates in the Fourier features
    sine_only: bool = False  # drop the cosine half of the Fourier features
    position_combine: PosCombine = "concat"  # concat to inputs (paper) or add
    learned_pos_dim: int = 128  # width of learned position encodings (paper: 128)
    learned_pos_init_scale: float = 1.0  # std of learned position encodings (paper: 1.0)
    # Baselines (model.kind != "perceiver").
    num_layers: int = 4  # Transformer / ViT depth
    hidden_dim: int = 128  # Transformer / ViT width; ConvNet base width
    patch_size: int = 4  # ViT patch side

    @property
    def cross_attend_every(self) -> int | None:
        """Latent blocks between cross-attends (interleaved placement), else None."""
        if self.cross_attend_placement != "interleaved" or self.num_cross_attends <= 0:
            return None
        return self.num_blocks // self.num_cross_attends


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data set and how to feed it. Shape fields left None come from the task."""

    task: str = "digits"
    data_dir: str | None = None  # where the files live; None: the task's default place
    index_dims: tuple[int, ...] | None = None  # input grid / item count; None: the task's
    channels: int | None = None  # C before position features; None: the task's
    num_classes: int | None = None  # None: the task's
    pos_dim: int | None = None  # explicit position dims (point clouds); None: the task's
    eval_fraction: float = 0.1  # held-out share carved where a format has no eval split
    train_limit: int | None = None  # use the first N training examples (quick grids)
    eval_limit: int | None = None  # use the first N eval examples
    augment: bool = False  # crop + flip (images), scale jitter (point clouds)
    permutation: Permutation = "none"  # one fixed permutation of input items (Table 2)
    permutation_seed: int = 0
    num_workers: int = 0  # grain worker processes; 0 loads in the main process
    prefetch: int = 2  # batches buffered per worker


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation. Paper: LAMB, no warmup, step decay at 84/102/114 of 120 epochs."""

    steps: int = 1000
    batch_size: int = 64
    eval_batch_size: int = 256
    optimizer: Optimizer = "lamb"
    learning_rate: float = 4e-3
    schedule: Schedule = "step"
    warmup_steps: int = 0  # paper: none (warmup hurt LAMB)
    weight_decay: float = 0.0
    grad_clip: float | None = None  # global-norm clipping; None: off
    label_smoothing: float = 0.0
    loss: Loss = "softmax"  # sigmoid for multi-label tasks
    eval_every: int = 0  # 0: only at the end
    checkpoint_every: int = 200
    log_every: int = 50
    keep_checkpoints: int = 2


@dataclasses.dataclass(frozen=True)
class Config:
    """One run: model, data, optimisation and the seed that makes it reproducible."""

    seed: int = 0
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()


SECTIONS = ("model", "data", "train")


# --------------------------------------------------------------------------- presets


def _imagenet() -> Config:
    # Paper Tables 6/7: 44.9M parameters, 707.2 GFLOPs.
    return Config(
        model=ModelConfig(fourier_bands=64),
        data=DataConfig(task="imagenet", augment=True),
        train=TrainConfig(
            optimizer="lamb", learning_rate=4e-3, schedule="step", batch_size=64, steps=120 * 20_000
        ),
    )


def _modelnet40() -> Config:
    # Paper 4.3: 2 cross-attends, 6 self-attends per block, else as ImageNet;
    # LAMB, constant lr 1e-3, batch 512, 50k steps.
    return Config(
        model=ModelConfig(num_blocks=2, num_cross_attends=2, fourier_bands=64),
        data=DataConfig(task="modelnet40", augment=True),
        train=TrainConfig(
            optimizer="lamb", learning_rate=1e-3, schedule="constant", batch_size=512, steps=50_000
        ),
    )


def _audioset() -> Config:
    # Paper 4.2: raw audio, 2 cross-attends, 8 self-attends per block, no sharing,
    # sigmoid cross-entropy. Bands and resolution for audio are not given: 64 as elsewhere.
    return Config(
        model=ModelConfig(
            num_blocks=2, self_attends_per_block=8, num_cross_attends=2, weight_sharing=False
        ),
        data=DataConfig(task="audioset"),
        train=TrainConfig(
            optimizer="lamb", learning_rate=4e-3, schedule="constant", loss="sigmoid"
        ),
    )


def _small(task: str, **model: Any) -> Callable[[], Config]:
    """A CPU-sized Perceiver: 64x128 latents, 2 blocks of 2 self-attends, 2 cross-attends."""

    def make() -> Config:
        m = dict(
            num_latents=64, latent_dim=128, num_blocks=2, self_attends_per_block=2,
            num_cross_attends=2, self_heads=4, fourier_bands=8,
        )
        m.update(model)
        return Config(
            model=ModelConfig(**m),
            data=DataConfig(task=task),
            train=TrainConfig(
                optimizer="lamb", learning_rate=2e-3, schedule="constant_cosine",
                batch_size=64, steps=600, weight_decay=1e-2, grad_clip=10.0, eval_every=200,
                checkpoint_every=200, log_every=25,
            ),
        )

    return make


PRESETS: dict[str, Callable[[], Config]] = {
    "imagenet": _imagenet,
    "modelnet40": _modelnet40,
    "audioset": _audioset,
    "digits": _small("digits", num_latents=32, latent_dim=64, fourier_bands=4),
    "fashion_mnist": _small("fashion_mnist"),
    "mnist": _small("mnist"),
    "cifar10": _small("cifar10", fourier_bands=16),
    "mnist1d": _small("mnist1d", num_latents=32, latent_dim=64, fourier_bands=16),
    "shapes3d": _small("shapes3d", num_latents=32, latent_dim=64, fourier_bands=16),
    "synthetic": _small("synthetic", num_latents=8, latent_dim=16, num_blocks=1,
                        self_attends_per_block=1, num_cross_attends=1, self_heads=2,
                        fourier_bands=2),
}
DEFAULT_PRESET = "digits"


def preset(name: str) -> Config:
    """The named preset, resolved and validated."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return resolve(PRESETS[name]())


# ------------------------------------------------------------------ values and keys


def _section_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def known_keys() -> list[str]:
    """Every dotted key a user may set."""
    keys = ["seed"]
    for section in SECTIONS:
        cls = _section_types(Config)[section]
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def unknown_key_error(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, known_keys(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def _describe_type(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if _is_optional(tp):
        inner = [a for a in args if a is not type(None)][0]
        return f"{_describe_type(inner)} or none"
    if typing.get_origin(tp) is tuple:
        return f"a list of {_describe_type(args[0])}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, str(tp)
    )


def _is_optional(tp: Any) -> bool:
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    return union and type(None) in typing.get_args(tp)


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (a CLI string or a TOML value) to the field type ``tp``."""
    bad = ConfigError(f"{key}={value!r} is not {_describe_type(tp)}")
    if _is_optional(tp):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return coerce(key, value, inner)
    origin = typing.get_origin(tp)
    if origin is Literal:
        if isinstance(value, str):
            value = value.strip()
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if isinstance(value, str):
            text = value.strip().strip("[]()")
            items = [v for v in text.replace("x", ",").split(",") if v.strip()] if text else []
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            items = [value]
        if not items:
            raise bad
        try:
            return tuple(coerce(key, v, item_tp) for v in items)
        except ConfigError:
            raise bad from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
            return False
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                raise bad from None
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value.strip()
        raise bad
    raise bad


def apply_overrides(config: Config, overrides: Mapping[str, Any]) -> Config:
    """Set dotted keys (``{"model.num_latents": "64"}``), then resolve and validate."""
    sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    top: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key == "seed":
            top["seed"] = coerce(key, raw, int)
            continue
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name:
            raise unknown_key_error(key)
        hints = _section_types(_section_types(Config)[section])
        if name not in hints:
            raise unknown_key_error(key)
        sections[section][name] = coerce(key, raw, hints[name])
    config = dataclasses.replace(
        config,
        **top,
        **{s: dataclasses.replace(getattr(config, s), **v) for s, v in sections.items() if v},
    )
    return resolve(config)


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["a.b=1", "c=2"]`` -> ``{"a.b": "1", "c": "2"}``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        out[key.strip()] = value
    return out


def build(preset_name: str | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """A preset plus overrides, resolved and validated."""
    base = PRESETS.get(preset_name or DEFAULT_PRESET)
    if base is None:
        raise ConfigError(f"unknown preset {preset_name!r}; choose one of: {', '.join(PRESETS)}")
    return apply_overrides(base(), overrides or {})


# ------------------------------------------------------------- resolution, validation


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
    model = config.model
    if model.max_resolution is None and info.max_resolution is not None and data.pos_dim:
        model = dataclasses.replace(model, max_resolution=info.max_resolution[:1] * data.pos_dim)
    config = dataclasses.replace(config, data=data, model=model)
    validate(config)
    return config


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(config: Config) -> None:
    """Every invariant a config must hold; raises ConfigError naming key and value."""
    m, d, t = config.model, config.data, config.train
    # Literal-typed fields (a dataclasses.replace in code bypasses coerce()).
    for section in SECTIONS:
        obj = getattr(config, section)
        for name, tp in _section_types(type(obj)).items():
            if typing.get_origin(tp) is Literal and getattr(obj, name) not in typing.get_args(tp):
                raise ConfigError(
                    f"{section}.{name}={getattr(obj, name)!r} is not {_describe_type(tp)}"
                )

    def positive(key: str, value: int | float | None, allow_zero: bool = False) -> None:
        if value is None:
            return
        ok = value >= 0 if allow_zero else value > 0
        _require(ok, f"{key}={value!r} must be {'>= 0' if allow_zero else '> 0'}")

    _require(config.seed >= 0, f"seed={config.seed} must be >= 0")
    positive("model.num_latents", m.num_latents)
    positive("model.latent_dim", m.latent_dim)
    positive("model.num_blocks", m.num_blocks)
    positive("model.self_attends_per_block", m.self_attends_per_block, allow_zero=True)
    positive("model.num_cross_attends", m.num_cross_attends)
    positive("model.cross_heads", m.cross_heads)
    positive("model.self_heads", m.self_heads)
    positive("model.cross_qk_channels", m.cross_qk_channels)
    positive("model.widening_factor", m.widening_factor)
    positive("model.latent_init_scale", m.latent_init_scale)
    positive("model.fourier_bands", m.fourier_bands)
    positive("model.learned_pos_dim", m.learned_pos_dim)
    positive("model.learned_pos_init_scale", m.learned_pos_init_scale)
    positive("model.num_layers", m.num_layers)
    positive("model.hidden_dim", m.hidden_dim)
    positive("model.patch_size", m.patch_size)
    _require(0.0 <= m.dropout < 1.0, f"model.dropout={m.dropout} must be in [0, 1)")
    if m.kind == "perceiver":
        if m.cross_attend_placement == "interleaved":
            _require(
                m.num_cross_attends <= m.num_blocks and m.num_blocks % m.num_cross_attends == 0,
                f"model.num_cross_attends={m.num_cross_attends} must divide "
                f"model.num_blocks={m.num_blocks} when placement is interleaved",
            )
        _require(
            m.latent_dim % m.self_heads == 0,
            f"model.self_heads={m.self_heads} must divide model.latent_dim={m.latent_dim}",
        )
        if m.cross_qk_channels is not None:
            _require(
                m.cross_qk_channels % m.cross_heads == 0,
                f"model.cross_heads={m.cross_heads} must divide "
                f"model.cross_qk_channels={m.cross_qk_channels}",
            )
    if m.kind in ("transformer", "vit"):
        _require(
            m.hidden_dim % m.self_heads == 0,
            f"model.self_heads={m.self_heads} must divide model.hidden_dim={m.hidden_dim}",
        )
    if m.kind in ("vit", "convnet"):
        _require(
            len(d.index_dims or ()) == 2 and d.pos_dim is None,
            f"model.kind={m.kind!r} needs a 2-D image task, not data.task={d.task!r} "
            f"with data.index_dims={list(d.index_dims or ())}",
        )
    if m.kind == "vit":
        _require(
            all(n % m.patch_size == 0 for n in d.index_dims),
            f"model.patch_size={m.patch_size} must divide data.index_dims={list(d.index_dims)}",
        )
    if m.max_resolution is not None:
        _require(
            all(r > 0 for r in m.max_resolution),
            f"model.max_resolution={list(m.max_resolution)} must be > 0",
        )
        n_pos = d.pos_dim or len(d.index_dims or ())
        _require(
            len(m.max_resolution) in (1, n_pos),
            f"model.max_resolution={list(m.max_resolution)} needs 1 or {n_pos} values "
            f"(one per position dimension)",
        )
    # Data.
    assert d.index_dims is not None and d.channels is not None and d.num_classes is not None
    _require(
        len(d.index_dims) >= 1 and all(n > 0 for n in d.index_dims),
        f"data.index_dims={list(d.index_dims)} must be positive sizes",
    )
    positive("data.channels", d.channels)
    _require(d.num_classes >= 2, f"data.num_classes={d.num_classes} must be >= 2")
    positive("data.pos_dim", d.pos_dim)
    _require(
        0.0 < d.eval_fraction < 1.0, f"data.eval_fraction={d.eval_fraction} must be in (0, 1)"
    )
    positive("data.train_limit", d.train_limit)
    positive("data.eval_limit", d.eval_limit)
    positive("data.permutation_seed", d.permutation_seed, allow_zero=True)
    positive("data.num_workers", d.num_workers, allow_zero=True)
    positive("data.prefetch", d.prefetch)
    # Train.
    positive("train.steps", t.steps)
    positive("train.batch_size", t.batch_size)
    positive("train.eval_batch_size", t.eval_batch_size)
    positive("train.learning_rate", t.learning_rate)
    positive("train.warmup_steps", t.warmup_steps, allow_zero=True)
    _require(
        t.warmup_steps < t.steps,
        f"train.warmup_steps={t.warmup_steps} must be < train.steps={t.steps}",
    )
    positive("train.weight_decay", t.weight_decay, allow_zero=True)
    positive("train.grad_clip", t.grad_clip)
    _require(
        0.0 <= t.label_smoothing < 1.0,
        f"train.label_smoothing={t.label_smoothing} must be in [0, 1)",
    )
    positive("train.eval_every", t.eval_every, allow_zero=True)
    positive("train.checkpoint_every", t.checkpoint_every)
    positive("train.log_every", t.log_every)
    positive("train.keep_checkpoints", t.keep_checkpoints)


# ------------------------------------------------------------------------ printing


def to_dict(config: Config) -> dict[str, Any]:
    """A JSON-ready nested dict, with the derived ``model.cross_attend_every``."""
    out = dataclasses.asdict(config)
    out["model"]["cross_attend_every"] = config.model.cross_attend_every
    return out


def flatten(config: Config) -> dict[str, Any]:
    """``{"model.num_latents": 512, ...}`` including derived keys."""
    nested = to_dict(config)
    flat: dict[str, Any] = {"seed": nested.pop("seed")}
    for section, values in nested.items():
        for k, v in values.items():
            flat[f"{section}.{k}"] = list(v) if isinstance(v, tuple) else v
    return flat


def from_dict(data: Mapping[str, Any]) -> Config:
    """Inverse of :func:`to_dict` (derived keys ignored), validated."""
    overrides: dict[str, Any] = {}
    for key, value in data.items():
        if key == "seed":
            overrides["seed"] = value
        elif isinstance(value, Mapping):
            for k, v in value.items():
                if f"{key}.{k}" not in DERIVED_KEYS:
                    overrides[f"{key}.{k}"] = v
        else:
            raise unknown_key_error(key)
    return apply_overrides(Config(), overrides)


DERIVED_KEYS = frozenset({"model.cross_attend_every"})

