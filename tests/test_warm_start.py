"""Warm starts (`train --init-from RUN_DIR`: a new run from another run's newest weights)
and runs extended in place (`train --workdir SAME train.steps=N` on a completed run
with a constant learning rate)."""

import hashlib
import json
import shutil
import signal
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from suite import config as C
from suite.cli import main
from suite.errors import CheckpointError, ConfigError
from suite.files import read_json
from suite.inference.predict import load_state
from suite.models.registry import build_model
from suite.sweeps.spec import run_id
from suite.training import stop, warm_start
from suite.training.optim import optimizer as make_optimizer
from suite.training.run_folder import check_config, write_config, write_summary
from suite.training.trainer import train_and_evaluate

TINY = {
    "model.num_latents": 8, "model.latent_dim": 16, "model.num_blocks": 2,
    "model.self_heads": 2, "model.fourier_bands": 2, "train.batch_size": 16,
    "train.schedule": "constant", "train.steps": 10, "train.log_every": 5,
    "train.checkpoint_every": 5, "train.tensorboard": False,
}


def tiny(**overrides):
    return C.build("digits", {**TINY, **overrides})


def quiet(msg):
    pass


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished tiny run to start from."""
    folder = tmp_path_factory.mktemp("source") / "base"
    assert train_and_evaluate(tiny(), folder, progress=False, log=quiet)["status"] == "completed"
    return folder


def fresh_state(config):
    """The (model, optimizer) state a run of ``config`` starts from, before any restore."""
    model = build_model(config, rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    return nnx.state((model, nnx.Optimizer(model, make_optimizer(config.train), wrt=nnx.Param)))


def leaves(state, top):
    return {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(state)
            if path[0] == top}


def params_sha256(config, folder):
    """SHA-256 of a run's newest weights, as a warm start's record computes it."""
    model, _ = load_state(config, folder)
    digest = hashlib.sha256()
    named = {"/".join(map(str, (0, *p))): np.asarray(v.get_value())
             for p, v in nnx.to_flat_state(nnx.state(model))}
    for name in sorted(named):
        a = named[name]
        digest.update(f"{name} {a.dtype} {list(a.shape)}\n".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------- warm starts


def test_a_warm_start_takes_the_source_weights_and_a_fresh_optimizer(source):
    config = tiny(seed=7, **{"train.init_from": str(source)})
    template = fresh_state(config)
    state, src = warm_start.initial_state(config, template, quiet)
    trained, step = load_state(tiny(), source)
    assert step == 10
    want = {(0, *p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(trained))}
    got = leaves(state, 0)
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[k], want[k]) for k in want)
    fresh = leaves(template, 1)  # the optimizer as this run's own config builds it
    assert all(np.array_equal(v, fresh[k]) for k, v in leaves(state, 1).items())
    assert src.record() == {"path": str(source), "run": "base", "step": 10,
                            "weights_sha256": params_sha256(tiny(), source),
                            "optimizer": "fresh"}


def test_carry_takes_the_source_optimizer_state_with_its_step_count(source):
    config = tiny(**{"train.init_from": str(source), "train.init_optimizer": "carry"})
    state, src = warm_start.initial_state(config, fresh_state(config), quiet)
    assert src.optimizer == "carry"
    optimizer = leaves(state, 1)
    assert optimizer[(1, "step")] == 10  # the schedule goes on from the source's step
    assert any(k[-1] != "count" and np.abs(v).sum() > 0 for k, v in optimizer.items()
               if "mu" in k)  # Adam moments from the source, not zeros


def test_carry_with_another_optimizer_config_is_refused_in_one_line(source):
    config = tiny(**{"train.init_from": str(source), "train.init_optimizer": "carry",
                     "train.learning_rate": 0.01})
    with pytest.raises(ConfigError) as e:
        warm_start.initial_state(config, fresh_state(config), quiet)
    assert str(e.value) == (
        f"train.init_optimizer='carry': the optimizer config differs from {source}'s "
        "(train.learning_rate=0.002 there, 0.01 here); carry needs the same optimizer, or use "
        "train.init_optimizer=fresh")
    # a constant schedule does not depend on train.steps: more steps still carry
    longer = tiny(**{"train.init_from": str(source), "train.init_optimizer": "carry",
                     "train.steps": 30})
    warm_start.check_source(longer)


def test_carry_without_a_source_is_a_config_error():
    with pytest.raises(ConfigError, match="train.init_optimizer='carry' needs train.init_from"):
        tiny(**{"train.init_optimizer": "carry"})


def test_a_shape_mismatch_names_the_parameter_and_both_shapes(source):
    config = tiny(**{"model.latent_dim": 32, "train.init_from": str(source)})
    with pytest.raises(CheckpointError) as e:
        warm_start.initial_state(config, fresh_state(config), quiet)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(
        f"train.init_from={str(source)!r}: model/cross/0/attn/out/bias is [16] float32 there, "
        "[32] float32 here (and ")
    assert message.endswith("more); a warm start needs the same model shapes")


def test_a_missing_source_or_one_without_checkpoints_is_one_line_before_compiling(
        tmp_path, capsys):
    args = ["train", "--preset", "digits", "--workdir", str(tmp_path / "new"),
            *[f"{k}={v}" for k, v in TINY.items()]]
    assert main([*args, "--init-from", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"train.init_from={str(tmp_path / 'nowhere')!r}: no such run folder")
    assert "\n" not in err
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    assert main([*args, "--init-from", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{tmp_path / 'empty'} has no checkpoints to start from (train it first)")
    assert not (tmp_path / "new" / "checkpoints").exists()  # nothing was trained


def test_a_warm_started_run_records_its_source_and_resumes_from_its_own_checkpoints(
        source, tmp_path, monkeypatch):
    copy = tmp_path / "copy_of_base"
    shutil.copytree(source, copy)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "digits", "--workdir", "warm", "--init-from",
                 "copy_of_base", *[f"{k}={v}" for k, v in TINY.items()], "seed=3"]) == 0
    config = C.from_dict(read_json(tmp_path / "warm" / "config.json"))
    assert config.train.init_from == str(copy)  # absolute: the run's config and identity
    assert config.train.init_optimizer == "fresh"
    record = read_json(tmp_path / "warm" / "summary.json")["init_from"]
    assert record == {"path": str(copy), "run": "copy_of_base", "step": 10,
                      "weights_sha256": params_sha256(tiny(), source), "optimizer": "fresh"}

    logged = []  # a second run of the same config, stopped after step 5, then resumed

    def stop_after_step_5(msg):
        logged.append(msg)
        if "step 5/10" in msg:
            signal.raise_signal(signal.SIGTERM)

    with pytest.raises(stop.Stopped):
        train_and_evaluate(config, tmp_path / "again", progress=False, log=stop_after_step_5)
    assert any("starting from" in m and str(copy) in m for m in logged)
    shutil.rmtree(copy)  # a resumed run never reads its source again
    logged.clear()
    summary = train_and_evaluate(config, tmp_path / "again", progress=False, log=logged.append)
    assert any("resuming from step 6" in m for m in logged)
    assert not any("starting from" in m for m in logged)
    assert summary["status"] == "completed" and summary["init_from"] == record
    done, _ = load_state(config, tmp_path / "warm")
    again, _ = load_state(config, tmp_path / "again")
    for a, b in zip(jax.tree.leaves(nnx.state(done, nnx.Param)),
                    jax.tree.leaves(nnx.state(again, nnx.Param)), strict=True):
        assert np.array_equal(a, b)  # bit-identical to the uninterrupted warm start


def test_init_from_is_a_run_key_that_leaves_other_run_ids_unchanged():
    plain = tiny()
    assert not any(k.startswith("train.init_") for k in C.non_default(plain))
    assert C.non_default(tiny(**{"train.init_from": "/runs/base"}))["train.init_from"] == \
        "/runs/base"
    assert run_id({}, plain) != run_id({}, tiny(**{"train.init_from": "/runs/base"}))
    assert run_id({}, plain) == run_id({}, C.from_dict({**C.to_dict(plain)}))


# ------------------------------------------------------------------ extending in place


def test_a_completed_constant_run_extends_in_place_as_if_trained_that_long(tmp_path):
    assert main(["train", "--preset", "digits", "--workdir", str(tmp_path / "run"),
                 *[f"{k}={v}" for k, v in TINY.items()]]) == 0
    assert main(["train", "--workdir", str(tmp_path / "run"), "train.steps=20"]) == 0
    run = tmp_path / "run"
    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed" and summary["step"] == 20
    [entry] = summary["extended"]
    assert (entry["from_step"], entry["to_step"]) == (10, 20) and entry["when"].endswith("+00:00")
    assert read_json(run / "summary_extended_1.json")["step"] == 10  # kept, not replaced
    assert read_json(run / "config.json")["train"]["steps"] == 20
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if "train/loss" in r]
    assert steps == [5, 10, 15, 20]

    straight = tiny(**{"train.steps": 20})
    train_and_evaluate(straight, tmp_path / "straight", progress=False, log=quiet)
    extended, _ = load_state(straight, run)
    direct, _ = load_state(straight, tmp_path / "straight")
    for a, b in zip(jax.tree.leaves(nnx.state(extended, nnx.Param)),
                    jax.tree.leaves(nnx.state(direct, nnx.Param)), strict=True):
        assert np.array_equal(a, b)


def finished(folder, config, status="completed"):
    """A run folder as a run of ``config`` leaves it (no training needed to check it)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_config(folder, config)
    write_summary(folder, {"status": status, "step": config.train.steps, "metrics": {}})
    return folder


def test_only_more_steps_of_a_completed_constant_run_is_another_config_allowed(tmp_path):
    run = finished(tmp_path / "a", tiny())
    for change, message in [
        ({"train.steps": 5}, "train.steps=10 there, 5 here); train.steps may be raised (a "
                             "run extended), not lowered"),
        ({"train.learning_rate": 0.01}, "train.learning_rate=0.002 there, 0.01 here)"),
        ({"train.steps": 20, "train.learning_rate": 0.01}, "train.steps=10 there, 20 here)"),
    ]:
        with pytest.raises(CheckpointError) as e:
            check_config(run, tiny(**change))
        assert str(e.value) == (f"{run} holds a run with another config ({message}; use "
                                "another --workdir")

    stepped = finished(tmp_path / "b", tiny(**{"train.schedule": "step"}))
    with pytest.raises(CheckpointError, match="only a run with train.schedule='constant' is "
                       "extended in place"):
        check_config(stepped, tiny(**{"train.schedule": "step", "train.steps": 20}))
    failed = finished(tmp_path / "c", tiny(), status="failed")
    with pytest.raises(CheckpointError, match="only a completed run is extended in place "
                       r"\(this one is failed"):
        check_config(failed, tiny(**{"train.steps": 20}))
    assert read_json(failed / "config.json")["train"]["steps"] == 10  # untouched


def test_an_extension_cut_short_is_finished_by_the_same_command(tmp_path):
    run = finished(tmp_path / "run", tiny())
    (run / "summary.json").rename(run / "summary_extended_1.json")  # killed mid-extension
    (run / "extended.json").write_text(json.dumps(
        [{"from_step": 10, "to_step": 20, "when": "2025-01-01T00:00:00+00:00"}]))
    assert "extending the completed run from 10 to 20 steps" in check_config(
        run, tiny(**{"train.steps": 20}))
    assert len(read_json(run / "extended.json")) == 1  # recorded once
    assert read_json(run / "config.json")["train"]["steps"] == 20
    assert check_config(run, tiny(**{"train.steps": 20})) is None
    assert not Path(run / "summary_extended_2.json").exists()
