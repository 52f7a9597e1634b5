"""How inputs reach the model: one input grid, or one per modality, each perhaps cut into
patches. The model, its FLOP count and the memory plan read these, not the raw fields.

A layout's ``dims`` are the grid as loaded (``[T, H, W]`` video, ``[samples]`` audio,
``[frames, mels]`` a mel spectrogram) and ``channels`` its values per item; with
``patch``, the model sees the patch grid (``dims // patch``) with ``channels x
prod(patch)`` values per item, positions on the patch grid.
"""

from __future__ import annotations

import dataclasses
import math

from suite.config.tables import table_get
from suite.tasks import TASKS


@dataclasses.dataclass(frozen=True)
class Layout:
    name: str  # "inputs" for one modality, else the modality ("audio", "video")
    dims: tuple[int, ...]
    channels: int
    patch: tuple[int, ...] | None = None

    @property
    def grid(self) -> tuple[int, ...]:
        """The grid the model sees: the patch grid, or the input grid."""
        if not self.patch:
            return self.dims
        return tuple(n // p for n, p in zip(self.dims, self.patch, strict=True))

    @property
    def items(self) -> int:
        return math.prod(self.grid)

    @property
    def item_channels(self) -> int:
        return self.channels * (math.prod(self.patch) if self.patch else 1)


def audio_dims(data, samples: int) -> tuple[tuple[int, ...], int]:
    """An audio modality's grid and channels: raw samples ``[samples]`` x 1, or a log-mel
    spectrogram ``[frames, mels]`` x 1 (hop 10 ms at the sample rate, 64 bands)."""
    if data.audio_features == "mel":
        return (1 + samples // mel_hop(data), MEL_BINS), 1
    return (samples,), 1


MEL_BINS = 64


def mel_hop(data) -> int:
    return max(1, data.sample_rate // 100)


def layouts(config) -> tuple[Layout, ...]:
    """Every input of ``config``'s model, in the order they are concatenated (modalities
    sorted by name, as the official MultimodalPreprocessor orders them)."""
    d = config.data
    if not d.modalities:
        patch = d.patch_size if not _is_table(d.patch_size) else None
        return (Layout("inputs", tuple(d.index_dims), d.channels, patch),)
    info = dict(TASKS[d.task].modalities)
    out = []
    for name in sorted(d.modalities):
        dims, channels = table_get(d.modality_dims, name) or info[name][0], info[name][1]
        if name == "video" and d.frames:
            dims = (d.frames, *dims[1:])
        if name == "audio":
            dims, channels = audio_dims(d, dims[0])
        patch = table_get(d.patch_size, name) if _is_table(d.patch_size) else None
        out.append(Layout(name, tuple(dims), channels, patch))
    return tuple(out)


def _is_table(value) -> bool:
    from suite.config.tables import is_table_value

    return is_table_value(value)
