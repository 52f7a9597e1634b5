"""Plugins: user code named by a file, a module, a spec or an installed entry point is
imported once; one that fails is one line naming it (exit 2); a run records what it
loaded, and a fresh process (a grid's worker, a resumed run) loads it again."""

import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from suite import config as C
from suite import extend, plugins
from suite.cli import main
from suite.errors import PluginError, SpecError
from suite.files import read_json, write_json_atomic
from suite.sweeps import spec as spec_lib
from suite.training.run_folder import plugin_changes
from suite.training.trainer import train_and_evaluate

ROOT = Path(__file__).parent.parent

SCALED = textwrap.dedent('''
    import dataclasses

    from flax import nnx

    from suite import extend
    from suite.models.layers import MLP


    @dataclasses.dataclass(frozen=True)
    class ScaledKnobs:
        factor: float = 1.0
        mode: str = "plain"


    @extend.register_mlp("scaled", knobs=ScaledKnobs)
    class Scaled(nnx.Module):
        """The standard MLP, its output times ``factor``."""

        def __init__(self, knobs, m, *, dim, widening_factor, rngs, dtype=None):
            self.factor = knobs.factor
            self.inner = MLP(dim, widening_factor, rngs=rngs, dtype=dtype)

        def __call__(self, x):
            return self.factor * self.inner(x)
''')


@pytest.fixture(scope="module")
def scaled(tmp_path_factory) -> Path:
    path = tmp_path_factory.getbasetemp() / "plugins" / "scaled_mlp.py"
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        path.write_text(SCALED)
    return path


def run_cli(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("source,expected", [
    ("import dataclasses\ndef f(:\n    pass\n",
     "does not import: SyntaxError: invalid syntax (line 2)"),
    ("x = 1\n\nraise RuntimeError('boom')\n", "does not import: RuntimeError: boom (line 3)"),
    ("import no_such_package_anywhere\n",
     "does not import: ModuleNotFoundError: No module named 'no_such_package_anywhere' (line 1)"),
])
def test_a_plugin_that_does_not_import_is_one_line_naming_it_exit_2(tmp_path, capsys, source,
                                                                    expected):
    bad = tmp_path / "broken_plugin.py"
    bad.write_text(source)
    code, err = run_cli(["describe", "--plugin", str(bad), "--no-xla"], capsys)
    assert code == 2 and err == f"perceiver-suite: error: plugin {bad} {expected}"


def test_a_missing_file_or_module_is_one_line(tmp_path):
    with pytest.raises(PluginError, match=r"plugin nowhere\.py: no such file"):
        extend.load_plugins(["nowhere.py"], base=tmp_path)
    with pytest.raises(PluginError, match=r"plugin no_such\.mod: no such module"):
        extend.load_plugins(["no_such.mod"])


def test_a_plugin_that_fails_leaves_none_of_its_registrations(tmp_path):
    half = tmp_path / "half.py"
    half.write_text("from suite import extend\n"
                    "extend.register_latent_init('half_done', lambda k, m, key, shape: 0)\n"
                    "raise ValueError('then a mistake')\n")
    with pytest.raises(PluginError, match="ValueError: then a mistake"):
        extend.load_plugins([str(half)])
    assert "half_done" not in extend.names("latent_init")


def test_a_plugin_file_is_imported_once_and_a_module_by_its_name(tmp_path, monkeypatch,
                                                                 scaled):
    first = extend.load_plugins([str(scaled)])
    assert extend.load_plugins([str(scaled)]) == first  # the same record, not a second import
    assert first[0].kind == "file" and first[0].sha256 == plugins.sha256_of(scaled)
    (tmp_path / "module_plugin_for_tests.py").write_text(
        "from suite import extend\n"
        "def lecun(knobs, m, key, shape):\n"
        "    import jax\n"
        "    return jax.random.normal(key, shape) / shape[1] ** 0.5\n"
        "extend.register_latent_init('lecun', lecun)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (loaded,) = extend.load_plugins(["module_plugin_for_tests"])
    assert loaded.kind == "module" and loaded.path == str(tmp_path / "module_plugin_for_tests.py")
    assert extend.get("latent_init", "lecun").where == "module_plugin_for_tests:lecun"


def test_a_spec_loads_its_plugins_relative_to_itself_and_grids_their_knobs(tmp_path):
    (tmp_path / "variants").mkdir()
    (tmp_path / "variants" / "scaled_mlp.py").write_text(SCALED.replace('"scaled"', '"halved"'))
    spec_path = tmp_path / "scaled.toml"
    spec_path.write_text(textwrap.dedent('''
        name = "scaled"
        preset = "digits"
        plugins = ["variants/scaled_mlp.py"]
        [fixed]
        "model.mlp" = "halved"
        [grid]
        model.halved.factor = [0.5, 1.0]
    '''))
    spec = spec_lib.load(spec_path)
    assert spec.plugins == (str(tmp_path / "variants" / "scaled_mlp.py"),)
    runs = spec_lib.expand(spec)
    assert [dict(r.config.model.variants)["halved"].factor for r in runs] == [0.5, 1.0]
    assert runs[0].id.startswith("factor=0.5_") and runs[0].id != runs[1].id


def test_a_spec_whose_plugin_fails_names_the_spec_and_the_plugin(tmp_path):
    (tmp_path / "oops.py").write_text("1 / 0\n")
    spec_path = tmp_path / "oops.toml"
    spec_path.write_text('preset = "digits"\nplugins = ["oops.py"]\n')
    with pytest.raises(SpecError) as err:
        spec_lib.load(spec_path)
    assert str(err.value) == (f"{spec_path}: plugin {tmp_path / 'oops.py'} does not import: "
                              "ZeroDivisionError: division by zero (line 1)")


def test_a_fresh_process_loads_the_plugins_a_config_records(tmp_path, scaled):
    extend.load_plugins([str(scaled)])
    config = C.build("digits", {"model.mlp": "scaled", "model.scaled.factor": 2})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(C.to_dict(config)))
    code = ("import json, sys; from suite import config as C; "
            "c = C.from_dict(json.load(open(sys.argv[1]))); "
            "print(c.model.mlp, dict(c.model.variants)['scaled'].factor)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                          timeout=300)
    assert done.stdout.strip() == "scaled 2.0", done.stderr


def test_installed_entry_points_register_in_every_process(tmp_path):
    site = tmp_path / "site"
    (site / "ep_variants").mkdir(parents=True)
    (site / "ep_variants" / "__init__.py").write_text(
        "from suite import extend\n"
        "extend.register_latent_init('ep_zeros', lambda knobs, m, key, shape: 0 * key)\n")
    dist = site / "ep_variants-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-variants\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[perceiver_suite.plugins]\nzeros = ep_variants\n")
    code = ("from suite import extend; e = extend.get('latent_init', 'ep_zeros'); "
            "print(e.where, e.plugin.source)")
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.stdout.split()[-1] == "entry-point:zeros", done.stderr


def test_to_dict_records_only_the_plugins_a_config_uses(scaled):
    extend.load_plugins([str(scaled)])
    assert "plugins" not in C.to_dict(C.build("digits", {}))
    used = C.to_dict(C.build("digits", {"model.mlp": "scaled"}))
    assert [p["plugin"] for p in used["plugins"]] == [str(scaled)]


def test_a_run_resumed_after_its_plugin_changed_says_so_in_its_log_and_summary(tmp_path,
                                                                               scaled):
    extend.load_plugins([str(scaled)])
    config = C.build("digits", {"model.mlp": "scaled", "train.steps": 2, "train.batch_size": 8,
                                "train.checkpoint_every": 1, "train.eval_train_examples": 0,
                                "data.eval_limit": 16})
    train_and_evaluate(config, tmp_path, progress=False, log=lambda m: None)
    assert plugin_changes(tmp_path) == []
    (tmp_path / "summary.json").unlink()  # as if killed after its first checkpoint
    shutil.rmtree(tmp_path / "checkpoints" / "2")
    saved = read_json(tmp_path / "config.json")
    saved["plugins"][0]["sha256"] = "0" * 64  # the file as it was when the run started
    write_json_atomic(tmp_path / "config.json", saved)
    lines = []
    summary = train_and_evaluate(config, tmp_path, progress=False, log=lines.append)
    said = [ln for ln in lines if "changed since the run started" in ln]
    assert said == [f"{tmp_path.name}: plugin {scaled} changed since the run started (sha256 "
                    f"000000000000 then, {plugins.sha256_of(scaled)[:12]} now); resuming with "
                    "the code as it is now"]
    assert summary["plugins_changed"] == [said[0].split(": ", 1)[1]]


def test_a_module_imported_the_ordinary_way_is_recorded_by_its_name(tmp_path, monkeypatch):
    (tmp_path / "imported_variants.py").write_text(
        "from suite import extend\n"
        "def ones(knobs, m, key, shape):\n"
        "    import jax.numpy as jnp\n"
        "    return jnp.ones(shape)\n"
        "extend.register_latent_init('ones', ones)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("imported_variants")  # as a script would: import my_variants
    record = C.to_dict(C.build("digits", {"model.latent_init": "ones"}))["plugins"]
    assert record == [{"plugin": "imported_variants",
                       "path": str(tmp_path / "imported_variants.py"),
                       "sha256": plugins.sha256_of(tmp_path / "imported_variants.py")}]


def test_a_moved_plugin_file_is_passed_over_when_loaded_from_its_new_place(tmp_path, scaled):
    extend.load_plugins([str(scaled)])
    data = C.to_dict(C.build("digits", {"model.mlp": "scaled"}))
    data["plugins"][0]["plugin"] = str(tmp_path / "was_here.py")  # the run's old machine
    assert C.from_dict(data).model.mlp == "scaled"  # registered from where it is now
    data["model"]["mlp"] = "gone_with_it"
    with pytest.raises(PluginError) as err:
        C.from_dict(data)
    assert str(err.value) == (f"plugin {tmp_path / 'was_here.py'}: no such file (the run's "
                              "config records it); pass --plugin FILE where it is now")
