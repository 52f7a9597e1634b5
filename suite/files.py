"""Run-folder files written atomically (temp file, fsync, rename, fsync of the folder):
a reader sees the old file or the new one, never half, even after a power cut.

Kept by hand: the ``atomicwrites`` package is archived, and this is a dozen lines.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from suite.errors import SuiteError

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would create it, not mkstemp's 0600
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX: the directory entry needs its own fsync)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that should hold an object (a run's config.json, summary.json): the
    object, or a :class:`SuiteError` naming the file and what it holds instead."""
    try:
        found = read_json(path)
    except (OSError, ValueError) as e:
        detail = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise SuiteError(f"{path}: not readable JSON ({detail})") from None
    if not isinstance(found, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(found), "a number")
        shown = repr(found)
        raise SuiteError(f"{path}: holds {kind} ({shown if len(shown) <= 60 else shown[:57]}"
                         f"{'' if len(shown) <= 60 else '...'}), not an object of keys")
    return found


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line of a file (a torn last line from a crash is skipped)."""
    if not Path(path).exists():
        return []
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one line; it starts on a new line even after a torn one (a kill mid-write)."""
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        torn = False
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        f.write((("\n" if torn else "") + json.dumps(row, default=_jsonable) + "\n").encode())
        f.flush()


def drop_torn_line(path: Path) -> int:
    """Cut a trailing fragment without a newline (a kill or a full disk mid-write) off a
    JSON-lines file; the number of bytes dropped (0 if the file ends cleanly)."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data[: data.rfind(b"\n") + 1]
    write_text_atomic(path, keep.decode("utf-8", errors="replace"))
    return len(data) - len(keep)


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, tuple | set):
        return list(x)
    raise TypeError(f"not JSON serialisable: {type(x)}")
