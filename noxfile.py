"""Sessions: ``nox -s demo`` (the main job), ``nox -s tests``, and the suite's other jobs.

Every session installs the package and its dependencies into its own virtualenv, so a
fresh machine needs only Python and nox. The jobs install what digits needs; ``tests``
adds every task's readers (``.[test,all]``), ``bench -- --video`` PyAV. A job on video,
audio or ModelNet40 files names its extra (``PERCEIVER_SUITE_EXTRAS=video``, ``audio``,
``modelnet`` or ``all``). On a GPU or TPU machine, name the extra:
``PERCEIVER_SUITE_EXTRAS=cuda nox -s demo`` installs jax's CUDA wheels; jobs then run on
whatever JAX finds (set ``JAX_PLATFORMS`` to choose). Tests run on the CPU unless
``JAX_PLATFORMS`` says otherwise.
"""

from __future__ import annotations

import os
import re
import shutil

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
PYTHON = os.environ.get("NOX_PYTHON") or None  # default: the interpreter running nox

TEST_ENV = {"JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"), "TF_CPP_MIN_LOG_LEVEL": "2"}
JOB_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}  # JAX_PLATFORMS passes through if set
EXTRAS = [e.strip() for e in os.environ.get("PERCEIVER_SUITE_EXTRAS", "").split(",") if e.strip()]


def _install(session: nox.Session, *extras: str) -> None:
    wanted = [*extras, *EXTRAS]
    session.install("-e", f".[{','.join(wanted)}]" if wanted else ".")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite (fast on 2 CPU cores). Extra arguments go to pytest."""
    _install(session, "test", "all")  # every task's readers: video, audio, HDF5
    session.run("pytest", *(session.posargs or ["-q", "-n", "2"]), env=TEST_ENV)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the package, tests and this file."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "suite", "tests", "noxfile.py")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The docs site, docs/ built into site/ by ``mkdocs build --strict``.

    A broken link or anchor, a missing page or a spec key without its line in
    docs/hooks.py fails the build."""
    _install(session, "docs")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs,
                env={**JOB_ENV, "NO_MKDOCS_2_WARNING": "1"})


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job: train the demo grid on the bundled digits; ``run`` writes its report
    and prints its table."""
    _install(session)
    session.run("perceiver-suite", "run", "ablations/demo.toml", *session.posargs, env=JOB_ENV)
    _render_check(session, "results/demo/report/index.html")


@nox.session(python=PYTHON)
def ablate(session: nox.Session) -> None:
    """Run a spec and report it: ``nox -s ablate -- ablations/latents.toml [--workers 2]``."""
    if not session.posargs:
        session.error("usage: nox -s ablate -- SPEC [perceiver-suite run options]")
    _install(session)
    spec, args = session.posargs[0], session.posargs[1:]
    session.run("perceiver-suite", "run", *session.posargs, env=JOB_ENV)
    out = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--out"), None)
    overrides = [a for a in args if re.match(r"^(seed|[A-Za-z_]\w*\.[A-Za-z_]\w*)=", a)]
    # the spec and its overrides name the results folder the run wrote
    session.run("perceiver-suite", "report", *([out] if out else [spec, *overrides]),
                env=JOB_ENV)


@nox.session(python=PYTHON)
def report(session: nox.Session) -> None:
    """Rebuild reports: ``nox -s report -- results/demo [results/latents ...]``."""
    _install(session)
    folders = session.posargs or ["results/demo"]
    for folder in folders:
        session.run("perceiver-suite", "report", folder, env=JOB_ENV)
        _render_check(session, os.path.join(folder, "report", "index.html"))


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Input pipeline vs train step throughput: writes results/bench/pipeline.{csv,md}."""
    _install(session, *(["video"] if "--video" in session.posargs else []))
    session.run("perceiver-suite", "bench", *session.posargs, env=JOB_ENV)


@nox.session(python=PYTHON, name="bench-step")
def bench_step(session: nox.Session) -> None:
    """The fast-step targets (memory, compile, cache, bf16): writes results/bench/targets.*"""
    _install(session)
    session.run("perceiver-suite", "bench", "--targets", *session.posargs, env=JOB_ENV)


@nox.session(python=PYTHON)
def accelerator(session: nox.Session) -> None:
    """The GPU check, at most 8 minutes (tiny sizes on a CPU): devices, digits, the demo grid
    on 2 workers, the ImageNet step in float32 and bfloat16, Fashion-MNIST; writes
    results/bench/accelerator.{md,csv}. ``PERCEIVER_SUITE_EXTRAS=cuda nox -s accelerator``"""
    _install(session)
    session.run("perceiver-suite", "bench", "--accelerator", *session.posargs, env=JOB_ENV)


@nox.session(python=PYTHON, name="bench-report")
def bench_report(session: nox.Session) -> None:
    """report on 1,000 generated run folders, timed: writes results/bench/report.*"""
    _install(session)
    session.run("perceiver-suite", "bench", "--report", *(session.posargs or ["1000"]),
                env=JOB_ENV)


@nox.session(python=PYTHON, name="bench-peer")
def bench_peer(session: nox.Session) -> None:
    """Our train step against perceiver-pytorch (installed here, never in the suite)."""
    _install(session)
    session.install("torch==2.13.0", "perceiver-pytorch==0.11.0", "einops>=0.8")
    session.run("perceiver-suite", "bench", "--peer", *session.posargs, env=JOB_ENV)


@nox.session(python=PYTHON, name="hf-fixture")
def hf_fixture(session: nox.Session) -> None:
    """Regenerate tests/fixtures/hf_perceiver/ from Hugging Face's own Perceiver (installed
    here, never in the suite): a tiny random classifier and its logits."""
    session.install("torch==2.13.0", "transformers>=4.45", "safetensors>=0.4", "numpy")
    session.run("python", "tests/fixtures/hf_perceiver/make.py", env=JOB_ENV)


@nox.session(python=PYTHON)
def scaling(session: nox.Session) -> None:
    """Perceiver vs Transformer compute against input size: writes results/scaling/."""
    _install(session)
    session.run("perceiver-suite", "scaling", *session.posargs, env=JOB_ENV)


@nox.session(python=PYTHON)
def describe(session: nox.Session) -> None:
    """Describe a config: ``nox -s describe -- --preset imagenet``."""
    _install(session)
    session.run("perceiver-suite", "describe", *(session.posargs or ["--preset", "imagenet"]),
                env=JOB_ENV)


def _render_check(session: nox.Session, page: str) -> None:
    """Render the report page in headless Chromium (if installed) to a PNG beside it."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium or not os.path.exists(page):
        session.log("chromium not found: skipping the render check of %s", page)
        return
    shot = os.path.join(os.path.dirname(page), "index_rendered.png")
    profile = session.create_tmp()
    session.run(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                f"--user-data-dir={os.path.join(profile, 'chromium')}",
                f"--screenshot={shot}", "--window-size=1280,2400",
                "file://" + os.path.abspath(page), external=True, silent=True)
    session.log("rendered %s -> %s", page, shot)
