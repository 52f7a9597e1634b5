"""Commands that read results folders: report, compare."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from suite.cli.common import command, overrides_arg
from suite.errors import SuiteError

# ----------------------------------------------------------------------------- report


@command
def _report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="tables (Markdown, LaTeX, CSV), plots and index.html from a results folder",
        description="Aggregate the experiment a results folder records (the spec's runs, "
        "missing ones listed; other run folders there listed apart, never averaged in) as "
        "mean ± std over seeds with 95% t intervals and a test of each cell against the "
        "best, and write OUT/report/: table.md, table.tex, table.csv, seaborn plots (PNG, "
        "SVG and the CSV each is drawn from) and a self-contained index.html. A folder "
        "without run folders (committed results) is read from its results.csv: the same "
        "tables and figures, without learning curves or attention maps.")
    p.add_argument("out", help="a results folder, e.g. results/demo; or a spec (with the "
                   "overrides its run took): its results folder")
    p.add_argument("--metric", help="the metric to tabulate and plot (default: the spec's "
                   "[report] metric, else eval/accuracy)")
    p.add_argument("--rows", nargs="+", metavar="KEY", help="config keys for table rows")
    p.add_argument("--cols", nargs="+", metavar="KEY", help="config keys for table columns")
    p.add_argument("--reference", metavar="KEY=VALUE[,...]",
                   help="test every cell against this one (named by its varied keys, e.g. "
                   "model.num_latents=64) instead of against the best")
    p.add_argument("--attention", action="store_true",
                   help="add each cell's cross-attention maps (eval example 0, first and last "
                   "cross-attend, the cell's lowest seed; needs the run folders' checkpoints)")
    overrides_arg(p, "with a spec: the overrides its run took, e.g. train.steps=50")
    p.set_defaults(func=run_report)


def results_folder(target: str, overrides: list[str]) -> Path:
    """A results folder given as itself, or as the spec (and overrides) that wrote it."""
    path = Path(target)
    if path.suffix == ".toml" and path.is_file():
        from suite import config as cfg_lib
        from suite.sweeps import record
        from suite.sweeps import spec as spec_lib

        return record.default_out(spec_lib.load(path, max_runs=None),
                                  cfg_lib.parse_overrides(overrides))
    if overrides:
        raise SuiteError(f"key=value overrides ({' '.join(overrides)}) go with a spec, not "
                         f"with a results folder ({target})")
    return path


def parse_reference(text: str | None) -> dict[str, str] | None:
    """``"a.b=1,c.d=x"`` -> ``{"a.b": "1", "c.d": "x"}``."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise SuiteError(f"--reference={text!r}: expected KEY=VALUE[,KEY=VALUE...]")
        out[key.strip()] = value.strip()
    return out


def run_report(args: argparse.Namespace) -> int:
    from suite.analysis.report import write_report

    out = results_folder(args.out, args.overrides)
    if not out.is_dir():
        raise SuiteError(f"{out}: no such results folder")
    written = write_report(out, metric=args.metric, rows=args.rows, cols=args.cols,
                           reference=parse_reference(args.reference), attention=args.attention)
    print(table_excerpt(written["table.md"]))
    print(f"wrote {len(written)} files to {out / 'report'} (open "
          f"{out / 'report' / 'index.html'})")
    if any((out / "runs").glob("*/events.out.tfevents.*")):
        print(f"training curves: tensorboard --logdir {out / 'runs'}")
    return 0


MAX_ROWS = 20  # a larger table shows its top rows in the terminal, the rest in table.md


def table_excerpt(table_md: Path, max_rows: int = MAX_ROWS) -> str:
    """The report's main table (the first Markdown table of ``table.md``) for the
    terminal: at most ``max_rows`` rows, then how many more and where they are."""
    lines = table_md.read_text().splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if first is None:
        return f"(no table: see {table_md})"
    block = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        block.append(line)
    header, rows = block[:2], block[2:]
    if len(rows) <= max_rows:
        return "\n".join(block)
    shown = max_rows - 5  # room for the line that says where the rest is
    return "\n".join([*header, *rows[:shown], f"... {len(rows) - shown} more in {table_md}"])


def report_after(out: Path) -> None:
    """After a grid: write its report and print the table and where the report is. A
    report that cannot be written is a note; the grid's exit status stays the grid's."""
    from suite.analysis.report import write_report

    try:
        written = write_report(out)
    except SuiteError as e:
        print(f"perceiver-suite: no report: {e}", file=sys.stderr)
        return
    print(table_excerpt(written["table.md"]))
    print(f"report: {out / 'report' / 'index.html'} (tables in {written['table.md']})")


# ---------------------------------------------------------------------------- compare


@command
def _compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="per-cell deltas and p-values between two results folders of a spec",
        description="Check that two results folders ran the same config (every key outside "
        "the varied ones, run by run), match their cells by the varied keys and print each "
        "cell's change in the metric with a p-value (exact sign-flip test over the seeds "
        "both ran, exact permutation test of the runs otherwise) and that p Holm-adjusted "
        "over the cells compared, which decides; then how the folders' recorded code, "
        "libraries, plugins, machines and precision differ. Exit status: 0 when no cell "
        "moved beyond seed noise (Holm-adjusted p >= 0.05), 1 when some did, 2 when the "
        "configs differ (without --allow-config-diff) or the folders share no cell.")
    p.add_argument("old", help="the results folder to compare against")
    p.add_argument("new", help="the results folder to compare")
    p.add_argument("--metric", help="default: the spec's [report] metric, else eval/accuracy")
    p.add_argument("--allow-config-diff", action="store_true",
                   help="compare folders whose configs differ outside the varied keys (e.g. "
                   "train.steps); the differing keys are printed first")
    p.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    from suite.analysis.compare import compare, render

    old, new = Path(args.old), Path(args.new)
    for folder in (old, new):
        if not folder.is_dir():
            raise SuiteError(f"{folder}: no such results folder")
    result = compare(old, new, args.metric, allow_config_diff=args.allow_config_diff)
    print(render(result, old, new))
    return result.exit_code
