"""predict takes data the way a user holds it and agrees with the run's own evaluation;
evaluate, predict and attention never move a checkpoint; every bad input is one line."""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from suite import config as C
from suite import data as data_lib
from suite.cli import main
from suite.inference.predict import folder_config, load_state, top_classes, top_table
from suite.training.optim import optimizer as make_optimizer
from suite.training.optim import schedule
from suite.training.steps import Steps
from suite.training.trainer import train_and_evaluate

QUIET = {"progress": False, "log": lambda m: None}
CONVNET = {"model.kind": "convnet", "model.hidden_dim": 16, "model.num_layers": 1,
           "data.permutation": "fixed", "train.optimizer": "adamw",
           "train.learning_rate": 1e-2, "train.batch_size": 32, "train.steps": 40,
           "train.log_every": 20, "train.eval_every": 0, "train.checkpoint_every": 20,
           "train.keep_checkpoints": 3, "train.tensorboard": False}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A ConvNet trained 40 steps on permuted digits: checkpoints at steps 20 and 40."""
    folder = tmp_path_factory.mktemp("inference") / "run"
    train_and_evaluate(C.build("digits", CONVNET), folder, **QUIET)
    return folder


@pytest.fixture(scope="module")
def raw_eval(run, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """The eval split's raw images (uint8 0..255, as `data digits` reports) and labels."""
    config = folder_config(run)
    ds = data_lib.load(config.data, config.seed)
    path = tmp_path_factory.mktemp("raw") / "eval.npy"
    np.save(path, ds.eval.inputs)
    return path, ds.eval.labels


def pipeline_predictions(run: Path) -> np.ndarray:
    """The eval pipeline's own predictions: its batches through the compiled eval step."""
    config = folder_config(run)
    ds = data_lib.load(config.data, config.seed)
    model, _ = load_state(config, run)
    graphdef, state = nnx.split((model, nnx.Optimizer(model, make_optimizer(config.train),
                                                      wrt=nnx.Param)))
    steps = Steps(graphdef, config, schedule(config.train))
    batch = next(iter(data_lib.eval_batches(ds, len(ds.eval))))
    assert batch["inputs"].shape == (len(ds.eval), 64, 1) and "index" in batch  # permuted
    out = steps.eval_step(state, batch, np.ones(len(ds.eval), np.float32))
    return np.asarray(out["logits"]).argmax(-1)


def shown(line: str) -> list[tuple[str, str]]:
    """The ``(class, probability)`` pairs of one printed row."""
    return re.findall(r"(\d+) \((\d+\.\d)%\)", line.split("  ", 1)[1])


def stderr_lines(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


# --------------------------------------------------------------- agreement with evaluate


@pytest.mark.slow
def test_predict_raw_makes_the_eval_pipelines_predictions_of_a_permuted_convnet(
        run, raw_eval, tmp_path, capsys):
    path, labels = raw_eval
    assert main(["evaluate", str(run)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert main(["predict", str(run), "--raw", str(path), "--out", str(tmp_path / "l.npy")]) == 0
    predicted = np.load(tmp_path / "l.npy").argmax(-1)
    np.testing.assert_array_equal(predicted, pipeline_predictions(run))
    assert evaluated["step"] == 40
    assert (predicted == labels).mean() == evaluated["eval/accuracy"]
    assert evaluated["eval/accuracy"] > 0.3  # trained: the check is not of chance labels


@pytest.mark.slow
def test_predict_inputs_takes_normalised_grid_order_arrays_and_permutes_them(
        run, raw_eval, tmp_path):
    path, _ = raw_eval
    config = folder_config(run)
    ds = data_lib.load(config.data, config.seed)
    normalised = (np.load(path).astype(np.float32) - ds.mean) / ds.std  # before permuting
    np.save(tmp_path / "x.npy", normalised)
    assert main(["predict", str(run), "--inputs", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "l.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "l.npy").argmax(-1),
                                  pipeline_predictions(run))


@pytest.mark.slow
def test_predict_prints_a_top_k_table_of_the_first_20_without_out(run, raw_eval, capsys):
    path, _ = raw_eval
    assert main(["predict", str(run), "--raw", str(path), "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["example", "top", "3:", "class", "(probability)"]
    assert len(lines) == 1 + 20 + 1 and lines[-1] == "... 160 more; --out FILE for all"
    assert lines[1].startswith("0 ") and lines[1].count("%)") == 3


@pytest.mark.slow
def test_predict_an_example_of_the_runs_split_gives_the_raw_arrays_prediction(
        run, raw_eval, capsys):
    path, labels = raw_eval
    assert main(["predict", str(run), "--split", "eval", "--example", "7", "--top", "12"]) == 0
    captured = capsys.readouterr()
    assert "note: --top 12: the model has 10 classes; showing all" in captured.err
    row = captured.out.splitlines()[1]
    assert row.startswith("7 ") and row.endswith(f"(label {labels[7]})")
    assert row.count("%)") == 10
    np.save(path.parent / "one.npy", np.load(path)[7])  # one example, no batch axis
    assert main(["predict", str(run), "--raw", str(path.parent / "one.npy"), "--top", "10"]) == 0
    assert shown(capsys.readouterr().out.splitlines()[1]) == shown(row)


# ----------------------------------------------------------------------------- read-only


def listing(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every path under a folder with its mtime (ns), size and bytes."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size,
                                         p.read_bytes() if p.is_file() else b"")
            for p in sorted(folder.rglob("*"))}


def corrupt(step_dir: Path) -> None:
    """Truncate the largest array file of a checkpoint, as a full disk leaves it."""
    biggest = max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
                  key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:-16])


@pytest.mark.slow
def test_a_corrupt_newest_checkpoint_is_skipped_read_only_and_nothing_moves(
        run, raw_eval, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    corrupt(copy / "checkpoints" / "40")
    before, top = listing(copy / "checkpoints"), sorted(os.listdir(copy))
    assert main(["evaluate", str(copy)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["step"] == 20  # the older one, read-only
    assert "checkpoint at step 40 is corrupt" in captured.err and "left in place" in captured.err
    assert main(["predict", str(copy), "--raw", str(raw_eval[0]), "--out",
                 str(tmp_path / "l.npy")]) == 0
    assert "(step 20)" in capsys.readouterr().err
    assert listing(copy / "checkpoints") == before and sorted(os.listdir(copy)) == top


@pytest.mark.slow
def test_every_checkpoint_corrupt_is_exit_2_with_one_error_line_and_nothing_moves(
        run, raw_eval, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for step in ("20", "40"):
        corrupt(copy / "checkpoints" / step)
    before, top = listing(copy / "checkpoints"), sorted(os.listdir(copy))
    assert main(["predict", str(copy), "--raw", str(raw_eval[0])]) == 2
    errors = [ln for ln in stderr_lines(capsys) if ln.startswith("perceiver-suite")]
    assert errors == [f"perceiver-suite: error: {copy}: no readable checkpoint"]
    assert listing(copy / "checkpoints") == before and sorted(os.listdir(copy)) == top
    assert not (copy / "checkpoints_corrupt").exists()


# --------------------------------------------------------------------------- bad inputs


def bad_files(folder: Path) -> dict[str, Path]:
    files = {"empty": folder / "empty.npy", "npz": folder / "a.npz",
             "npz_named_npy": folder / "z.npy", "no_batch": folder / "b.npy",
             "strings": folder / "s.npy", "complex": folder / "c.npy",
             "objects": folder / "o.npy", "shape": folder / "w.npy",
             "huge": folder / "h.npy", "nan": folder / "n.npy"}
    files["empty"].write_bytes(b"")
    np.savez(files["npz"], x=np.zeros((2, 8, 8, 1)))
    shutil.copy(files["npz"], files["npz_named_npy"])
    np.save(files["no_batch"], np.zeros((0, 8, 8, 1), np.uint8))
    np.save(files["strings"], np.array(["a", "b"]))
    np.save(files["complex"], np.zeros((2, 8, 8, 1), complex))
    np.save(files["objects"], np.array([1, "a"], dtype=object), allow_pickle=True)
    np.save(files["shape"], np.zeros((2, 8, 8), np.uint8))
    huge_npy(files["huge"], (10**10, 8, 8, 1))
    np.save(files["nan"], np.full((3, 8, 8, 1), np.nan, np.float32))
    return files


def huge_npy(path: Path, shape: tuple[int, ...]) -> None:
    """A small .npy file whose header declares ``shape`` of float32."""
    with path.open("wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(bytes(400))


SAID = {"empty": "the file is empty (0 bytes)", "npz": "an .npz archive",
        "npz_named_npy": "an .npz archive", "no_batch": "an empty batch (shape [0, 8, 8, 1])",
        "strings": "holds string values", "complex": "holds complex values",
        "objects": "holds Python objects", "shape": "shape [2, 8, 8]; expected [B, 8, 8, 1]",
        "huge": "the header declares shape [10000000000, 8, 8, 1] of float32 "
                "(2,560,000,000,000 bytes), but the file holds 400 bytes of data",
        "nan": "192 of 192 values are NaN or infinite; a model's outputs on them mean nothing"}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["predict", "attention"])
@pytest.mark.parametrize("flag", ["--raw", "--inputs"])
def test_each_bad_array_file_is_exit_2_with_one_line_naming_flag_file_and_value(
        run, tmp_path, capsys, command, flag):
    out = ["--out", str(tmp_path / "maps")] if command == "attention" else []
    for kind, path in bad_files(tmp_path).items():
        assert main([command, str(run), flag, str(path), *out]) == 2, kind
        lines = stderr_lines(capsys)
        assert len(lines) == 1, (kind, lines)
        assert f"{flag} {path}: {SAID[kind]}" in lines[0], (kind, lines)


@pytest.mark.slow
@pytest.mark.parametrize("argv, said", [
    (["predict", "{run}", "--raw", "{raw}", "--top", "0"], "--top 0: must be at least 1"),
    (["predict", "{run}", "--raw", "{raw}", "--top", "-1"], "--top -1: must be at least 1"),
    (["predict", "{run}", "--raw", "{raw}", "--batch-size", "0"], "--batch-size 0: must be"),
    (["evaluate", "{run}", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["evaluate", "{run}", "--batch-size", "-3"], "--batch-size -3: must be at least 1"),
    (["predict", "{run}", "--split", "eval", "--example", "180"],
     "--example 180: the eval split has 180 examples (0..179)"),
    (["predict", "{run}", "--split", "train", "--example", "-1"], "--example -1: the train"),
    (["attention", "{run}", "--raw", "{raw}", "--example", "180", "--out", "{tmp}"],
     "--example 180: --raw {raw} has 180 examples (0..179)"),
    (["predict", "{run}", "--example", "3"], "predict takes one of --raw X.npy"),
    (["predict", "{run}", "--raw", "{raw}", "--inputs", "{raw}"], "got --raw and --inputs"),
    (["predict", "{run}", "--raw", "{raw}", "--out", "{tmp}/no/l.npy"],
     "--out {tmp}/no/l.npy: its folder does not exist"),
])
def test_each_bad_flag_is_exit_2_with_one_line(run, raw_eval, tmp_path, capsys, argv, said):
    fill = {"run": str(run), "raw": str(raw_eval[0]), "tmp": str(tmp_path)}
    assert main([a.format(**fill) for a in argv]) == 2
    lines = stderr_lines(capsys)
    assert len(lines) == 1 and said.format(**fill) in lines[0], lines


# ------------------------------------------------------------------------------- pieces


def test_an_array_file_is_checked_against_its_header_and_for_non_finite_values(tmp_path):
    from suite.errors import SuiteError
    from suite.inference.user_inputs import read_array

    huge_npy(tmp_path / "h.npy", (10**10, 8, 8, 1))
    with pytest.raises(SuiteError) as err:
        read_array(tmp_path / "h.npy", "--inputs")
    assert str(err.value) == (
        f"--inputs {tmp_path / 'h.npy'}: the header declares shape [10000000000, 8, 8, 1] of "
        "float32 (2,560,000,000,000 bytes), but the file holds 400 bytes of data")
    values = np.zeros((2, 3), np.float32)
    values[0, :2], values[1, 2] = np.nan, -np.inf
    np.save(tmp_path / "n.npy", values)
    with pytest.raises(SuiteError) as err:
        read_array(tmp_path / "n.npy", "--raw")
    assert str(err.value) == (f"--raw {tmp_path / 'n.npy'}: 3 of 6 values are NaN or "
                              "infinite; a model's outputs on them mean nothing")
    np.save(tmp_path / "ok.npy", np.ones((2, 3), np.float32))
    assert read_array(tmp_path / "ok.npy", "--raw").shape == (2, 3)


def test_top_classes_are_best_first_with_softmax_or_sigmoid_probabilities():
    logits = np.array([[0.0, 2.0, 1.0], [1.0, 1.0, 3.0]])
    assert [[c for c, _ in row] for row in top_classes(logits, 2)] == [[1, 2], [2, 0]]
    (_, p), = top_classes(logits[:1], 1)[0]
    assert p == pytest.approx(np.exp(2) / (1 + np.exp(1) + np.exp(2)))
    (_, q), = top_classes(logits[:1], 1, sigmoid=True)[0]
    assert q == pytest.approx(1 / (1 + np.exp(-2)))


def test_the_table_shows_20_rows_then_how_many_more():
    tops = [[(1, 0.5)]] * 25
    lines = top_table([str(i) for i in range(25)], tops).splitlines()
    assert lines[0] == "example  top 1: class (probability)"
    assert lines[1] == "0        1 (50.0%)" and len(lines) == 22
    assert lines[-1] == "... 5 more; --out FILE for all"


@pytest.mark.slow
def test_image_files_of_the_raw_pixels_get_the_raw_arrays_predictions(run, raw_eval, tmp_path,
                                                                       capsys):
    from PIL import Image

    path, _ = raw_eval
    pixels = np.load(path)[:3]
    files = []
    for i, x in enumerate(pixels):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(x[..., 0]).save(files[-1])
    np.save(tmp_path / "three.npy", pixels)
    assert main(["predict", str(run), *files]) == 0
    by_file = [shown(ln) for ln in capsys.readouterr().out.splitlines()[1:]]
    assert main(["predict", str(run), "--raw", str(tmp_path / "three.npy")]) == 0
    by_array = [shown(ln) for ln in capsys.readouterr().out.splitlines()[1:]]
    assert by_file == by_array and len(by_file) == 3


def test_data_reports_the_raw_units_and_the_statistics_a_run_normalises_with():
    from suite.data.inspect import load_task, render, summary

    ds = load_task("digits", None, {"data.permutation": "fixed"})
    info = summary(ds, batches=1)
    assert info["raw_units"] == "uint8 [8, 8, 1], 0..255 in the training split"
    assert info["mean"] == ds.mean.tolist() and info["std"] == ds.std.tolist()
    text = render(info)
    assert f"mean [{ds.mean[0]:.4g}], std [{ds.std[0]:.4g}]" in text
    assert "data.normalization=dataset" in text and "(what predict --raw takes)" in text
    assert "permutation     fixed (data.permutation_seed=0)" in text


@pytest.mark.slow
def test_attention_of_model_ready_inputs_of_a_permuted_run_is_that_of_its_own_example(tmp_path):
    perceiver = tmp_path / "perceiver"
    train_and_evaluate(C.build("digits", {
        "data.permutation": "fixed", "train.steps": 4, "train.log_every": 2,
        "train.eval_every": 0, "train.tensorboard": False}), perceiver, **QUIET)
    config = folder_config(perceiver)
    ds = data_lib.load(config.data, config.seed)
    np.save(tmp_path / "x.npy", (ds.eval.inputs[:3].astype(np.float32) - ds.mean) / ds.std)
    for name, source in (("split", ["--split", "eval"]),
                         ("inputs", ["--inputs", str(tmp_path / "x.npy")])):
        assert main(["attention", str(perceiver), *source, "--example", "2",
                     "--cross-attend", "1", "--out", str(tmp_path / name)]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "inputs" / "cross_attend_1.npy"),
                               np.load(tmp_path / "split" / "cross_attend_1.npy"),
                               rtol=1e-5, atol=1e-5)
