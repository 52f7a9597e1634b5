"""Unreadable files met by a run (``data.bad_examples="skip"``): each named once, in the
log, when first met; counted; kept in the checkpoint so a resumed run counts on; and a
stop once a split has more of them than both ``data.max_bad_fraction`` of its files and
``data.max_bad_files``: the share catches a broken data set, the count spares a small
folder with one bad file (1 of 30 is 3%, over a 1% share).

Training replaces an unreadable example by the split's next readable one (the loader
does, deterministically); evaluation leaves it out (weight 0). Files a reader drops
while loading a split into memory (WAV clips) are counted here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from suite.config import DataConfig
from suite.data.multimodal import streamed_files
from suite.data.sources import Split
from suite.errors import DataError

SHOWN = 20  # paths kept in summary.json


class BadData(DataError):
    """More of a split's files are unreadable than ``data.max_bad_fraction`` and
    ``data.max_bad_files`` allow."""


class SkipLog:
    """``{path: (split, reason)}`` of the unreadable files met, and the examples they cost."""

    def __init__(self, cfg: DataConfig, log: Callable[[str], None]):
        self.cfg, self.log = cfg, log
        self.files: dict[str, tuple[str, str]] = {}
        self.examples = 0  # training examples replaced, evaluation examples left out
        self.sizes: dict[str, int] = {}  # files per split, from the first split of that name

    def dropped(self, split: Split, name: str) -> None:
        """Files a reader dropped while loading ``split`` (``Split.skipped``)."""
        for path, reason in split.skipped:
            self._new(str(path), name, reason, "left out of the split")
        self.check(split, name)

    def note(self, split: Split, bad: np.ndarray | None, name: str) -> None:
        """A batch's ``bad`` column (``pipeline.pop_bad``) from ``split``. The share of bad
        files is of the first split noted under ``name`` (the whole training split, not the
        training subset ``train_eval/`` evaluates)."""
        self.sizes.setdefault(name, len(split) + len(split.skipped))
        if bad is None or not (bad >= 0).any():
            return
        files = streamed_files(split)  # image or video files (a modality's, with several)
        for i in bad[bad >= 0]:
            self.examples += 1
            path = str(files.paths[int(i)])
            if path not in self.files:
                self._new(path, name, files.error(int(i)),
                          "the next readable example stands in" if name == "train" else
                          "left out of the metric")
        self.check(split, name)

    def _new(self, path: str, name: str, reason: str, what: str) -> None:
        self.files[path] = (name, reason)
        self.log(f"skipped an unreadable {name} file, {what}: {reason}")

    def check(self, split: Split, name: str) -> None:
        """Stop (:class:`BadData`) once the split's unreadable files pass both limits."""
        bad = sum(1 for s, _ in self.files.values() if s == name)
        total = self.sizes.setdefault(name, len(split) + len(split.skipped))
        if total and bad / total > self.cfg.max_bad_fraction and bad > self.cfg.max_bad_files:
            first = next(reason for s, reason in self.files.values() if s == name)
            raise BadData(
                f"{bad} of the {total} {name} files are unreadable ({bad / total:.1%}, over "
                f"data.max_bad_fraction={self.cfg.max_bad_fraction:g} and "
                f"data.max_bad_files={self.cfg.max_bad_files}); the first: {first}; "
                f"list them all with: perceiver-suite data {self.cfg.task} --verify"
                + (f" data.data_dir={self.cfg.data_dir}" if self.cfg.data_dir else ""))

    def state(self) -> dict[str, Any]:
        return {"files": [[p, s, r] for p, (s, r) in self.files.items()],
                "examples": self.examples}

    def restore(self, state: dict[str, Any] | None) -> None:
        if state:
            self.files = {p: (s, r) for p, s, r in state.get("files", [])}
            self.examples = int(state.get("examples", 0))

    def summary(self) -> dict[str, Any]:
        """``summary.json``'s ``data_skipped``: the files, the examples, the first paths."""
        return {"files": len(self.files), "examples": self.examples,
                "paths": list(self.files)[:SHOWN],
                "reasons": [r for _, r in list(self.files.values())[:SHOWN]]}
