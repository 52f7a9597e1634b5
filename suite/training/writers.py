"""Metric writers: every logged row goes to ``metrics.jsonl`` (the run folder's record,
which reports read) and, unless ``train.tensorboard=false``, to TensorBoard event files
in the run folder, so ``tensorboard --logdir results/NAME/runs`` compares a grid's runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from suite.training.run_folder import MetricsLog


class JsonlWriter:
    def __init__(self, log: MetricsLog):
        self.log = log

    def write(self, row: dict[str, Any]) -> None:
        self.log.append(row)

    def close(self) -> None:
        pass


class TensorBoardWriter:
    """Scalars as TensorBoard events. A resumed run hides the events past its restored
    step (TensorBoard's purge step), as ``metrics.jsonl`` drops those lines."""

    def __init__(self, logdir: Path, start_step: int):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(logdir), purge_step=start_step + 1,
                                    flush_secs=30)

    def write(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class Writers:
    """Fan a row out to every writer."""

    def __init__(self, *writers: JsonlWriter | TensorBoardWriter):
        self.writers = writers

    def write(self, row: dict[str, Any]) -> None:
        for w in self.writers:
            w.write(row)

    def close(self) -> None:
        for w in self.writers:
            w.close()
