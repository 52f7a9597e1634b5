"""What every command shares: the registry, exit codes and the config arguments."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

EXIT_USER_ERROR = 2
EXIT_BUSY = 3  # another process trains the run folder
OVERRIDE = re.compile(r"^(seed|[A-Za-z_]\w*\.[A-Za-z_]\w*)=")  # a dotted key=value
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []  # in --help order


def command(register: Callable[[argparse._SubParsersAction], None]):
    COMMANDS.append(register)
    return register


def overrides_arg(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value", help=help)


def config_args(p: argparse.ArgumentParser) -> None:
    from suite.config import DEFAULT_PRESET, PRESETS

    p.add_argument("--preset", default=DEFAULT_PRESET, metavar="NAME",
                   help=f"starting config (default: {DEFAULT_PRESET}); one of: "
                   f"{', '.join(PRESETS)}")
    overrides_arg(p, "dotted config overrides, e.g. model.num_latents=64 train.steps=100")


def config_from(args: argparse.Namespace):
    from suite import config as cfg_lib

    return cfg_lib.build(args.preset, cfg_lib.parse_overrides(args.overrides))

