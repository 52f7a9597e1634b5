"""What every command shares: the registry, exit codes and the config arguments."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

from suite.errors import SuiteError

EXIT_USER_ERROR = 2
EXIT_BUSY = 3  # another process trains the run folder
OVERRIDE = re.compile(r"^(seed|[A-Za-z_]\w*(\.[A-Za-z_]\w*)+)=")  # a dotted key=value
# Commands that build or read a model take --plugin (suite.extend, suite.plugins).
PLUGIN_COMMANDS = ("describe", "train", "run", "sweep", "evaluate", "predict", "attention",
                   "bench", "scaling")
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []  # in --help order


def command(register: Callable[[argparse._SubParsersAction], None]):
    COMMANDS.append(register)
    return register


def plugin_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugin", action="append", default=[], metavar="FILE_OR_MODULE",
                   help="user code that registers models or Perceiver part variants "
                   "(suite.extend): a .py file or an importable module, imported first; "
                   "repeatable")


def load_plugins(args: argparse.Namespace) -> None:
    """Import the command line's ``--plugin``s (relative paths: from here)."""
    if getattr(args, "plugin", None):
        from suite import extend

        extend.load_plugins(args.plugin)


def folder_out(path: str, flag: str) -> Path:
    """A folder a command is to write, checked before anything runs: not a file."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise SuiteError(f"{flag} {path}: a file; expected a folder to write into")
    return folder


def overrides_arg(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value", help=help)


def config_args(p: argparse.ArgumentParser, folder: bool = False) -> None:
    """``--preset`` and overrides; ``folder``: a run folder's config.json is the default."""
    from suite.config import DEFAULT_PRESET, PRESETS

    default = (f"the run folder's config.json if it has one (overrides change it), "
               f"else {DEFAULT_PRESET}") if folder else DEFAULT_PRESET
    p.add_argument("--preset", default=None if folder else DEFAULT_PRESET, metavar="NAME",
                   help=f"starting config (default: {default}); one of: {', '.join(PRESETS)}")
    overrides_arg(p, "dotted config overrides, e.g. model.num_latents=64 train.steps=100")


def config_from(args: argparse.Namespace, workdir: str | None = None):
    """The config the command line names; without a preset, that of ``workdir`` (a
    folder from a run or from ``import-official``) if it has one, with the overrides on
    top (``train --workdir DIR train.steps=N`` asks to extend DIR's run)."""
    from suite import config as cfg_lib

    if args.preset is None:
        if workdir and (Path(workdir) / "config.json").exists():
            from suite.training.run_folder import read_config

            folder = read_config(Path(workdir) / "config.json")
            return cfg_lib.apply_overrides(folder, cfg_lib.parse_overrides(args.overrides))
        return cfg_lib.build(cfg_lib.DEFAULT_PRESET, cfg_lib.parse_overrides(args.overrides))
    return cfg_lib.build(args.preset, cfg_lib.parse_overrides(args.overrides))

