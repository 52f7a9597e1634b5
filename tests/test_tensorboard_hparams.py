"""Every run puts its config, in the format of TensorBoard's HParams plugin, into its own
event file beside its scalars, so `tensorboard --logdir results/NAME/runs` shows a grid
as a table of configs against final metrics."""

import struct
from pathlib import Path

import pytest
from tensorboardX.proto import event_pb2
from tensorboardX.proto.api_pb2 import Status
from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

from suite import config as C
from suite.training.trainer import train_and_evaluate
from suite.training.writers import TensorBoardWriter, hparams

TINY = {
    "model.num_latents": 8, "model.latent_dim": 16, "model.num_blocks": 2,
    "model.self_heads": 2, "model.fourier_bands": 2, "train.batch_size": 16,
    "train.steps": 10, "train.log_every": 5, "train.checkpoint_every": 10,
}


def events(run_dir):
    """Every event of the run folder's own event files (TFRecords: length, its CRC, the
    event, its CRC), read with the protos tensorboardX ships."""
    found = []
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            n = struct.unpack("<Q", data[i:i + 8])[0]
            found.append(event_pb2.Event.FromString(data[i + 12:i + 12 + n]))
            i += 12 + n + 4
    return found


def plugin_data(run_dir, tag):
    """The HParams plugin's data under ``tag``, each time it was written."""
    return [HParamsPluginData.FromString(v.metadata.plugin_data.content)
            for e in events(run_dir) for v in e.summary.value
            if v.tag == tag and v.metadata.plugin_data.plugin_name == "hparams"]


def last_scalar(run_dir, tag):
    values = [(e.step, v.simple_value) for e in events(run_dir) for v in e.summary.value
              if v.tag == tag]
    return max(values)[1]


def test_a_run_writes_its_config_and_outcome_for_the_hparams_tab(tmp_path):
    config = C.build("digits", TINY)
    summary = train_and_evaluate(config, tmp_path / "run", progress=False, log=lambda m: None)
    assert summary["status"] == "completed"
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.is_dir()) == [
        "checkpoints"]  # no subfolder run of its own, as add_hparams would make

    [start] = plugin_data(tmp_path / "run", "_hparams_/session_start_info")
    values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
              for k, v in start.session_start_info.hparams.items()}
    assert values == hparams(config)
    assert values["model.num_latents"] == 8.0
    assert values["data.task"] == "digits"
    assert values["data.index_dims"] == "[8, 8]"  # a list, as text
    assert values["train.tensorboard"] is True
    assert "train.init_from" not in values  # None: not an hparam
    assert set(values) == {k for k, v in C.flatten(config).items() if v is not None}

    [end] = plugin_data(tmp_path / "run", "_hparams_/session_end_info")
    assert end.session_end_info.status == Status.Value("STATUS_SUCCESS")
    assert plugin_data(tmp_path / "run", "_hparams_/experiment") == []

    for metric in ("eval/accuracy", "eval/loss", "train/loss", "train_eval/accuracy"):
        assert last_scalar(tmp_path / "run", metric) == pytest.approx(
            summary["metrics"][metric], rel=1e-6)  # the final metric, in the same run


def test_a_failed_run_ends_its_session_as_failed(tmp_path):
    writer = TensorBoardWriter(tmp_path, 0, {"train.steps": 10, "model.kind": "perceiver"})
    writer.write({"step": 3, "train/loss": 2.5})
    writer.end("failed")
    writer.close()
    [start] = plugin_data(tmp_path, "_hparams_/session_start_info")
    assert dict(start.session_start_info.hparams)["train.steps"].number_value == 10.0
    [end] = plugin_data(tmp_path, "_hparams_/session_end_info")
    assert end.session_end_info.status == Status.Value("STATUS_FAILURE")
    assert last_scalar(tmp_path, "train/loss") == 2.5


def test_hparams_are_flat_config_keys_with_lists_as_text():
    config = C.build("digits", {**TINY, "train.init_from": "/runs/base"})
    values = hparams(config)
    assert values["train.init_from"] == "/runs/base"
    assert values["seed"] == 0
    assert values["model.num_blocks"] == 2
    assert all(isinstance(v, str | bool | int | float) for v in values.values())
    assert values["data.index_dims"] == "[8, 8]"
    assert values["data.modalities"] == "[]"
    assert "data.data_dir" not in values  # None
