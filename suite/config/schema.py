"""The config schema: frozen, typed dataclasses, one per section, and their dict forms.

A run is fully described by a :class:`Config`. Users address its fields by dotted
paths (``model.num_latents``) on the command line and in ablation specs, so the
field names below are a public interface: keep them.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from suite import extend
from suite.errors import SuiteError

Placement = Literal["interleaved", "start"]
PosCombine = Literal["concat", "add"]
Permutation = Literal["none", "fixed"]
Optimizer = Literal["lamb", "adamw", "sgd"]
Schedule = Literal["constant", "step", "constant_cosine", "cosine"]
InitOptimizer = Literal["fresh", "carry"]
Loss = Literal["softmax", "sigmoid"]
Precision = Literal["float32", "bfloat16"]
BadExamples = Literal["skip", "fail"]
EvalSplit = Literal["eval", "validation"]
Decoder = Literal["average", "query"]
AudioFeatures = Literal["raw", "mel"]
# A per-modality table, {"video": 32, "audio": 64}, kept as sorted (modality, value) pairs
# so that configs stay hashable; a field of type `X | Table[X]` takes either.
IntTable = tuple[tuple[str, int], ...]
FloatTable = tuple[tuple[str, float], ...]
DimsTable = tuple[tuple[str, tuple[int, ...]], ...]
ResolutionTable = tuple[tuple[str, tuple[float, ...]], ...]
Normalization = Literal["dataset", "imagenet"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The Perceiver's knobs, named as in ablation specs (defaults: the paper's ImageNet)."""

    # A registered model (suite.extend): perceiver, transformer, vit, convnet, or yours.
    kind: str = "perceiver"  # architecture family; baselines share this schema
    # The Perceiver's parts, each a registered variant (suite.extend); knobs of a variant
    # are the keys model.<variant>.<field>.
    cross_attention: str = "standard"  # the attention of each cross-attend
    self_attention: str = "standard"  # the attention of each latent self-attend
    mlp: str = "standard"  # the MLP of every cross- and self-attend
    latent_init: str = "truncated_normal"  # the initial latent array
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
    gelu_approximate: bool = True  # the MLPs' GELU: tanh approximation (official) or exact
    dropout: float = 0.0  # paper v2: no dropout
    latent_init_scale: float = 0.02  # std of the truncated-normal latent array
    position_encoding: str = "fourier"  # fourier, learned, none, or a registered variant
    fourier_bands: int | IntTable = 64  # K, bands per input dimension (or per modality)
    max_resolution: tuple[float, ...] | ResolutionTable | None = None  # mu per dim; None:
    # the input grid (the patch grid with data.patch_size); a table gives one per modality
    concat_pos: bool = True  # include the raw coordinates in the Fourier features
    sine_only: bool = False  # drop the cosine half of the Fourier features
    position_combine: PosCombine = "concat"  # concat to inputs (paper) or add
    learned_pos_dim: int = 128  # width of learned position encodings (paper: 128)
    learned_pos_init_scale: float = 1.0  # std of learned position encodings (paper: 1.0)
    # The output: the paper's average of the latents, or Perceiver IO's query decoder.
    decoder: Decoder = "average"  # "query": a learned query cross-attends to the latents
    decoder_queries: int = 1  # O, output queries (classification: 1)
    decoder_query_dim: int | None = None  # E, their width; None: model.latent_dim (IO: 1024)
    decoder_heads: int = 1  # heads of the decoder's cross-attention (IO: 1)
    decoder_query_residual: bool = True  # IO ImageNet (Fourier): True
    decoder_init_scale: float = 0.02  # std of the truncated-normal query (IO: 0.02)
    # Several modalities: each padded to max channels + this with a learned vector (official
    # MultimodalPreprocessor's min_padding_size), then concatenated along the inputs.
    modality_padding: int = 2
    # Speed and memory (numbers unchanged up to float rounding; bfloat16 aside).
    precision: Precision = "float32"  # matmul compute dtype; params, LN, softmax stay f32
    cross_attention_chunk: int = 0  # >0: cross-attend over inputs in chunks (online softmax)
    remat: bool = False  # recompute each block in the backward pass (less memory)
    scan_repeats: bool = True  # weight-shared repeats as one scanned block (faster compile)
    # Baselines (model.kind != "perceiver").
    num_layers: int = 4  # Transformer / ViT depth
    hidden_dim: int = 128  # Transformer / ViT width; ConvNet base width
    patch_size: int = 4  # ViT patch side
    # Knobs of registered variants (model.<variant>.<field>), as sorted (variant, knobs
    # dataclass) pairs: those chosen, and any set; not a key of its own.
    variants: tuple[tuple[str, Any], ...] = ()

    @property
    def cross_attend_every(self) -> int | None:
        """Latent blocks between cross-attends (interleaved placement), else None."""
        if self.cross_attend_placement != "interleaved" or self.num_cross_attends <= 0:
            return None
        return self.num_blocks // self.num_cross_attends


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data set and how to feed it. Shape fields left None come from the task."""

    task: str = "digits"  # the data set (`perceiver-suite data` lists them)
    data_dir: str | None = None  # where the files live; None: the task's default place
    index_dims: tuple[int, ...] | None = None  # input grid / item count; None: the task's
    channels: int | None = None  # C before position features; None: the task's
    num_classes: int | None = None  # None: the task's
    pos_dim: int | None = None  # explicit position dims (point clouds); None: the task's
    eval_fraction: float = 0.1  # held-out share carved where a format has no eval split
    eval_split: EvalSplit = "eval"  # "validation": evaluate on data.eval_fraction of the
    # training split (class-stratified, the same for every seed) and train on the rest, so
    # a recipe is chosen without reading the task's eval (test) split at all
    patch_size: tuple[int, ...] | DimsTable | None = None  # inputs as a grid of patches,
    # the patch's values as channels ([2, 8, 8] video, [128] audio, [4, 4] images); a
    # table gives one per modality
    modalities: tuple[str, ...] = ()  # a multimodal task's modalities to feed; (): all
    modality_dims: DimsTable = ()  # per-modality input grids over the task's defaults
    modality_dropout: FloatTable = ()  # per-example chance a modality is masked out (train)
    frames: int | None = None  # video: frames per clip (None: the task's)
    frame_stride: int = 1  # video: every k-th frame (of the file, or at data.fps)
    fps: float = 0.0  # video: frames per second files are resampled to (0: their own)
    sample_rate: int = 16000  # audio: the rate clips are resampled to
    audio_features: AudioFeatures = "raw"  # raw samples, or a log-mel spectrogram
    train_limit: int | None = None  # N training examples: a seeded, class-stratified draw
    eval_limit: int | None = None  # N eval examples, drawn the same way
    augment: bool = False  # crop + flip (images), scale jitter (point clouds)
    randaugment_layers: int = 0  # image folders: RandAugment operations per image (paper: 4)
    randaugment_magnitude: int = 5  # their strength, 0..10 (paper: 5)
    normalization: Normalization = "dataset"  # per-channel statistics of the training
    # split, or "imagenet": the official fixed MEAN_RGB / STDDEV_RGB (imported weights)
    mixup: float = 0.0  # MixUp's Beta(a, a) (0: off; Perceiver IO: 0.2)
    cutmix: float = 0.0  # CutMix's Beta(a, a) (0: off; Perceiver IO's paper: 0.2, its code: 1)
    permutation: Permutation = "none"  # one fixed permutation of input items (Table 2)
    permutation_seed: int = 0  # which fixed permutation data.permutation applies
    bad_examples: BadExamples = "skip"  # an unreadable file: replaced and counted, or fatal
    max_bad_fraction: float = 0.01  # stop a run once more of a split's files are unreadable
    max_bad_files: int = 5  # ... and more than this many: one bad file in a small folder
    # is named and skipped; a wholly broken folder still stops by its 6th file
    num_workers: int = 0  # grain worker processes; 0 loads in the main process
    prefetch: int = 2  # batches buffered per worker


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation. Paper: LAMB, no warmup, step decay at 84/102/114 of 120 epochs."""

    steps: int = 1000  # optimiser steps in all
    batch_size: int = 64  # training examples per step, over all devices
    eval_batch_size: int | None = None  # None: the largest power of two <= 256 that fits
    optimizer: Optimizer = "lamb"  # paper: LAMB
    learning_rate: float = 4e-3  # peak learning rate (paper ImageNet: 4e-3)
    schedule: Schedule = "step"  # paper: x0.1 at epochs 84, 102, 114 of 120
    warmup_steps: int = 0  # paper: none (warmup hurt LAMB)
    weight_decay: float = 0.0  # decoupled weight decay
    grad_clip: float | None = None  # global-norm clipping; None: off
    label_smoothing: float = 0.0  # share of the target spread over all classes
    loss: Loss = "softmax"  # sigmoid for multi-label tasks
    eval_every: int = 0  # 0: only at the end
    eval_train_examples: int | None = None  # train_eval/: a fixed training subset evaluated
    # as the eval split is (no augmentation, no dropout); None: the eval split's size, 0: off
    checkpoint_every: int = 200  # steps between Orbax checkpoints (resume points)
    log_every: int = 50  # steps between metrics.jsonl lines
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    tensorboard: bool = True  # also write TensorBoard event files into the run folder
    mesh: str = ""  # devices to train on, e.g. "data=-1" or "data=-1,fsdp=2"; "": one
    # Warm start: the run folder whose newest checkpoint's model weights this run starts
    # from (absolute; the CLI's --init-from makes it so); None: the seed's initialisation.
    # A config key, so part of the run's id: a grid can fine-tune from one checkpoint.
    init_from: str | None = None
    init_optimizer: InitOptimizer = "fresh"  # with init_from: a new optimizer, or "carry"
    # the source's optimizer state (moments and step count; the same optimizer config only)


@dataclasses.dataclass(frozen=True)
class Config:
    """One run: model, data, optimisation and the seed that makes it reproducible."""

    seed: int = 0  # initialisation, dropout and data order
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()


SECTIONS = ("model", "data", "train")

DERIVED_KEYS = frozenset({"model.cross_attend_every"})
VARIANTS = "variants"  # ModelConfig's field of variant knobs, set through their own keys


def section_types(cls: type) -> dict[str, Any]:
    """Field name -> type of a section dataclass (or of :class:`Config` itself)."""
    return typing.get_type_hints(cls)


def known_keys() -> list[str]:
    """Every dotted key a user may set (registered variants' knobs included)."""
    keys = ["seed"]
    for section in SECTIONS:
        cls = section_types(Config)[section]
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls) if f.name != VARIANTS]
    return keys + extend.knob_keys()


def to_dict(config: Config) -> dict[str, Any]:
    """A JSON-ready nested dict, with the derived ``model.cross_attend_every``, variant
    knobs as ``"<variant>.<field>"`` keys of ``model``, and ``plugins``: the plugins
    whose registrations the config uses (``from_dict`` loads them again)."""
    out = _nested(config)
    try:
        records = extend.plugin_records(config.model)
    except SuiteError:  # a name no longer registered: nothing to record
        records = []
    if records:
        out["plugins"] = records
    return out


def _nested(config: Config) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    out["model"].pop(VARIANTS)
    out["model"]["cross_attend_every"] = config.model.cross_attend_every
    out["model"].update(_knob_items(config.model.variants))
    return out


def _knob_items(variants: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return {f"{name}.{f.name}": getattr(knobs, f.name) for name, knobs in variants
            for f in dataclasses.fields(knobs)}


def flatten(config: Config) -> dict[str, Any]:
    """``{"model.num_latents": 512, ...}`` including derived keys and variant knobs
    (``model.inverted.renorm_eps``)."""
    nested = _nested(config)
    flat: dict[str, Any] = {"seed": nested.pop("seed")}
    for section, values in nested.items():
        for k, v in values.items():
            flat[f"{section}.{k}"] = list(v) if isinstance(v, tuple) else v
    return flat


def non_default(config: Config) -> dict[str, Any]:
    """The flat keys whose values differ from the schema's defaults (derived keys aside);
    a variant's knobs against its knobs dataclass's defaults.

    Run ids hash this, so a field added later with a default that keeps the old
    behaviour leaves every existing run id (and run folder) valid.
    """
    flat, default = flatten(config), flatten(Config())
    defaults = _knob_items(tuple((n, type(k)()) for n, k in config.model.variants))
    default.update({f"model.{k}": list(v) if isinstance(v, tuple) else v
                    for k, v in defaults.items()})
    return {k: v for k, v in flat.items() if k not in DERIVED_KEYS and default.get(k) != v}
