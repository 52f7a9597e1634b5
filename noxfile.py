"""Sessions: ``nox -s tests`` (the test suite), ``lint``, and the suite's main jobs."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
PYTHON = os.environ.get("NOX_PYTHON") or None  # default: the interpreter running nox

CPU_ENV = {"JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"), "TF_CPP_MIN_LOG_LEVEL": "2"}


def _install(session: nox.Session, extras: str = "") -> None:
    session.install("-e", f".[{extras}]" if extras else ".")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite (fast on 2 CPU cores). Extra arguments go to pytest."""
    _install(session, "test")
    session.run("pytest", *(session.posargs or ["-q"]), env=CPU_ENV)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the package, tests and this file."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "suite", "tests", "noxfile.py")


@nox.session(python=PYTHON)
def describe(session: nox.Session) -> None:
    """Describe a config: ``nox -s describe -- --preset imagenet``."""
    _install(session)
    session.run("perceiver-suite", "describe", *(session.posargs or ["--preset", "imagenet"]),
                env=CPU_ENV)
