"""Metric writers: every logged row goes to ``metrics.jsonl`` (the run folder's record,
which reports read) and, unless ``train.tensorboard=false``, to TensorBoard event files
in the run folder, so ``tensorboard --logdir results/NAME/runs`` compares a grid's runs.

The event file also holds the run's config in the format of TensorBoard's HParams
plugin (a session start with every config key, a session end with the outcome), so
that the HParams tab shows a grid as a table of configs against final metrics.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from suite.config import Config, flatten
from suite.training.run_folder import MetricsLog

HParams = dict[str, str | float | bool]


def hparams(config: Config) -> HParams:
    """The config as TensorBoard hparams: its flat keys (``model.num_latents``); lists
    and tables as JSON text, since hparams are numbers, strings or booleans; keys set to
    None left out, since TensorBoard has no null."""
    out: HParams = {}
    for key, value in flatten(config).items():
        if value is None:
            continue
        out[key] = value if isinstance(value, str | bool | int | float) else json.dumps(value)
    return out


class JsonlWriter:
    def __init__(self, log: MetricsLog):
        self.log = log

    def write(self, row: dict[str, Any]) -> None:
        self.log.append(row)

    def end(self, status: str) -> None:
        pass  # summary.json says how the run ended

    def close(self) -> None:
        pass


class TensorBoardWriter:
    """Scalars as TensorBoard events. A resumed run hides the events past its restored
    step (TensorBoard's purge step), as ``metrics.jsonl`` drops those lines.

    With ``config_hparams``, the run's config goes into the same event file as its
    scalars, as the HParams plugin's session start. The plugin reads a session's metric
    values from the scalars of its own run (the last value of each tag, which for
    ``eval/*``, ``train_eval/*`` and ``train/*`` is the summary's final metric), so they
    are not written twice. No experiment summary is written: the plugin takes the first
    one it finds for the whole log directory, while without one it builds the table
    from every run's session (each key's values, every metric tag).
    """

    def __init__(self, logdir: Path, start_step: int, config_hparams: HParams | None = None):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(logdir), purge_step=start_step + 1,
                                    flush_secs=30)
        self.step = start_step
        if config_hparams is not None:
            from tensorboardX.summary import hparams as hparams_summaries

            _, session_start, _ = hparams_summaries(config_hparams, {})
            self.writer.file_writer.add_summary(session_start, start_step)

    def write(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.step = step

    def end(self, status: str) -> None:
        """The HParams session's end: success for a completed run, failure otherwise."""
        from tensorboardX.proto.api_pb2 import Status
        from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
        from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

        end = SessionEndInfo(status=Status.Value(
            "STATUS_SUCCESS" if status == "completed" else "STATUS_FAILURE"))
        content = HParamsPluginData(session_end_info=end, version=0).SerializeToString()
        metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
            plugin_name="hparams", content=content))
        self.writer.file_writer.add_summary(Summary(value=[Summary.Value(
            tag="_hparams_/session_end_info", metadata=metadata)]), self.step)

    def close(self) -> None:
        self.writer.close()


class Writers:
    """Fan a row out to every writer."""

    def __init__(self, *writers: JsonlWriter | TensorBoardWriter):
        self.writers = writers

    def write(self, row: dict[str, Any]) -> None:
        for w in self.writers:
            w.write(row)

    def end(self, status: str) -> None:
        for w in self.writers:
            w.end(status)

    def close(self) -> None:
        for w in self.writers:
            w.close()
