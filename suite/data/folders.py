"""Class-folder readers: one sub-folder of PNG/JPEG images or WAV files per class,
optionally split into ``train/`` and ``val/`` (or ``test/``)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from suite.config import DataConfig
from suite.data import extras
from suite.data.images import ImageFiles, decode_error
from suite.data.sources import Split, data_dir, holdout, missing_error
from suite.errors import DataError


def _class_folders(root: Path, cfg: DataConfig, exts: tuple[str, ...]) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise missing_error(cfg, "directory", root)
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise missing_error(cfg, "class sub-folders", root)
    out = {}
    for c in classes:
        files = sorted(p for p in c.iterdir() if p.suffix.lower() in exts)
        if not files:
            raise DataError(f"{c}: empty class folder (expected {', '.join(exts)} files)")
        out[c.name] = files
    return out


def folder_splits(cfg: DataConfig, exts: tuple[str, ...], read) -> tuple[Split, Split]:
    """``read(files, classes, cfg) -> Split`` for train/ and val/ (or one folder held out)."""
    root = data_dir(cfg)
    train_dir = root / "train"
    eval_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if train_dir.is_dir() and eval_dir is not None:
        train_files = _class_folders(train_dir, cfg, exts)
        classes = list(train_files)
        eval_files = _class_folders(eval_dir, cfg, exts)
        unknown = set(eval_files) - set(classes)
        if unknown:
            raise DataError(f"{eval_dir}: classes {sorted(unknown)} are not in {train_dir}")
        return read(train_files, classes, cfg), read(eval_files, classes, cfg)
    if train_dir.is_dir():  # train/ without val/: hold out from train/, not a class "train"
        root = train_dir
    files = _class_folders(root, cfg, exts)
    return holdout(read(files, list(files), cfg), cfg.eval_fraction)


def labelled(files: dict[str, list[Path]], classes: list[str],
              cfg: DataConfig) -> tuple[list[Path], np.ndarray]:
    if len(classes) > cfg.num_classes:
        raise DataError(
            f"{len(classes)} class folders but data.num_classes={cfg.num_classes}; "
            f"set data.num_classes={len(classes)}"
        )
    paths = [p for name in files for p in files[name]]
    labels = [classes.index(name) for name in files for _ in files[name]]
    return paths, np.asarray(labels, dtype=np.int32)


def _stream_images(files: dict[str, list[Path]], classes: list[str], cfg: DataConfig) -> Split:
    paths, labels = labelled(files, classes, cfg)
    sample = paths[:: max(1, len(paths) // 16)][:16]  # fail now, not mid-run, on a wrong folder
    errors = [e for e in map(lambda p: decode_error(p, cfg.channels), sample) if e]
    if errors and (cfg.bad_examples == "fail" or len(errors) == len(sample)):
        raise DataError(errors[0] if cfg.bad_examples == "fail" else
                        f"none of {len(sample)} sampled files decodes; the first: {errors[0]}")
    return Split(ImageFiles(paths, cfg.index_dims, cfg.channels), labels)


def image_folder(cfg: DataConfig) -> tuple[Split, Split]:
    """One folder per class of PNG/JPEG files, streamed: decoded per example in the loader
    (random-resized crops for training, centre crops for evaluation; see ``images``)."""
    if len(cfg.index_dims) != 2 or cfg.channels not in (1, 3):
        raise DataError(
            f"{cfg.task}: data.index_dims={list(cfg.index_dims)} and data.channels={cfg.channels} "
            "must describe an image (2 dims, 1 or 3 channels)"
        )
    return folder_splits(cfg, (".png", ".jpg", ".jpeg"), _stream_images)


def _read_wavs(files: dict[str, list[Path]], classes: list[str], cfg: DataConfig) -> Split:
    paths, labels = labelled(files, classes, cfg)
    return read_clips(paths, labels, cfg)


def read_clips(paths: list[Path], labels: np.ndarray, cfg: DataConfig) -> Split:
    """WAV clips into memory, resampled to ``data.sample_rate`` and cut or zero-padded to
    the input's samples (``Split.notes`` says how many were). An unreadable one is a
    :class:`DataError` under ``data.bad_examples="fail"``; under ``"skip"`` it is left out
    and recorded in ``Split.skipped`` (the trainer names and counts it)."""
    n = int(np.prod(cfg.index_dims)) * cfg.channels
    audio, kept, skipped, notes = [], [], [], ClipNotes(cfg.sample_rate, n)
    for i, path in enumerate(paths):
        try:
            x = read_wav(path, cfg.sample_rate, notes)
        except DataError as e:
            if cfg.bad_examples == "fail":
                raise
            skipped.append((str(path), str(e)))
            continue
        out = np.zeros(n, dtype=np.float32)  # samples in order: AudioSet's 480 x 128 too
        out[: min(n, len(x))] = x[:n]
        audio.append(out.reshape(*cfg.index_dims, cfg.channels))
        kept.append(i)
    if not audio:
        raise DataError(f"none of the {len(paths)} clips reads; the first: "
                        f"{skipped[0][1] if skipped else 'no clips listed'}")
    return Split(np.stack(audio), labels[kept], None, tuple(skipped), notes.lines())


class ClipNotes:
    """What reading did to audio clips: which rates were resampled, how many clips were
    cut or zero-padded to the input's samples (for ``perceiver-suite data`` to say)."""

    def __init__(self, rate: int, samples: int):
        self.rate, self.samples = rate, samples
        self.rates: dict[int, int] = {}
        self.short = self.long = 0

    def add(self, source_rate: int, samples: int) -> None:
        self.rates[source_rate] = self.rates.get(source_rate, 0) + 1
        self.short += samples < self.samples
        self.long += samples > self.samples

    def lines(self) -> tuple[str, ...]:
        if not self.rates:
            return ()
        total = sum(self.rates.values())
        rates = ", ".join(f"{k} at {r:,} Hz" for r, k in sorted(self.rates.items()))
        moved = sum(k for r, k in self.rates.items() if r != self.rate)
        return (f"audio: {total:,} clips ({rates}); {moved:,} resampled to {self.rate:,} Hz "
                f"(data.sample_rate), {self.short:,} shorter than {self.samples:,} samples "
                f"zero-padded, {self.long:,} longer cut",)


def read_pcm(path: Path) -> tuple[np.ndarray, int]:
    """A PCM WAV as mono float32 in [-1, 1], and its sample rate."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, frames = w.getsampwidth(), w.getnchannels(), w.getnframes()
            rate, raw = w.getframerate(), w.readframes(frames)
    except (wave.Error, EOFError, OSError) as e:
        raise DataError(f"{path}: not a readable PCM WAV file ({e})") from None
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}.get(width)
    if dtype is None:
        raise DataError(f"{path}: {8 * width}-bit samples are not supported (8, 16 or 32-bit PCM)")
    x = np.frombuffer(raw[: len(raw) - len(raw) % (width * channels)], dtype=dtype)
    x = x.reshape(-1, channels).mean(axis=1)
    x = (x - 128.0) / 128.0 if dtype is np.uint8 else x / float(np.iinfo(dtype).max)
    return x.astype(np.float32), rate


def read_wav(path: Path, rate: int, notes: ClipNotes | None = None) -> np.ndarray:
    """A PCM WAV as mono float32 in [-1, 1] at ``rate`` Hz (resampled with soxr, through
    librosa, if the file has another)."""
    x, source = read_pcm(path)
    if source != rate:
        librosa = extras.module("audio")
        x = librosa.resample(x, orig_sr=source, target_sr=rate)
    if notes is not None:
        notes.add(source, len(x))
    return x.astype(np.float32)


def wav_folder(cfg: DataConfig) -> tuple[Split, Split]:
    """One folder per class of WAV files: 1-D raw audio, ``[n, samples, 1]``."""
    if len(cfg.index_dims) != 1 or cfg.channels != 1:
        raise DataError(f"wav_folder: needs data.index_dims=[samples] and data.channels=1, got "
                        f"{list(cfg.index_dims)} and {cfg.channels}")
    return folder_splits(cfg, (".wav",), _read_wavs)



def wav_manifest(cfg: DataConfig) -> tuple[Split, Split]:
    """Multi-label clips: ``train.csv`` and ``eval.csv`` with a ``path,labels`` header,
    several labels per clip joined by ``;``. The classes are the sorted labels of the
    training manifest; labels become multi-hot vectors ``[n, data.num_classes]``."""
    root = data_dir(cfg)
    manifests = [root / "train.csv", root / "eval.csv"]
    for path in manifests:
        if not path.is_file():
            raise missing_error(cfg, path.name, root)
    rows = [manifest_rows(path) for path in manifests]
    classes = sorted({label for _, labels in rows[0] for label in labels})
    if len(classes) > cfg.num_classes:
        raise DataError(f"{manifests[0]}: {len(classes)} labels but data.num_classes="
                        f"{cfg.num_classes}; set data.num_classes={len(classes)}")
    splits = []
    for path, clips in zip(manifests, rows, strict=True):
        hot = np.zeros((len(clips), cfg.num_classes), np.float32)
        for i, (_, labels) in enumerate(clips):
            unknown = [t for t in labels if t not in classes]
            if unknown:
                raise DataError(f"{path}: label {unknown[0]!r} is not in train.csv")
            hot[i, [classes.index(t) for t in labels]] = 1.0
        splits.append(read_clips([root / clip["path"] for clip, _ in clips], hot, cfg))
    return splits[0], splits[1]


def manifest_rows(path: Path, columns: tuple[str, ...] = ("path",)
                  ) -> list[tuple[dict[str, str], list[str]]]:
    """``({column: file}, labels)`` of each row of a manifest with the header
    ``*columns,labels`` (files relative to the manifest's folder), checked."""
    import csv

    header = ",".join([*columns, "labels"])
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or set((*columns, "labels")) - set(reader.fieldnames):
                raise DataError(f"{path}: expected a '{header}' header, found "
                                f"{reader.fieldnames}")
            rows = []
            for line, r in enumerate(reader, start=2):
                labels = [t.strip() for t in (r["labels"] or "").split(";") if t.strip()]
                files = {c: (r[c] or "").strip() for c in columns}
                empty = [c for c in columns if not files[c]]
                if empty or not labels:
                    name = next((v for v in files.values() if v), "no path")
                    raise DataError(f"{path}: line {line} ({name}) has "
                                    f"{'no labels' if not empty else 'no ' + empty[0]}")
                rows.append((files, labels))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
                        f"{e.start})") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    if not rows:
        raise DataError(f"{path}: lists no clips (a header and nothing under it)")
    return rows
