"""The ``perceiver-suite`` command line. Thin: parses, calls the library, prints.

One module per group of commands (``inspection``, ``experiments``, ``reports``,
``interop``, ``benchmarks``); each command is a pair, a function that adds its parser and one that
runs it. User mistakes
(``SuiteError``) print one line and exit 2; heavy imports (JAX) happen inside the
commands so that ``--help`` is instant. Dotted ``key=value`` overrides may come
anywhere after the command, before or after its options.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from suite.cli import (  # noqa: F401  (they register)
    benchmarks,
    experiments,
    inspection,
    interop,
    reports,
)
from suite.cli.common import (
    COMMANDS,
    EXIT_BUSY,
    EXIT_USER_ERROR,
    OVERRIDE,
    PLUGIN_COMMANDS,
    load_plugins,
    plugin_arg,
)
from suite.errors import SuiteError

ORDER = ["describe", "data", "devices", "presets", "train", "run", "sweep", "report", "compare",
         "import_official", "evaluate", "predict", "attention", "bench", "scaling"]

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perceiver-suite",
        description="Build, train, ablate and benchmark Perceivers (Jaegle et al., 2021).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for register in sorted(COMMANDS, key=lambda r: ORDER.index(r.__name__.lstrip("_"))):
        register(sub)
    for name in PLUGIN_COMMANDS:  # every command that builds or reads a model
        if name in sub.choices:
            plugin_arg(sub.choices[name])
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse, collecting ``key=value`` overrides from anywhere after the command."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if not OVERRIDE.match(a)]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"{args.command} takes no key=value overrides: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from suite.training import stop
    from suite.training.lock import RunBusy

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with stop.guard():  # SIGTERM/SIGINT from process start: a clean exit, 128 + signal
            args = parse(argv)
            load_plugins(args)
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # a closed pipe shows here, inside the try
            return code
    except BrokenPipeError:  # `perceiver-suite predict ... | head`: the reader has gone
        return stdout_gone()
    except RunBusy as e:
        print(f"perceiver-suite: {e}", file=sys.stderr)
        return EXIT_BUSY
    except SuiteError as e:
        print(f"perceiver-suite: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except stop.Stopped as e:
        print(f"perceiver-suite: {e}", file=sys.stderr)
        return e.exit_code


def stdout_gone() -> int:
    """What a command whose reader closed the pipe exits with, silently: the Python
    docs' recipe (the signal module's note on SIGPIPE), stdout pointed at devnull so the
    flush at exit cannot fail again, and 128 + SIGPIPE, as a process the signal ended."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no file (an embedding program's stream)
        pass
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
