"""Named starting configs: the paper's ImageNet, ModelNet40 and AudioSet settings, and
small CPU-sized Perceivers for the bundled and procedural data sets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from suite.config.schema import Config, DataConfig, ModelConfig, TrainConfig
from suite.config.validation import resolve
from suite.errors import ConfigError


def _imagenet() -> Config:
    # Paper Tables 6/7: 44.9M parameters, 707.2 GFLOPs.
    return Config(
        model=ModelConfig(fourier_bands=64),
        data=DataConfig(task="imagenet", augment=True, randaugment_layers=4,
                        randaugment_magnitude=5),  # paper: RandAugment, 4 layers, magnitude 5
        train=TrainConfig(
            optimizer="lamb", learning_rate=4e-3, schedule="step", batch_size=64, steps=120 * 20_000
        ),
    )


def _imagenet_io() -> Config:
    # Perceiver IO (arXiv 2107.14795, Table 7 "config A"; [DM] imagenet_classification
    # colab and train/experiment.py): one cross-attend, 8 blocks of 6 shared
    # self-attends, a query decoder with a residual; 48.4M parameters, 407B FLOPs.
    # LAMB at 5e-4 x batch/256, half constant then cosine, weight decay 0.1, clip 10,
    # label smoothing 0.1, RandAugment 4 x 5, CutMix and MixUp 0.2, 110 epochs.
    batch = 64
    return Config(
        model=ModelConfig(fourier_bands=64, num_cross_attends=1, decoder="query",
                          decoder_query_residual=True),
        data=DataConfig(task="imagenet", augment=True, randaugment_layers=4,
                        randaugment_magnitude=5, mixup=0.2, cutmix=0.2,
                        normalization="imagenet"),
        train=TrainConfig(optimizer="lamb", learning_rate=5e-4 * batch / 256,
                          schedule="constant_cosine", weight_decay=0.1, grad_clip=10.0,
                          label_smoothing=0.1, batch_size=batch,
                          steps=110 * 1_281_167 // batch),
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
        data=DataConfig(task="audioset", sample_rate=48_000),  # 61,440 samples: 1.28 s
        train=TrainConfig(
            optimizer="lamb", learning_rate=4e-3, schedule="constant", loss="sigmoid"
        ),
    )


def _audioset_av() -> Config:
    # Paper 4.2 / Table 3, audio+video: 32 frames of 224x224 in 2x8x8 space-time patches
    # (12,544 inputs, 1.28 s at 25 fps) and 61,440 raw samples at 48 kHz in 128-sample
    # patches (480), 64
    # bands per dimension (IO paper App. G); 2 cross-attends, 8 self-attends per block, no
    # sharing, sigmoid loss, 527 classes; 30% per-example video dropout in training.
    return Config(
        model=ModelConfig(num_blocks=2, self_attends_per_block=8, num_cross_attends=2,
                          weight_sharing=False, fourier_bands=64),
        data=DataConfig(task="av_manifest", num_classes=527, sample_rate=48_000, fps=25.0,
                        modality_dims=(("audio", (61_440,)), ("video", (32, 224, 224))),
                        patch_size=(("audio", (128,)), ("video", (2, 8, 8))),
                        modality_dropout=(("video", 0.3),)),
        train=TrainConfig(optimizer="lamb", learning_rate=4e-3, schedule="constant",
                          loss="sigmoid"),
    )


def _small(task: str, train: dict[str, Any] | None = None, **model: Any
           ) -> Callable[[], Config]:
    """A CPU-sized Perceiver: 64x128 latents, 2 blocks of 2 self-attends, 2 cross-attends."""

    def make() -> Config:
        m = dict(
            num_latents=64, latent_dim=128, num_blocks=2, self_attends_per_block=2,
            num_cross_attends=2, self_heads=4, fourier_bands=8,
        )
        m.update(model)
        t = dict(optimizer="lamb", learning_rate=2e-3, schedule="constant_cosine",
                 batch_size=64, steps=600, weight_decay=1e-2, grad_clip=10.0, eval_every=200,
                 checkpoint_every=200, log_every=25)
        t.update(train or {})
        return Config(model=ModelConfig(**m), data=DataConfig(task=task, **PATCHES.get(task, {})),
                      train=TrainConfig(**t))

    return make


PATCHES: dict[str, dict[str, Any]] = {  # the small video and audio+video presets' patches
    "shape_tone": {"patch_size": (("audio", (64,)), ("video", (2, 4, 4)))},
    "video_folder": {"patch_size": (2, 8, 8)},
    "av_manifest": {"patch_size": (("audio", (250,)), ("video", (2, 8, 8)))},
}

PRESETS: dict[str, Callable[[], Config]] = {
    "imagenet": _imagenet,
    "imagenet_io": _imagenet_io,
    "modelnet40": _modelnet40,
    "audioset": _audioset,
    "digits": _small("digits", num_latents=32, latent_dim=64, fourier_bands=4),
    # Sized for a 2-core CPU (about 250 examples/s): 500 steps of 32 are a quarter epoch
    # (about 79% eval accuracy); AdamW trains faster than LAMB at this batch size.
    "fashion_mnist": _small("fashion_mnist", latent_dim=64,
                            train={"optimizer": "adamw", "learning_rate": 2e-3,
                                   "weight_decay": 1e-4, "batch_size": 32, "steps": 500,
                                   "eval_every": 250, "checkpoint_every": 250}),
    "mnist": _small("mnist"),
    "cifar10": _small("cifar10", fourier_bands=16),
    "mnist1d": _small("mnist1d", num_latents=32, latent_dim=64, fourier_bands=16),
    "wav_manifest": _small("wav_manifest", num_latents=32, latent_dim=64, fourier_bands=16,
                           train={"loss": "sigmoid"}),  # several labels per clip
    "shapes3d": _small("shapes3d", num_latents=32, latent_dim=64, fourier_bands=16),
    # Audio+video on a 2-core CPU: 8 frames of 16x16 in 2x4x4 patches (64 inputs) and
    # 4,096 samples at 16 kHz in 64-sample patches (64); 8 bands per dimension.
    "shape_tone": _small("shape_tone", num_latents=32, latent_dim=64, fourier_bands=8,
                         train={"optimizer": "adamw", "learning_rate": 1e-3,
                                "weight_decay": 1e-4, "batch_size": 32, "steps": 400,
                                "eval_every": 200, "checkpoint_every": 200}),
    "video_folder": _small("video_folder", num_latents=32, latent_dim=64, fourier_bands=8,
                           train={"batch_size": 16, "steps": 300}),
    "av_manifest": _small("av_manifest", num_latents=32, latent_dim=64, fourier_bands=8,
                          train={"loss": "sigmoid", "batch_size": 16, "steps": 300}),
    "audioset_av": _audioset_av,
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



def table() -> str:
    """One row per preset: task, latents, blocks, cross-attends, sharing, in aligned
    columns (tabulate measures them, so a long name never shifts the next row)."""
    from tabulate import tabulate

    rows = []
    for name in PRESETS:
        c = preset(name)
        m, d = c.model, c.data
        rows.append([name, d.task, m.kind, f"{m.num_latents} x {m.latent_dim}",
                     f"{m.num_blocks} x {m.self_attends_per_block}", m.num_cross_attends,
                     str(m.weight_sharing).lower()])
    return tabulate(rows, headers=["preset", "task", "model", "latents N x D",
                                   "blocks x layers", "cross-attends", "sharing"],
                    tablefmt="simple", disable_numparse=True)
