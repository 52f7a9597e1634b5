"""Video files, decoded with PyAV (FFmpeg in its wheel) one file at a time in the loader,
like the image folders: memory is bounded by the prefetch buffer, not the data set.

A file decodes to at most ``MAX_FRAMES`` frames, converted to uint8 RGB ``[h, w, 3]``
with the shorter side resized to the clip's size / 0.875 (the room the crops need) only
when a clip picks them: conversion costs 5-30x the decoding. A clip
is ``T`` frames every ``data.frame_stride`` (training: from a random offset; evaluation:
the centre), a shorter file padded by repeating its last frame; its frames share one
spatial crop: a random-resized crop and flip in training, the centre crop otherwise.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from suite.data import extras, images
from suite.errors import DataError

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".gif")
MAX_FRAMES = 512  # decoded per file at most: ~10 s at 50 fps


def decode(path: Path, size: tuple[int, int], max_frames: int = MAX_FRAMES,
           fps: float = 0.0) -> Frames:
    """A file's frames (at most ``max_frames`` decoded), to be converted to RGB with the
    shorter side ``max(size) / 0.875`` when picked; at ``fps`` frames per second if given
    (each time step takes the frame shown then), else the file's own. A DataError naming
    the file when it does not decode (truncated, not a video, no video stream)."""
    av = extras.module("video")
    short = int(round(max(size) / images.EVAL_CROP))
    frames, times = [], []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0) or None
            for frame in container.decode(video=0):
                frames.append(frame)
                times.append(frame.time)
                if len(frames) >= max_frames:
                    break
    except DataError:
        raise
    except Exception as e:  # av.FFmpegError and its kin, OSError, ValueError
        raise DataError(f"{path}: not a readable video ({type(e).__name__}: {e})") from None
    if not frames:
        raise DataError(f"{path}: not a readable video (no frames decode)")
    if fps and None not in times and len(frames) > 1:
        t = np.asarray(times, np.float64) - times[0]
        steps = np.arange(int(np.floor(t[-1] * fps + 1e-6)) + 1) / fps
        frames = [frames[i] for i in np.searchsorted(t, steps + 1e-6, side="right") - 1]
    scale = short / min(frames[0].height, frames[0].width)
    return Frames(frames, max(1, round(frames[0].width * scale)),
                  max(1, round(frames[0].height * scale)), path,
                  source=(frames[0].width, frames[0].height, rate, len(times)))


_local = threading.local()


def _reformatter():
    """One swscale context per thread, reused across frames: a fresh one per frame (what
    ``VideoFrame.to_ndarray(width=...)`` makes) costs 5x the conversion itself."""
    if not hasattr(_local, "reformatter"):
        from av.video.reformatter import VideoReformatter

        _local.reformatter = VideoReformatter()
    return _local.reformatter


class Frames:
    """A decoded file's frames, converted to ``[h, w, 3]`` uint8 RGB at one size only when
    indexed: the conversion and resize cost far more than the decoding, and a clip takes
    a few of a file's frames."""

    def __init__(self, frames: list, width: int, height: int, path: Path,
                 source: tuple[int, int, float | None, int] | None = None):
        self.frames, self.width, self.height, self.path = frames, width, height, path
        self.source = source  # the file's width, height, frame rate and decoded frames

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.frames), self.height, self.width, 3)

    def __getitem__(self, idx) -> np.ndarray:
        picked = np.arange(len(self.frames))[idx]
        if np.ndim(picked) == 0:
            return self._rgb(int(picked))
        return np.stack([self._rgb(int(i)) for i in picked]).reshape(
            (*np.shape(picked), self.height, self.width, 3))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def _rgb(self, i: int) -> np.ndarray:
        try:
            return _reformatter().reformat(self.frames[i], width=self.width,
                                           height=self.height, format="rgb24").to_ndarray()
        except Exception as e:  # a frame that decoded but does not convert
            raise DataError(f"{self.path}: frame {i} does not convert to RGB "
                            f"({type(e).__name__}: {e})") from None


def decode_error(path: Path, size: tuple[int, int]) -> str | None:
    try:
        decode(path, size, max_frames=2)
    except DataError as e:
        return str(e)
    return None


class VideoFiles:
    """A lazy ``[n, T, H, W, 3]`` uint8 "array" of video files: an int index decodes one
    file (its :class:`Frames`); a slice or index array selects files."""

    dtype = np.dtype(np.uint8)
    ndim = 5
    channels = 3

    def __init__(self, paths: list[Path], dims: tuple[int, int, int], fps: float = 0.0,
                 stride: int = 1):
        self.paths, self.dims, self.fps, self.stride = list(paths), tuple(dims), fps, stride

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), *self.dims, 3)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx):
        if isinstance(idx, int | np.integer):
            return decode(self.paths[int(idx)], self.dims[1:], fps=self.fps)
        picked = np.arange(len(self.paths))[idx]
        return VideoFiles([self.paths[i] for i in picked], self.dims, self.fps, self.stride)

    def check(self, i: int) -> str | None:
        """Why file ``i`` does not decode, or None if it does."""
        return decode_error(self.paths[i], self.dims[1:])

    def error(self, i: int) -> str:
        return self.check(i) or "unreadable in the loader"

    def survey(self, limit: int = 16) -> str:
        """What the loader does to these files, from up to ``limit`` of them: their sizes,
        frame rates and lengths, and the resize, crop, resampling and padding to a clip."""
        picks = np.linspace(0, len(self) - 1, min(limit, len(self))).astype(int)
        seen = []
        for i in picks:
            try:
                seen.append(decode(self.paths[int(i)], self.dims[1:], fps=self.fps))
            except DataError:
                continue
        if not seen:
            return f"none of {len(picks)} sampled files decodes"
        t, (h, w) = self.dims[0], self.dims[1:]
        sizes = sorted({f"{f.source[0]}x{f.source[1]}" for f in seen})
        rates = sorted({f"{f.source[2]:g}" for f in seen if f.source[2]})
        def span(values: list[int]) -> str:
            return f"{min(values)}" if min(values) == max(values) else \
                f"{min(values)}-{max(values)}"

        need = (t - 1) * self.stride + 1
        short = sum(len(f) < need for f in seen)
        length = span([f.source[3] for f in seen]) + " frames" + (
            f" ({span([len(f) for f in seen])} at {self.fps:g} fps)" if self.fps else "")
        text = (f"{len(seen)} sampled: {', '.join(sizes[:3])}{' ...' if len(sizes) > 3 else ''}"
                f" at {', '.join(rates[:3]) or '?'} fps, {length}; "
                f"shorter side resized to {min(seen[0].height, seen[0].width)}, {h}x{w} crops "
                f"(centre in eval, random-resized in training); clips of {t} frames every "
                f"{self.stride}")
        text += (f" at {self.fps:g} fps (resampled)" if self.fps
                 else " at each file's own rate (data.fps resamples)")
        if short:
            text += f"; {short} of {len(seen)} shorter than {need} frames: last frame repeated"
        return text

    def stats(self, limit: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std of the centre clips of up to ``limit`` files."""
        picks = np.linspace(0, len(self) - 1, min(limit, len(self))).astype(int)
        clips = []
        for i in picks:
            try:
                clips.append(clip(self[int(i)], self.dims, 1, None))
            except DataError:
                continue
        if not clips:
            raise DataError(f"{self.paths[0].parent}: none of {len(picks)} sampled video "
                            "files decodes")
        pixels = np.concatenate([c.reshape(-1, 3) for c in clips]).astype(np.float64)
        return pixels.mean(axis=0), np.maximum(pixels.std(axis=0), 1e-6)


def clip(frames: np.ndarray | Frames, dims: tuple[int, int, int], stride: int,
         rng: np.random.Generator | None, augment: bool = False) -> np.ndarray:
    """``T`` frames every ``stride`` of a decoded file, one crop for all: ``[T, H, W, 3]``
    float32 (evaluation, the official centre crop) or uint8 (training crops)."""
    t, size = dims[0], dims[1:]
    need = (t - 1) * stride + 1
    spare = max(0, len(frames) - need)
    start = int(rng.integers(0, spare + 1)) if rng is not None else spare // 2
    picked = [min(start + i * stride, len(frames) - 1) for i in range(t)]  # pad: the last
    chosen = frames[picked]
    if rng is None or not augment:
        return np.stack([images.center_crop(f, size) for f in chosen])
    box = images.crop_box(*chosen.shape[1:3], rng)
    flip = rng.random() < 0.5
    out = []
    for f in chosen:
        if box is None:
            g = np.clip(np.rint(images.center_crop(f, size)), 0, 255).astype(np.uint8)
        else:
            top, left, ch, cw = box
            g = images.resize(f[top:top + ch, left:left + cw], size)
        out.append(g[:, ::-1] if flip else g)
    return np.stack(out)
