"""Arrays and choices a user hands to ``predict`` and ``attention``, checked before any
model is loaded: each mistake is one line naming the file or flag and the value found."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from suite.errors import SuiteError

NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: what a model input can be made of


def read_array(path: Path, flag: str) -> np.ndarray:
    """The numeric array in a ``.npy`` file. Refused, naming ``flag`` and the file: a
    missing or zero-byte file, an ``.npz`` archive, a pickle (object array), strings,
    complex numbers, a scalar and an empty batch."""
    path = Path(path)
    where = f"{flag} {path}"
    if path.is_dir():
        raise SuiteError(f"{where}: a folder; expected a .npy file")
    if not path.is_file():
        raise SuiteError(f"{where}: no such file")
    if path.stat().st_size == 0:
        raise SuiteError(f"{where}: the file is empty (0 bytes); expected a .npy array")
    if zipfile.is_zipfile(path):
        raise SuiteError(f"{where}: an .npz archive; {flag} takes one array in a .npy file "
                         "(np.save, not np.savez)")
    declared_fits(path, where)
    try:
        array = np.load(path, allow_pickle=False)
    except MemoryError:
        raise SuiteError(f"{where}: too large to load into memory") from None
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise SuiteError(f"{where}: holds Python objects (dtype object); expected a "
                             "numeric array") from None
        raise SuiteError(f"{where}: not a readable .npy array ({_first_line(e)})") from None
    except (OSError, EOFError) as e:
        raise SuiteError(f"{where}: not a readable .npy array ({_first_line(e)})") from None
    if not isinstance(array, np.ndarray):
        raise SuiteError(f"{where}: not a .npy array")
    if array.dtype.kind not in NUMERIC_KINDS:
        raise SuiteError(f"{where}: holds {_dtype_name(array.dtype)} values; expected a "
                         "numeric array (integers or floats)")
    if array.ndim == 0:
        raise SuiteError(f"{where}: a scalar; expected an array of examples")
    if array.shape[0] == 0:
        raise SuiteError(f"{where}: an empty batch (shape {list(array.shape)}); expected at "
                         "least one example")
    if array.dtype.kind == "f" and not (finite := np.isfinite(array)).all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise SuiteError(f"{where}: {bad:,} of {array.size:,} values are NaN or infinite; a "
                         "model's outputs on them mean nothing")
    return array


def declared_fits(path: Path, where: str) -> None:
    """The shape and dtype a ``.npy`` header declares fit in the file, checked before
    numpy allocates them: a 512-byte file may declare 10**10 images."""
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read is None:  # version 3.0 (utf-8 field names): numpy's own checks
                return
            shape, _, dtype = read(f, max_header_size=1 << 20)
            room = path.stat().st_size - f.tell()
    except (OSError, ValueError, EOFError):
        return  # not a .npy file: np.load says why
    if dtype.hasobject or dtype.itemsize == 0:
        return
    need = math.prod(shape) * dtype.itemsize
    if need > room:
        raise SuiteError(f"{where}: the header declares shape {list(shape)} of {dtype} "
                         f"({need:,} bytes), but the file holds {room:,} bytes of data")


def batch_of(array: np.ndarray, expected: tuple[int | None, ...], where: str,
             what: str) -> np.ndarray:
    """``array`` as a batch ``[B, *expected]``; one example (``expected``'s shape) gets a
    batch axis. ``None`` in ``expected`` matches any size (images of their own size)."""
    def fits(shape: tuple[int, ...]) -> bool:
        return len(shape) == len(expected) and all(
            e is None or s == e for s, e in zip(shape, expected, strict=True))

    if fits(array.shape):
        array = array[None]
    if not fits(array.shape[1:]):
        dims = ", ".join("any" if e is None else str(e) for e in expected)
        raise SuiteError(f"{where}: shape {list(array.shape)}; expected [B, {dims}] "
                         f"({what})")
    if len(array) == 0:
        raise SuiteError(f"{where}: an empty batch (shape {list(array.shape)})")
    return array


def check_top(top: int, classes: int) -> tuple[int, str | None]:
    """``--top`` as used, and a note when it was clipped to the number of classes."""
    if top <= 0:
        raise SuiteError(f"--top {top}: must be at least 1")
    if top > classes:
        return classes, f"note: --top {top}: the model has {classes} classes; showing all"
    return top, None


def check_positive(value: int, flag: str) -> int:
    if value <= 0:
        raise SuiteError(f"{flag} {value}: must be at least 1")
    return value


def check_example(n: int, count: int, where: str) -> int:
    if not 0 <= n < count:
        raise SuiteError(f"--example {n}: {where} has {count} example"
                         f"{'' if count == 1 else 's'} (0..{count - 1})")
    return n


def check_index(i: int, count: int, flag: str, what: str) -> int:
    """``i`` as an index of ``count`` things (a latent, a cross-attend), else one line."""
    if not 0 <= i < count:
        raise SuiteError(f"{flag} {i}: {what} (0..{count - 1})")
    return i


def value_span(array: np.ndarray) -> tuple[float, float]:
    """The smallest and largest value, NaN-blind (a few NaNs do not hide the range)."""
    finite = np.asarray(array, np.float64)
    return float(np.nanmin(finite)), float(np.nanmax(finite))


def units_note(array: np.ndarray, raw_span: tuple[float, float], where: str,
               units: str) -> str | None:
    """A note when ``--raw`` values do not look like the run's raw units (e.g. digits in
    0..16 where the run reads 0..255): such inputs give confident, wrong labels."""
    lo, hi = value_span(array)
    rlo, rhi = raw_span
    span = max(rhi - rlo, 1e-12)
    if hi - lo < span / 8 or lo < rlo - span / 2 or hi > rhi + span / 2:
        return (f"note: {where}: values span {lo:g}..{hi:g}, the run's raw inputs "
                f"{rlo:g}..{rhi:g} ({units}); predictions of inputs in other units are wrong")
    return None


def normalised_note(array: np.ndarray, where: str) -> str | None:
    """A note when ``--inputs`` look raw (integers, or far from zero mean, unit scale)."""
    lo, hi = value_span(array)
    mean = float(np.nanmean(np.asarray(array, np.float64)))
    if array.dtype.kind in "biu" or abs(mean) > 5 or hi - lo > 100:
        return (f"note: {where}: values span {lo:g}..{hi:g} ({array.dtype}); --inputs takes "
                "arrays normalised as the run's pipeline does; --raw takes them in the "
                "task's own units and normalises them")
    return None


def _dtype_name(dtype: np.dtype) -> str:
    return {"U": "string", "S": "bytes", "O": "object", "c": "complex", "V": "structured",
            "M": "datetime", "m": "timedelta"}.get(dtype.kind, str(dtype))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
