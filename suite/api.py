"""The suite from Python: describe, train, run, report and compare as a notebook or a
script calls them. The ``perceiver-suite`` commands are thin layers over these
functions, so each does what its command does, and raises where the command exits.

    from suite import api

    api.describe("digits", model__num_latents=16)["params"]          # 75,884
    done = api.train("digits", workdir="runs/n16", model__num_latents=16,
                     train__steps=100)
    done.final["eval/accuracy"], done.metrics.tail()
    rows = api.run("ablations/demo.toml", workers=2)                 # results/demo
    api.report("results/demo").table                                 # the report's table.csv
    api.compare("results/demo", "results/demo_v2").table             # per-cell deltas, p

Config keys are dotted (``model.num_latents``), which a keyword cannot spell: give them
as ``overrides={"model.num_latents": 8}`` or as keywords with a double underscore for
each dot, ``model__num_latents=8``, ``model__inverted__renorm_eps=1e-6`` (``seed=3`` as
it is). Values are typed (``8``, ``(8, 8)``, ``True``) or text as on a command line
(``"8,8"``) and are checked as the command line's are; a key given both ways is refused.

A mistake (an unknown key, preset or option, a malformed spec, a plugin that does not
import, a folder that holds no results) raises a :class:`suite.errors.SuiteError`
subclass whose message is the one line the command prints before exiting with status 2.
SIGINT/SIGTERM during :func:`train` (a notebook's stop button) saves a checkpoint and
raises :class:`suite.training.stop.Stopped`; calling again resumes, bit-identically.

Plugins (:mod:`suite.extend`): ``plugins=["my_variants.py", "my_pkg.variants"]`` loads
user code before the config is read, files relative to the working directory, as
``--plugin`` does; :func:`load_plugins` loads them once for the session. A grid's runs
train in worker processes, which import the plugins their configs record: register in a
file or module, not in a notebook cell (a cell's registrations serve describe and train).

Public and stable from perceiver-suite 0.2: ``config``, ``describe``, ``train``,
``run``, ``report``, ``compare``, ``load_plugins``, ``RunResult``, ``Tables`` and the
:mod:`suite.extend` names re-exported here.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from suite import config as cfg_lib
from suite import extend
from suite.config import Config
from suite.errors import ConfigError, SpecError, SuiteError
from suite.extend import (  # noqa: F401  (re-exported: write a variant from here too)
    Inputs,
    NoKnobs,
    register,
    register_cross_attention,
    register_latent_init,
    register_mlp,
    register_model,
    register_position_encoding,
    register_self_attention,
)
from suite.files import read_json, read_jsonl
from suite.sweeps import plan as plan_lib

Log = Callable[[str], None]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_plugins(*specs: str | Path) -> list[Any]:
    """Import plugins (``.py`` files relative to the working directory, or module names)
    once per process, as ``--plugin`` does; the ``suite.plugins.Plugin`` records.

    >>> api.load_plugins("examples/inverted_cross_attention/plugin.py")
    """
    return extend.load_plugins([str(s) for s in specs])


def dotted(overrides: Mapping[str, Any] | None, keywords: Mapping[str, Any],
           where: str) -> dict[str, Any]:
    """``overrides`` and ``model__num_latents=8`` keywords as one ``{dotted key: value}``."""
    out = dict(overrides or {})
    for key, value in keywords.items():
        name = key.replace("__", ".")
        if name != "seed" and "." not in name:
            raise ConfigError(f"{where}: unknown option {key}={value!r}; a config key as a "
                              "keyword takes '__' for each '.', e.g. model__num_latents=8")
        if name in out:
            raise ConfigError(f"{where}: {name} is given twice ({key}= and in overrides)")
        out[name] = value
    return out


def config(preset_or_config: str | Path | Config | Mapping[str, Any] | None = None, *,
           plugins: Iterable[str] = (), overrides: Mapping[str, Any] | None = None,
           workdir: str | Path | None = None, **keywords: Any) -> Config:
    """The resolved, validated config: a preset's name, a ``Config``, a ``config.json``'s
    dict, a run folder or its ``config.json`` (a ``Path``), or None: ``workdir``'s
    config if it has one (``train --workdir DIR`` without ``--preset``), else the default
    preset; overrides on top.

    >>> api.config("digits", model__num_latents=8).model.num_latents
    8
    """
    load_plugins(*plugins)
    changes = dotted(overrides, keywords, "config")
    start = preset_or_config
    if start is None and workdir is not None and (Path(workdir) / "config.json").is_file():
        start = Path(workdir)
    if isinstance(start, Config):
        return cfg_lib.apply_overrides(start, changes) if changes else start
    if isinstance(start, Path) or (isinstance(start, str) and start not in cfg_lib.PRESETS
                                   and Path(start).exists()):
        path = Path(start) / "config.json" if Path(start).is_dir() else Path(start)
        start = read_json(path) if path.is_file() else None
        if not isinstance(start, Mapping):
            raise ConfigError(f"{path}: not a run folder's config.json (a JSON object)")
    if isinstance(start, Mapping):
        return cfg_lib.apply_overrides(cfg_lib.from_dict(start), changes)
    return cfg_lib.build(start, changes)


def describe(preset_or_config: str | Path | Config | Mapping[str, Any] | None = None, *,
             plugins: Iterable[str] = (), overrides: Mapping[str, Any] | None = None,
             xla: bool = True, memory: bool = False, **keywords: Any) -> dict[str, Any]:
    """What ``describe --json`` prints: ``params``, the forward FLOPs per example
    (``flops_analytic``, with ``flops_count`` saying "analytic" or why XLA's count of the
    compiled program stands in, e.g. a plugin model without a ``flops``), XLA's count
    (``flops_xla``, unless ``xla=False``), the train step's compile time and memory in
    bytes (``train_step``, with ``memory=True``: ``describe --train``), and ``config``.

    >>> info = api.describe("digits", plugins=["examples/mixer/plugin.py"],
    ...                     model__kind="latent_mixer")
    >>> info["params"], info["flops_xla"], info["flops_count"]
    """
    from suite.analysis.describe import describe as describe_config

    chosen = config(preset_or_config, plugins=plugins,
                    overrides=dotted(overrides, keywords, "describe"))
    return describe_config(chosen, xla=xla, train=memory)


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One trained run: its folder, config, ``summary.json`` and ``metrics.jsonl``."""

    workdir: Path
    config: Config
    summary: dict[str, Any]  # summary.json: status, metrics, costs, provenance
    metrics: pd.DataFrame  # metrics.jsonl: one row per logged or evaluated step
    final: dict[str, float]  # the final metrics, e.g. final["eval/accuracy"]

    @property
    def status(self) -> str:
        """completed, or failed (``summary["reason"]`` says why)."""
        return str(self.summary.get("status"))


def train(preset_or_config: str | Path | Config | Mapping[str, Any] | None = None, *,
          workdir: str | Path | None = None, plugins: Iterable[str] = (),
          overrides: Mapping[str, Any] | None = None, retry_failed: bool = False,
          progress: bool | None = None, log: Log | None = None, **keywords: Any) -> RunResult:
    """Train and evaluate one config in ``workdir``, as ``perceiver-suite train`` does:
    resuming from its newest checkpoint, returning a completed run as it is, refusing a
    folder of another config. ``workdir`` defaults to ``runs/<run id>`` (the id hashes
    the config's non-default keys), so the same call resumes the same run. ``log``: where
    progress lines go (default: stderr); ``progress``: a progress bar (default: on a
    terminal).

    >>> done = api.train("digits", workdir="runs/quick", train__steps=50)
    >>> done.status, done.final["eval/accuracy"]
    """
    from suite.sweeps.spec import run_id
    from suite.training.trainer import train_and_evaluate

    chosen = config(preset_or_config, plugins=plugins, workdir=workdir,
                    overrides=dotted(overrides, keywords, "train"))
    folder = Path(workdir) if workdir is not None else Path("runs") / run_id({}, chosen)
    summary = train_and_evaluate(chosen, folder, retry_failed=retry_failed, progress=progress,
                                 log=log)
    rows = read_jsonl(folder / "metrics.jsonl") if (folder / "metrics.jsonl").is_file() else []
    return RunResult(folder, chosen, summary, pd.DataFrame(rows),
                     dict(summary.get("metrics") or {}))


def run(spec: str | Path | Mapping[str, Any], *, out: str | Path | None = None,
        workers: int | None = None, plugins: Iterable[str] = (),
        overrides: Mapping[str, Any] | None = None, retry_failed: bool = False,
        force: bool = False, stop_timeout: float = 120.0, report: bool = True,
        log: Log | None = None, **keywords: Any) -> pd.DataFrame:
    """Train a grid as ``perceiver-suite run`` does: every run validated first, finished
    runs skipped, partial ones resumed, ``workers`` at a time (each its own process; on
    CPUs the cores are split between them), the report written to ``OUT/report/``. The
    spec is a TOML file or a dict of the same keys (``name``, ``preset``, ``seeds``,
    ``plugins``, ``fixed``, ``grid``, ``zip``, ``report``), written to ``OUT/spec.toml``.
    Overrides make another experiment, in ``results/<name>+<key>=<value>`` unless ``out``.

    Returns the experiment's rows (one per run, never-started ones ``missing``: config
    keys, status, final metrics, costs); ``rows.attrs`` holds ``out``, ``outcome`` (e.g.
    "4 completed, 0 failed") and ``exit_code`` (the command's exit status).

    >>> rows = api.run({"name": "nl", "preset": "digits", "seeds": [0, 1],
    ...                 "fixed": {"train.steps": 100},
    ...                 "grid": {"model.num_latents": [8, 32]}}, workers=2)
    >>> rows.groupby("model.num_latents")["eval/accuracy"].mean()
    """
    from suite.sweeps.runner import run_grid

    if workers is not None and workers < 1:
        raise SpecError(f"workers={workers} must be >= 1")
    load_plugins(*plugins)
    grid = plan_lib.plan(spec, out=out, overrides=dotted(overrides, keywords, "run"),
                         force=force)
    say = log or _say
    for line in grid.notes:
        say(f"note: {line}")
    args = ["perceiver-suite", "run", str(grid.spec.path), *(["--out", str(out)] if out else []),
            *(["--workers", str(workers)] if workers else []),
            *(f"--plugin={p}" for p in plugins), *(f"{k}={v}" for k, v in grid.overrides.items())]
    note = plan_lib.claim(grid, shlex.join(args))
    if note:
        say(note)
    outcome = run_grid(grid.runs, grid.out, spec_name=grid.spec.name, workers=workers,
                       retry_failed=retry_failed, stop_timeout=stop_timeout)
    say(f"{outcome.summary()}; results in {grid.out / 'results.csv'}")
    for run_id, reason in outcome.errors.items():
        say(f"error: {run_id}: {reason}")
    if report and not outcome.stopped_by:
        try:
            _report_files(grid.out)
        except SuiteError as e:
            say(f"no report: {e}")
    return _rows(grid.out, outcome)


def _rows(out: Path, outcome: Any) -> pd.DataFrame:
    from suite.analysis import experiment

    rows = experiment.load(out).frame
    rows.attrs.update(out=str(out), outcome=outcome.summary(), exit_code=outcome.exit_code)
    return rows


@dataclasses.dataclass(frozen=True)
class Tables:
    """A written report: its table as a frame and where its files are."""

    folder: Path  # the results folder
    table: pd.DataFrame  # report/table.csv: one row per cell (mean, std, CI, p, n, costs)
    markdown: Path  # report/table.md
    html: Path  # report/index.html (self-contained)
    figures: tuple[Path, ...]  # the PNG figures
    files: dict[str, Path]  # every file written, by name


def results_folder(target: str | Path, overrides: Mapping[str, Any] | Sequence[str] = ()
                   ) -> Path:
    """A results folder given as itself, or as the spec (and overrides) that wrote it."""
    path, text = Path(target), plan_lib.as_text(overrides)
    if path.suffix == ".toml" and path.is_file():
        from suite.sweeps import record
        from suite.sweeps import spec as spec_lib

        return record.default_out(spec_lib.load(path, max_runs=None), text)
    if text:
        said = " ".join(f"{k}={v}" for k, v in text.items())
        raise SuiteError(f"key=value overrides ({said}) go with a spec, not with a results "
                         f"folder ({target})")
    return path


def parse_reference(text: str | Mapping[str, Any] | None) -> dict[str, str] | None:
    """``"a.b=1,c.d=x"`` (or a dict) -> ``{"a.b": "1", "c.d": "x"}``."""
    if not text:
        return None
    if isinstance(text, Mapping):
        return plan_lib.as_text(text)
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise SuiteError(f"--reference={text!r}: expected KEY=VALUE[,KEY=VALUE...]")
        out[key.strip()] = value.strip()
    return out


def _report_files(out: Path, **options: Any) -> dict[str, Path]:
    from suite.analysis.report import write_report

    return write_report(out, **options)


def report(folder: str | Path, *, metric: str | None = None, rows: list[str] | None = None,
           cols: list[str] | None = None, reference: str | Mapping[str, Any] | None = None,
           attention: bool = False, plots: bool = True,
           overrides: Mapping[str, Any] | Sequence[str] = (), **keywords: Any) -> Tables:
    """Write ``folder/report/`` as ``perceiver-suite report`` does (mean ± std over seeds,
    95% t intervals, exact tests against the best cell or ``reference``, Holm-adjusted;
    figures; index.html) and return its table. ``folder``: a results folder, or the spec
    that wrote it (with the overrides its run took). ``reference``: the cell to test
    against, ``{"model.num_latents": 64}`` or ``"model.num_latents=64"``.

    >>> tables = api.report("results/demo", metric="eval/accuracy")
    >>> tables.table[["model.num_latents", "eval/accuracy mean", "p_vs_best_holm"]]
    """
    if not isinstance(overrides, Mapping):
        overrides = cfg_lib.parse_overrides(list(overrides))
    out = results_folder(folder, dotted(overrides, keywords, "report"))
    if not out.is_dir():
        raise SuiteError(f"{out}: no such results folder")
    files = _report_files(out, metric=metric, rows=rows, cols=cols, plots=plots,
                          reference=parse_reference(reference), attention=attention)
    try:
        table = pd.read_csv(files["table.csv"])
    except pd.errors.EmptyDataError:  # no cell to tabulate
        table = pd.DataFrame()
    return Tables(out, table, files["table.md"], files["index.html"],
                  tuple(p for p in files.values() if p.suffix == ".png"), files)


def compare(old: str | Path, new: str | Path, *, metric: str | None = None,
            allow_config_diff: bool = False) -> Any:
    """Two results folders of one experiment, cell by cell, as ``perceiver-suite compare``
    does: a ``suite.analysis.compare.Comparison`` with ``table`` (old, new, delta, p,
    p_holm, verdict per cell), ``moved`` (cells beyond seed noise), ``differences`` (code,
    libraries, plugins, machine) and ``exit_code``. Folders that ran other configs
    outside the varied keys raise, unless ``allow_config_diff``.

    >>> api.compare("results/demo", "results/demo_bf16").table
    """
    from suite.analysis.compare import compare as compare_folders

    old, new = Path(old), Path(new)
    for folder in (old, new):
        if not folder.is_dir():
            raise SuiteError(f"{folder}: no such results folder")
    return compare_folders(old, new, metric, allow_config_diff=allow_config_diff)
