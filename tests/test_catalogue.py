"""Every command of ``perceiver-suite``, handed hostile arguments, answers the same way:
exit status 2, one line on stderr that starts ``perceiver-suite: error:`` and names the
mistake (argparse's own refusals print their usage first), no traceback, and nothing
written: not in the folder it was pointed at, not in the run or results folders it read,
not where it ran.

The commands come from the parser, so a command added later fails
``test_the_catalogue_knows_every_command`` until its hostile cases are written here.
All cases share one world of files, built once: a tiny trained run, a hand-made results
folder, and the hostile files (zero bytes, the wrong JSON type, an ``.npz`` for an
``.npy``, an empty batch, non-UTF-8 names, folders for files and files for folders).
"""

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from suite import config as C
from suite.cli import build_parser, main
from suite.training.trainer import train_and_evaluate

TINY = {"model.num_latents": 4, "model.latent_dim": 8, "model.self_heads": 1,
        "model.num_blocks": 2, "model.self_attends_per_block": 1, "model.num_cross_attends": 2,
        "model.fourier_bands": 2, "train.batch_size": 8, "train.steps": 2,
        "train.log_every": 1, "train.eval_every": 0, "train.checkpoint_every": 2,
        "train.tensorboard": False}
SPEC = 'name = "c"\npreset = "digits"\nseeds = [0]\n[fixed]\n{fixed}\n[grid]\n{grid}\n'.format(
    fixed="\n".join(f'"{k}" = {json.dumps(v)}' for k, v in TINY.items()
                    if k != "model.num_cross_attends"),
    grid='"model.num_cross_attends" = [1, 2]')
NOT_UTF8 = os.fsdecode(b"caf\xe9")  # a name the file system holds that is not UTF-8
SPECS = {  # the specs a case may name, as {spec_NAME}
    "spec": SPEC,
    "spec_rows5": SPEC + "[report]\nrows = 5\n",
    "spec_hue": SPEC + '[report]\nhue = "model.num_cross_attend"\n',
    "spec_reference5": SPEC + "[report]\nreference = 5\n",
    "spec_unknown_key": SPEC + '"model.num_latent" = [4]\n',
    "spec_fixed_negative": SPEC.replace('"model.num_latents" = 4', '"model.num_latents" = -1'),
    "spec_nan_rate": SPEC + '[fixed.train]\nlearning_rate = nan\n',
    "spec_seeds_negative": SPEC.replace("seeds = [0]", "seeds = [-1]"),
    "spec_grid_list": 'preset = "digits"\ngrid = [1, 2]\n',
    "spec_report_list": 'preset = "digits"\nreport = ["rows"]\n',
    "spec_bad_toml": SPEC + "[report\n",
    "spec_empty": "",
}


# ------------------------------------------------------------------------------ the world


def write_files(world: Path) -> dict[str, Path]:
    """The hostile files and folders, and a spec of each kind."""
    from test_official import official_params

    paths = {"folder": world / "folder", "file": world / "file.txt", "missing": world / "missing",
             "raw": world / "raw.npy", "empty_npy": world / "empty.npy", "npz": world / "a.npz",
             "npz_named_npy": world / "npz.npy", "no_examples": world / "no_examples.npy",
             "empty_png": world / "empty.png", "not_utf8": world / NOT_UTF8,
             "not_utf8_missing": world / (NOT_UTF8 + "_missing"),
             "list_pickle": world / "list.pystate", "not_utf8_spec": world / "not_utf8.toml",
             "dir_spec": world / "dir.toml", "plugin_dir": world / "plugin.py"}
    paths["folder"].mkdir()
    paths["dir_spec"].mkdir()
    paths["plugin_dir"].mkdir()
    paths["file"].write_text("not a folder\n")
    np.save(paths["raw"], np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), np.uint8))
    for name in ("empty_npy", "empty_png", "not_utf8"):
        paths[name].write_bytes(b"")
    np.savez(paths["npz"], x=np.zeros((2, 8, 8, 1)))
    shutil.copy(paths["npz"], paths["npz_named_npy"])
    np.save(paths["no_examples"], np.zeros((0, 8, 8, 1), np.uint8))
    paths["huge_npy"], paths["nan_npy"] = world / "huge.npy", world / "nan.npy"
    with paths["huge_npy"].open("wb") as f:  # 10**10 images declared, none there
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (10**10, 8, 8, 1)})
        f.write(bytes(400))
    nans = np.full((3, 8, 8, 1), np.nan, np.float32)
    nans[1:] = 0.0
    nans[2, 0, 0, 0] = np.inf
    np.save(paths["nan_npy"], nans)
    paths["list_pickle"].write_bytes(pickle.dumps([1, 2]))
    paths["official"] = world / "official.pystate"  # a valid one: the flags are what is wrong
    paths["official"].write_bytes(pickle.dumps({"params": official_params(), "state": {}}))
    paths["not_utf8_spec"].write_bytes(b'name = "caf\xe9"\n')
    for name, text in SPECS.items():
        paths[name] = world / f"{name}.toml"
        paths[name].write_text(text)
    return paths


def write_run_folders(world: Path, run: Path) -> dict[str, Path]:
    """Folders that look like runs and are not: config.json a list, empty, or without a
    checkpoint."""
    paths = {}
    for name, text in {"config_list": "[1, 2]", "config_empty": "",
                       "no_checkpoint": (run / "config.json").read_text()}.items():
        paths[name] = world / name
        paths[name].mkdir()
        (paths[name] / "config.json").write_text(text)
    return paths


def write_results(world: Path) -> dict[str, Path]:
    """A hand-made results folder (2 cells x 2 seeds), and copies broken one way each."""
    from test_report import SPEC as TOY_SPEC
    from test_report import make_run, record

    good, runs = world / "results", {}
    for seed in (0, 1):
        for latents, acc in ((8, 0.8), (16, 0.9)):
            make_run(good, f"n{latents}_s{seed}", latents, seed, acc=acc + seed / 100)
            runs[f"n{latents}_s{seed}"] = {"model.num_latents": latents, "seed": seed}
    record(good, runs)
    paths = {"results": good}
    broken = {"summary_list": ("runs/n8_s1/summary.json", "[1, 2]"),
              "summary_empty": ("runs/n8_s1/summary.json", ""),
              "config_list": ("runs/n8_s1/config.json", "[1, 2]"),
              "grid_list": ("grid.json", "[1, 2]"),
              "bad_spec": ("spec.toml", "[report\n"),
              "hue": ("spec.toml", TOY_SPEC + 'hue = "model.num_latent"\n')}
    for name, (file, text) in broken.items():
        paths[f"results_{name}"] = world / f"results_{name}"
        shutil.copytree(good, paths[f"results_{name}"])
        (paths[f"results_{name}"] / file).write_text(text)
    paths["scaling_empty"] = world / "scaling_empty"
    paths["scaling_empty"].mkdir()
    (paths["scaling_empty"] / "scaling.csv").write_bytes(b"")
    return paths


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Every file the cases name, built once; no case may change any of it."""
    world = tmp_path_factory.mktemp("world")
    run = world / "run"
    train_and_evaluate(C.build("digits", TINY), run, progress=False, log=lambda m: None)
    return {"run": run, **write_files(world), **write_run_folders(world, run),
            **write_results(world), "world": world}


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``roots`` with its size and modification time."""
    seen = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [*dirnames, *filenames]:
                stat = os.lstat(os.path.join(dirpath, name))
                seen[os.path.join(dirpath, name)] = (stat.st_size, stat.st_mtime_ns)
    return seen


# ---------------------------------------------------------------------------- the catalogue

# command -> [(argv, a piece of the error line)]; {name} is a path of the world, {out} a
# path in the case's own folder (where it runs) that must not come to exist.
HOSTILE: dict[str, list[tuple[str, str]]] = {
    "describe": [
        ("describe --no-xla model.num_latent=8",
         "unknown config key 'model.num_latent'; did you mean 'model.num_latents'?"),
        ("describe --no-xla model.num_latents=-1", "model.num_latents=-1 must be > 0"),
        ("describe --no-xla model.num_latents=0", "model.num_latents=0 must be > 0"),
        ("describe --no-xla model.num_blocks=1000000000000",
         "model.num_blocks=1000000000000 is over the limit of 4,096"),
        ("describe --no-xla train.learning_rate=nan",
         "train.learning_rate=nan must be a finite number"),
        ("describe --no-xla model.num_latents=many", "model.num_latents='many' is not an integer"),
        ("describe --no-xla train.batch_size=0", "train.batch_size=0 must be > 0"),
        ("describe --no-xla --preset nope",
         "unknown preset 'nope'; choose one of: imagenet, imagenet_io, modelnet40, audioset,"),
        ("describe --no-xla --plugin {missing}/p.py",
         "plugin {missing}/p.py: no such file ({missing}/p.py)"),
        ("describe --no-xla --plugin {plugin_dir}",
         "plugin {plugin_dir}: no such file ({plugin_dir})"),
        ("describe --no-xla --plugin {not_utf8_missing}.py",
         "plugin {not_utf8_missing}.py: no such file ({not_utf8_missing}.py)"),
    ],
    "data": [
        ("data digits model.num_latents=8",
         "data digits: model.num_latents=8 is not a data.* key; `data` loads the task only"),
        ("data digits data.nope=1", "unknown config key 'data.nope'; did you mean 'data.fps'?"),
        ("data digits data.train_limit=0", "data.train_limit=0 must be > 0"),
        ("data digits data.train_limit=-5", "data.train_limit=-5 must be > 0"),
        ("data digits data.eval_fraction=nan", "data.eval_fraction=nan must be a finite number"),
        ("data digits --show -1", "--show -1: must be 0 (no picture) or more"),
        ("data digits --show 2 --out {folder}",
         "--out {folder}: a folder; --show writes one PNG file, e.g. --out"),
        ("data mnist --data-dir {folder}",
         "mnist: train-images-idx3-ubyte(.gz) / train-labels-idx1-ubyte(.gz) not found in"),
        ("data mnist --data-dir {missing}",
         "mnist: directory not found in {missing} (set data.data_dir or $PERCEIVER_SUITE_DATA;"),
        ("data mnist --data-dir {file}",
         "mnist: directory not found in {file} (set data.data_dir or $PERCEIVER_SUITE_DATA; put"),
        ("data mnist --data-dir {not_utf8_missing}",
         "is not valid UTF-8 (a results folder could not record it); rename the folder"),
    ],
    "devices": [
        ("devices model.num_latents=8", "devices takes no key=value overrides"),
        ("devices --top 3", "unrecognized arguments: --top 3"),
    ],
    "presets": [
        ("presets model.num_latents=8", "presets takes no key=value overrides"),
        ("presets digits", "unrecognized arguments: digits"),
    ],
    "train": [
        ("train --workdir {out} model.num_latents=-1", "model.num_latents=-1 must be > 0"),
        ("train --workdir {out} train.learning_rate=nan",
         "train.learning_rate=nan must be a finite number"),
        ("train --workdir {out} train.steps=0", "train.steps=0 must be > 0"),
        ("train --workdir {out} train.steps=-5", "train.steps=-5 must be > 0"),
        ("train --workdir {out} train.batch_size=0", "train.batch_size=0 must be > 0"),
        ("train --workdir {out} model.num_latent=8",
         "unknown config key 'model.num_latent'; did you mean 'model.num_latents'?"),
        ("train --workdir {out} --preset nope",
         "unknown preset 'nope'; choose one of: imagenet, imagenet_io, modelnet40, audioset,"),
        ("train --workdir {file}", "{file}: a file, not a run folder; use another --workdir"),
        ("train --workdir {results}", "{results} is a results folder of a grid (it holds "
         "grid.json); train one of its runs: {results}/runs/<id>"),
        ("train --workdir {config_list}",
         "{config_list}/config.json: holds an array ([1, 2]), not an object of keys"),
        ("train --workdir {config_empty}",
         "{config_empty}/config.json: not readable JSON (Expecting value: line 1 column 1 (char"),
        ("train --workdir {run} model.num_latents=8",
         "{run} holds a run with another config (model.num_latents=4 there, 8 here); use another"),
        ("train --workdir {out} --init-from {missing}",
         "train.init_from='{missing}': no such run folder"),
        ("train --workdir {out} --init-from {folder}",
         "train.init_from='{folder}': {folder} has no checkpoints to start from (train it first)"),
        ("train --workdir {out} --init-from {file}",
         "train.init_from='{file}': no such run folder"),
        ("train --workdir {out} --init-from {config_list}",
         "train.init_from='{config_list}': {config_list} has no checkpoints to start from (train"),
        ("train --workdir {out} --init-optimizer carry",
         "train.init_optimizer='carry' needs train.init_from (the run whose optimizer state it"),
        ("train --workdir {out} --coordinator localhost:1 --num-processes 0",
         "--num-processes 0: must be at least 1"),
        ("train --workdir {out} --coordinator localhost:1 --num-processes 2 --process-id 2",
         "--process-id 2: must be 0..1 (an index among --num-processes)"),
        ("train --workdir {out} --process-id -1",
         "--process-id -1: must be >= 0 (an index among --num-processes)"),
        ("train --workdir {out_not_utf8} model.num_latents=-1", "model.num_latents=-1 must be > 0"),
    ],
    "run": [
        ("run {missing}.toml", "{missing}.toml: no such spec file"),
        ("run {spec_empty}",
         '{spec_empty}: the spec is empty; it names at least its preset, e.g. preset = "digits"'),
        ("run {dir_spec}", "{dir_spec}: cannot read ([Errno 21] Is a directory: '{dir_spec}')"),
        ("run {not_utf8}",
         '{not_utf8}: the spec is empty; it names at least its preset, e.g. preset = "digits"'),
        ("run {not_utf8_spec}",
         "{not_utf8_spec}: cannot read ('utf-8' codec can't decode byte 0xe9 in position 11:"),
        ("run {spec_bad_toml} --out {out}",
         "{spec_bad_toml}: bad TOML: Expected ']' at the end of a table declaration (at line 19,"),
        ("run {spec_rows5} --out {out}",
         "{spec_rows5}: [report] rows=5 must be a list of varied keys, e.g. rows ="),
        ("run {spec_hue} --out {out}",
         "{spec_hue}: [report] hue='model.num_cross_attend' is not a varied key; did you mean"),
        ("run {spec_reference5} --out {out}",
         "{spec_reference5}: [report] reference=5 must be a table of varied keys and values"),
        ("run {spec_report_list} --out {out}",
         "{spec_report_list}: report=['rows'] must be a table ([report] with its keys below it)"),
        ("run {spec_grid_list} --out {out}",
         "{spec_grid_list}: [grid] must be a table of dotted keys"),
        ("run {spec_seeds_negative} --out {out}",
         "{spec_seeds_negative}: seeds=[-1] must be a non-empty list of distinct integers >= 0"),
        ("run {spec_fixed_negative} --out {out}",
         "{spec_fixed_negative}: model.num_latents=-1 must be > 0 (in the run"),
        ("run {spec_nan_rate} --out {out}",
         "{spec_nan_rate}: train.learning_rate=nan must be a finite number (in the run"),
        ("run {spec_unknown_key} --out {out}",
         "{spec_unknown_key}: [grid] unknown config key 'model.num_latent'; did you mean"),
        ("run {spec} --out {out} --workers 0", "--workers=0 must be >= 1"),
        ("run {spec} --out {out} --workers -2", "--workers=-2 must be >= 1"),
        ("run {spec} --out {out} model.num_latents=-1",
         "{spec}: model.num_latents=-1 must be > 0 (in the run model.num_cross_attends=1)"),
        ("run {spec} --out {out} train.learning_rate=nan",
         "{spec}: train.learning_rate=nan must be a finite number (in the run"),
        ("run {spec} --out {out} train.steps=0",
         "{spec}: train.steps=0 must be > 0 (in the run model.num_cross_attends=1)"),
        ("run {spec} --out {out} model.num_latent=8",
         "{spec}: unknown config key 'model.num_latent'; did you mean 'model.num_latents'? (in"),
        ("run {spec} --out {out} seed=3",
         "{spec}: seed=3: a spec's runs take their seeds from its seeds = [0]; edit that list (or"),
        ("run {spec} --out {out} --shard 2/2",
         "--shard='2/2': need 0 <= I < N (shards are numbered from 0)"),
        ("run {spec} --out {out} --shard x", "--shard='x' must be I/N with integers, e.g. 0/4"),
        ("run {spec} --out {out} --stop-timeout -1", "--stop-timeout=-1.0 must be >= 0 (seconds)"),
        ("run {spec} --out {out} --time-min 0", "--time-min=0 must be >= 1"),
        ("run {spec} --out {out} --array-parallelism -1", "--array-parallelism=-1 must be >= 1"),
        ("run {spec} --out {file}", "{file}: a file, not a results folder; choose another --out"),
        ("run {spec} --out {run}",
         "{run}: a run folder (it holds config.json), not a results folder; choose another --out"),
    ],
    "sweep": [
        ("sweep --out {out} model.num_latents=-1,4",
         "sweep: model.num_latents=-1 must be > 0 (in the run model.num_latents=-1)"),
        ("sweep --out {out} train.learning_rate=nan",
         "sweep: train.learning_rate=nan must be a finite number"),
        ("sweep --out {out} model.num_latent=4,8",
         "unknown config key 'model.num_latent'; did you mean 'model.num_latents'?"),
        ("sweep --out {out} train.steps=0", "sweep: train.steps=0 must be > 0"),
        ("sweep --out {out} --seeds -1",
         "sweep: seeds=[-1] must be a non-empty list of distinct integers >= 0"),
        ("sweep --out {out} --seeds 0,0",
         "sweep: seeds=[0, 0] must be a non-empty list of distinct integers >= 0"),
        ("sweep --out {out} --seeds x", "--seeds='x' must be comma-separated integers, e.g. 0,1,2"),
        ("sweep --out {out} --seeds ,",
         "sweep: seeds=[] must be a non-empty list of distinct integers >= 0"),
        ("sweep --out {out} --preset nope",
         "sweep: preset='nope' is unknown; choose one of: imagenet, imagenet_io, modelnet40,"),
        ("sweep --out {out} --name ../up",
         "sweep: name='../up' must be a plain string (letters, digits, _.-; '/' groups results,"),
        ("sweep --out {out} model.num_latents=4,8 --zip model.latent_dim=8,16,32 "
         "model.self_heads=1,2",
         "sweep: [zip] lists must have equal lengths (model.latent_dim has 3, model.self_heads"),
        ("sweep --out {out} model.num_latents=4,8 --workers 0", "--workers=0 must be >= 1"),
        ("sweep --out {out} model.num_latents=4,8 --stop-timeout nan",
         "--stop-timeout=nan must be >= 0 (seconds)"),
        ("sweep --out {out} model.num_latents=4,8 --shard 5/2",
         "--shard='5/2': need 0 <= I < N (shards are numbered from 0)"),
        ("sweep --out {file} model.num_latents=4,8",
         "{file}: a file, not a results folder; choose another --out"),
        ("sweep --out {results} model.num_latents=4,8",
         '{results}/spec.toml holds another sweep: name is "toy" there, "results" here; choose'),
    ],
    "report": [
        ("report {missing}", "{missing}: no such results folder"),
        ("report {not_utf8_missing}", "{not_utf8_missing}: no such results folder"),
        ("report {file}", "{file}: no such results folder"),
        ("report {folder}",
         "{folder}: no run folders under {folder}/runs (run a spec first: perceiver-suite run"),
        ("report {run}",
         "{run}: no run folders under {run}/runs (run a spec first: perceiver-suite run SPEC"),
        ("report {spec_bad_toml}",
         "{spec_bad_toml}: bad TOML: Expected ']' at the end of a table declaration (at line 19,"),
        ("report {spec_empty}",
         '{spec_empty}: the spec is empty; it names at least its preset, e.g. preset = "digits"'),
        ("report {results_bad_spec}",
         "{results_bad_spec}/spec.toml: bad TOML: Expected ']' at the end of a table declaration"),
        ("report {results_hue}",
         "{results_hue}/spec.toml: [report] hue='model.num_latent' is not a varied key; did you"),
        ("report {results_summary_list}",
         "{results_summary_list}/runs/n8_s1/summary.json: holds an array ([1, 2]), not an object"),
        ("report {results_summary_empty}",
         "{results_summary_empty}/runs/n8_s1/summary.json: not readable JSON (Expecting value:"),
        ("report {results_config_list}",
         "{results_config_list}/runs/n8_s1/config.json: holds an array ([1, 2]), not an object of"),
        ("report {results_grid_list}",
         "{results_grid_list}/grid.json: holds an array ([1, 2]), not an object of keys"),
        ("report {results} --metric seed",
         "--metric='seed' is a config key, not a metric of {results} (metrics: eval/accuracy,"),
        ("report {results} --metric model.num_latents",
         "--metric='model.num_latents' is a config key, not a metric of {results} (metrics:"),
        ("report {results} --metric eval/acuracy",
         "--metric='eval/acuracy' is not a metric of {results}; did you mean 'eval/accuracy'?"),
        ("report {results} --rows model.num_latent",
         "report key 'model.num_latent' is not a varied key of {results}; did you mean"),
        ("report {results} --cols nope",
         "report key 'nope' is not a varied key of {results} (varied: model.num_latents)"),
        ("report {results} --reference nonsense",
         "--reference='nonsense': expected KEY=VALUE[,KEY=VALUE...]"),
        ("report {results} --reference model.num_latents=99",
         "--reference model.num_latents=99 matches 0 cells (the values there: model.num_latents:"),
        ("report {results} train.steps=5",
         "key=value overrides (train.steps=5) go with a spec, not with a results folder"),
    ],
    "compare": [
        ("compare {missing} {results}", "{missing}: no such results folder"),
        ("compare {results} {file}", "{file}: no such results folder"),
        ("compare {results} {folder}",
         "{folder}: no run folders under {folder}/runs (run a spec first: perceiver-suite run"),
        ("compare {results} {run}",
         "{run}: no run folders under {run}/runs (run a spec first: perceiver-suite run SPEC"),
        ("compare {results} {not_utf8_missing}", "{not_utf8_missing}: no such results folder"),
        ("compare {results} {results} --metric seed",
         "--metric='seed' is a config key, not a metric of {results} (metrics: eval/accuracy,"),
        ("compare {results} {results} --metric eval/acuracy",
         "--metric='eval/acuracy' is not a metric of {results}; did you mean 'eval/accuracy'?"),
        ("compare {results} {results_config_list}",
         "{results_config_list}/runs/n8_s1/config.json: holds an array ([1, 2]), not an object of"),
        ("compare {results} {results_summary_empty}",
         "{results_summary_empty}/runs/n8_s1/summary.json: not readable JSON (Expecting value:"),
        ("compare {results} {results_grid_list}",
         "{results_grid_list}/grid.json: holds an array ([1, 2]), not an object of keys"),
    ],
    "import_official": [
        ("import-official {missing}.pystate --workdir {out}",
         "{missing}.pystate: cannot read (No such file or directory)"),
        ("import-official {empty_npy} --workdir {out}",
         "{empty_npy}: not a readable checkpoint pickle (pickle exhausted before seeing STOP)"),
        ("import-official {not_utf8} --workdir {out}",
         "{not_utf8}: not a readable checkpoint pickle (pickle exhausted before seeing STOP)"),
        ("import-official {folder} --workdir {out}", "{folder}: cannot read (Is a directory)"),
        ("import-official {npz} --workdir {out}",
         "{npz}: not a readable checkpoint pickle ('ascii' codec can't decode byte 0x9a in"),
        ("import-official {list_pickle} --workdir {out}",
         "{list_pickle}: the top level is a list: expected an array or a dict of them"),
        ("import-official {official} --workdir {run}",
         "{run} already holds a run; import into a new folder"),
        ("import-official {official} --workdir {file}",
         "--workdir {file}: a file; expected a folder to write into"),
        ("import-official {official} --workdir {out} --preset nope",
         "unknown preset 'nope'; choose one of: imagenet, imagenet_io, modelnet40, audioset,"),
        ("import-official {official} --workdir {out} model.num_latents=-1",
         "model.num_latents=-1 must be > 0"),
        ("import-official {official} --workdir {out} train.learning_rate=nan",
         "train.learning_rate=nan must be a finite number"),
        ("import-official {official} --workdir {out} model.num_latent=4",
         "unknown config key 'model.num_latent'; did you mean 'model.num_latents'?"),
    ],
    "evaluate": [
        ("evaluate {missing}", "{missing}: no config.json (not a run folder)"),
        ("evaluate {not_utf8_missing}", "{not_utf8_missing}: no config.json (not a run folder)"),
        ("evaluate {file}", "{file}: no config.json (not a run folder)"),
        ("evaluate {folder}", "{folder}: no config.json (not a run folder)"),
        ("evaluate {results}", "{results}: no config.json (not a run folder)"),
        ("evaluate {config_list}",
         "{config_list}/config.json: holds an array ([1, 2]), not an object of keys"),
        ("evaluate {config_empty}",
         "{config_empty}/config.json: not readable JSON (Expecting value: line 1 column 1 (char"),
        ("evaluate {no_checkpoint}",
         "{no_checkpoint}: no checkpoints/ folder (not trained, or not imported, yet)"),
        ("evaluate {run} --batch-size 0", "--batch-size 0: must be at least 1"),
        ("evaluate {run} --batch-size -3", "--batch-size -3: must be at least 1"),
        ("evaluate {run} --split test",
         "argument --split: invalid choice: 'test' (choose from 'eval', 'train')"),
    ],
    "predict": [
        ("predict {run}",
         "predict takes one of --raw X.npy, --inputs X.npy, image files or --split eval|train"),
        ("predict {run} --raw {missing}.npy", "--raw {missing}.npy: no such file"),
        ("predict {run} --inputs {huge_npy}", "--inputs {huge_npy}: the header declares shape "
         "[10000000000, 8, 8, 1] of float32 (2,560,000,000,000 bytes), but the file holds"),
        ("predict {run} --raw {nan_npy}",
         "--raw {nan_npy}: 65 of 192 values are NaN or infinite"),
        ("predict {run} --raw {empty_npy}",
         "--raw {empty_npy}: the file is empty (0 bytes); expected a .npy array"),
        ("predict {run} --raw {not_utf8}",
         "--raw {not_utf8}: the file is empty (0 bytes); expected a .npy array"),
        ("predict {run} --raw {npz}",
         "--raw {npz}: an .npz archive; --raw takes one array in a .npy file (np.save, not"),
        ("predict {run} --raw {npz_named_npy}",
         "--raw {npz_named_npy}: an .npz archive; --raw takes one array in a .npy file (np.save,"),
        ("predict {run} --raw {no_examples}",
         "--raw {no_examples}: an empty batch (shape [0, 8, 8, 1]); expected at least one example"),
        ("predict {run} --raw {folder}", "--raw {folder}: a folder; expected a .npy file"),
        ("predict {run} --inputs {empty_npy}",
         "--inputs {empty_npy}: the file is empty (0 bytes); expected a .npy array"),
        ("predict {run} --inputs {npz}",
         "--inputs {npz}: an .npz archive; --inputs takes one array in a .npy file (np.save, not"),
        ("predict {run} --raw {raw} --top 0", "--top 0: must be at least 1"),
        ("predict {run} --raw {raw} --top -1", "--top -1: must be at least 1"),
        ("predict {run} --raw {raw} --batch-size 0", "--batch-size 0: must be at least 1"),
        ("predict {run} --raw {raw} --batch-size -1", "--batch-size -1: must be at least 1"),
        ("predict {run} --split eval --example -1",
         "--example -1: the eval split has 180 examples (0..179)"),
        ("predict {run} --split eval --example 100000",
         "--example 100000: the eval split has 180 examples (0..179)"),
        ("predict {run} --raw {raw} --example 1", "--example 1: goes with --split eval|train"),
        ("predict {run} {empty_png}",
         "{empty_png}: not a readable image (cannot identify image file '{empty_png}')"),
        ("predict {run} {folder}",
         "{folder}: not a readable image ([Errno 21] Is a directory: '{folder}')"),
        ("predict {run} {missing}.png",
         "{missing}.png: not a readable image ([Errno 2] No such file or directory:"),
        ("predict {run} {not_utf8}",
         "{not_utf8}: not a readable image (cannot identify image file"),
        ("predict {run} --raw {raw} --out {folder}",
         "--out {folder}: a folder; expected the .npy file to write"),
        ("predict {run} --raw {raw} --out {missing}/l.npy",
         "--out {missing}/l.npy: its folder does not exist"),
        ("predict {folder} --raw {raw}", "{folder}: no config.json (not a run folder)"),
        ("predict {file} --raw {raw}", "{file}: no config.json (not a run folder)"),
        ("predict {config_list} --raw {raw}",
         "{config_list}/config.json: holds an array ([1, 2]), not an object of keys"),
        ("predict {no_checkpoint} --raw {raw}",
         "{no_checkpoint}: no checkpoints/ folder (not trained, or not imported, yet)"),
    ],
    "attention": [
        ("attention {run} --raw {empty_npy} --out {out}",
         "--raw {empty_npy}: the file is empty (0 bytes); expected a .npy array"),
        ("attention {run} --raw {npz} --out {out}",
         "--raw {npz}: an .npz archive; --raw takes one array in a .npy file (np.save, not"),
        ("attention {run} --raw {no_examples} --out {out}",
         "--raw {no_examples}: an empty batch (shape [0, 8, 8, 1]); expected at least one example"),
        ("attention {run} --inputs {not_utf8} --out {out}",
         "--inputs {not_utf8}: the file is empty (0 bytes); expected a .npy array"),
        ("attention {run} --raw {raw} --example -1 --out {out}",
         "--example -1: --raw {raw} has 3 examples (0..2)"),
        ("attention {run} --raw {raw} --example 3 --out {out}",
         "--example 3: --raw {raw} has 3 examples (0..2)"),
        ("attention {run} --split eval --example -1 --out {out}",
         "--example -1: the eval split has 180 examples (0..179)"),
        ("attention {run} --raw {raw} --cross-attend 0 --out {out}",
         "--cross-attend 0: the model has cross-attends 1..2"),
        ("attention {run} --raw {raw} --cross-attend 9 --out {out}",
         "--cross-attend 9: the model has cross-attends 1..2"),
        ("attention {run} --raw {raw} --latents -1 --out {out}",
         "--latents -1: the model has 4 latents (0..3)"),
        ("attention {run} --raw {raw} --latents 99 --out {out}",
         "--latents 99: the model has 4 latents (0..3)"),
        ("attention {run} --raw {raw} --out {file}",
         "--out {file}: a file; expected a folder to write into"),
        ("attention {run} --raw {raw} --out {out} model.num_latents=8",
         "model.num_latents=8: attention maps are of the trained model; only compute-only"),
        ("attention {run} --raw {raw} --out {out} model.cross_attention_chunk=-1",
         "model.cross_attention_chunk=-1 must be >= 0"),
        ("attention {folder} --raw {raw} --out {out}",
         "{folder}: no config.json (not a run folder)"),
        ("attention {config_list} --raw {raw} --out {out}",
         "{config_list}/config.json: holds an array ([1, 2]), not an object of keys"),
        ("attention {run} --raw {not_utf8_missing} --out {out}",
         "--raw {not_utf8_missing}: no such file"),
        ("attention {run} --raw {raw} --out {out_not_utf8} --example -1",
         "--example -1: --raw {raw} has 3 examples (0..2)"),
    ],
    "bench": [
        ("bench --out {out} --steps 0", "--steps 0: must be at least 1"),
        ("bench --out {out} --steps -1", "--steps -1: must be at least 1"),
        ("bench --out {out} --tasks nope",
         "--tasks 'nope': name tasks from digits, mnist, fashion_mnist, cifar10, cifar100,"),
        ("bench --out {out} --tasks ,",
         "--tasks ',': name tasks from digits, mnist, fashion_mnist, cifar10, cifar100,"),
        ("bench --out {out} --peer --rounds 0", "--rounds 0: must be at least 1"),
        ("bench --out {out} --report 0", "--report 0: must be at least 1"),
        ("bench --out {out} --report -1", "--report -1: must be at least 1"),
        ("bench --out {out} --targets nope",
         "--targets 'nope': name targets from memory, compile, cache, bfloat16"),
        ("bench --out {out} --accelerator nope",
         "--accelerator 'nope': unknown part(s) nope; choose from devices, digits, demo_grid,"),
        ("bench --out {out} --accelerator devices --part-timeout devices=0",
         "--part-timeout 'devices=0': expected PART=SECONDS (SECONDS > 0) with PART one of"),
        ("bench --out {out} --image-folder {missing}",
         "image_folder: directory not found in {missing} (set data.data_dir or"),
        ("bench --out {out} --image-folder {file}",
         "image_folder: directory not found in {file} (set data.data_dir or"),
        ("bench --out {out} --video {missing}",
         "video_folder: directory not found in {missing} (set data.data_dir or"),
        ("bench --out {file} --tasks digits",
         "--out {file}: a file; expected a folder to write into"),
    ],
    "scaling": [
        ("scaling --out {out} --sizes 0", "--sizes='0' must be positive"),
        ("scaling --out {out} --sizes abc", "--sizes='abc' must be comma-separated integers"),
        ("scaling --out {out} --sizes 10",
         "--sizes=10: 2-D grids need square sizes (e.g. 1024, 50176); use --grid 1d for others"),
        ("scaling --out {out} --latents -4", "--latents='-4' must be positive"),
        ("scaling --out {out} --batch 0", "--batch 0: must be at least 1"),
        ("scaling --out {out} --batch -1", "--batch -1: must be at least 1"),
        ("scaling --out {out} --models nope",
         "--models 'nope': name models from perceiver, perceiver_io, transformer"),
        ("scaling --out {out} --models ,",
         "--models ',': name models from perceiver, perceiver_io, transformer"),
        ("scaling --out {out} --budget-s -1", "--budget-s -1.0: must be more than 0"),
        ("scaling --out {out} --max-memory-gb 0", "--max-memory-gb 0.0: must be more than 0"),
        ("scaling --out {out} model.num_latents=-1", "model.num_latents=-1 must be > 0"),
        ("scaling --out {out} train.learning_rate=nan",
         "train.learning_rate=nan must be a finite number"),
        ("scaling --out {out} model.num_latent=8",
         "unknown config key 'model.num_latent'; did you mean 'model.num_latents'?"),
        ("scaling --replot --out {folder}",
         "{folder}/scaling.csv: not found; run `perceiver-suite scaling --out {folder}` first"),
        ("scaling --replot --out {missing}",
         "{missing}/scaling.csv: not found; run `perceiver-suite scaling --out {missing}` first"),
        ("scaling --replot --out {scaling_empty}",
         "{scaling_empty}/scaling.json: not found; run `perceiver-suite scaling --out"),
        ("scaling --out {file} --sizes 16",
         "--out {file}: a file; expected a folder to write into"),
    ],
}
CASES = [pytest.param(command, argv, said, id=argv)
         for command, cases in HOSTILE.items() for argv, said in cases]


def commands() -> list[str]:
    """The parser's commands, as their registering functions are named."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(name.replace("-", "_") for name in sub.choices)


def places(world: dict[str, Path], here: Path) -> dict[str, str]:
    """What the ``{name}``s of a case stand for, ``here`` being its own folder."""
    return {**{k: str(v) for k, v in world.items()}, "out": str(here / "out"),
            "out_not_utf8": str(here / NOT_UTF8)}


# -------------------------------------------------------------------------------- the tests


def test_the_catalogue_knows_every_command():
    assert sorted(HOSTILE) == commands()
    assert all(len(cases) >= 2 for cases in HOSTILE.values())


@pytest.mark.parametrize("command, template, said", CASES)
def test_a_hostile_argument_is_exit_2_one_line_and_nothing_written(
        world, tmp_path, monkeypatch, capfd, command, template, said):
    monkeypatch.chdir(tmp_path)  # default outputs (results/..., bench's) would land here
    before = snapshot(world["world"], tmp_path)
    where = places(world, tmp_path)
    try:
        code = main([word.format(**where) for word in template.split()])
    except SystemExit as e:  # argparse's own refusal: its usage, then its error line
        code, usage = e.code, True
    else:
        usage = False
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == 2, err
    assert not any("Traceback" in line for line in err), err
    if usage:
        assert err[0].startswith("usage: perceiver-suite") and err[-1].startswith(
            "perceiver-suite"), err
        assert all(line.startswith(("usage:", " ")) for line in err[:-1]), err
    else:
        assert len(err) == 1 and err[0].startswith("perceiver-suite: error: "), err
    shown = said.format(**where).encode("utf-8", "replace").decode()  # as capfd writes it
    assert shown in err[-1], err
    assert snapshot(world["world"], tmp_path) == before  # nothing written, anywhere


def test_run_refuses_a_misspelt_report_hue_before_anything_trains(world, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(world["spec_hue"]), "--out", str(out)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"perceiver-suite: error: {world['spec_hue']}: [report] hue='model.num_cross_attend' "
        "is not a varied key; did you mean 'model.num_cross_attends'? (varied: "
        "model.num_cross_attends)"]
    assert not out.exists()


def test_a_reader_that_closes_the_pipe_ends_predict_quietly(world):
    """``perceiver-suite predict ... | head``: no traceback, and the status of a process
    SIGPIPE ended (128 + 13), as the Python docs' recipe for SIGPIPE has it."""
    proc = subprocess.Popen([sys.executable, "-m", "suite", "predict", str(world["run"]),
                             "--raw", str(world["raw"])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the table is printed
    err = proc.stderr.read()
    assert (proc.wait(timeout=300), err) == (141, b"")


def test_a_name_that_is_not_utf8_is_one_line_from_a_real_process(world):
    """The real stderr, not a test's capture: the name is written escaped, not a crash."""
    name = os.fsencode(world["not_utf8_missing"])
    proc = subprocess.run([os.fsencode(sys.executable), b"-m", b"suite", b"report", name],
                          capture_output=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count(b"\n") == 1, proc.stderr
    assert proc.stderr.startswith(b"perceiver-suite: error: ") and b"caf" in proc.stderr
