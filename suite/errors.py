"""Exceptions for user mistakes: the CLI prints them as one line and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SuiteError(Exception):
    """A mistake in what the user asked for (config, spec, data, checkpoint).

    Everything raised as a SuiteError is the user's to fix, so the CLI shows the
    message alone, without a traceback, and exits with status 2.
    """


class ConfigError(SuiteError, ValueError):
    """An invalid config key or value. The message names the key and the value."""


class DataError(SuiteError):
    """Missing or malformed data files. The message says what, where and how to get it."""


class SpecError(SuiteError):
    """A malformed ablation spec. The message names the file, the key and the value."""


class CheckpointError(SuiteError):
    """A run folder or checkpoint that cannot be used."""


class PluginError(SuiteError):
    """User code given as a plugin that does not import, or registers a taken name. The
    message names the file (or module) and what went wrong."""


class MissingExtraError(SuiteError):
    """A task whose files need an optional dependency that is not installed. The message
    names the task and the ``pip install 'perceiver-suite[EXTRA]'`` that brings it."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` naming the closest of ``known`` to ``name``, or ``""``:
    the suggestion every one-line error about a name gives."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
