"""Exceptions for user mistakes: the CLI prints them as one line and exits 2."""


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
