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
                   "model.num_latents=64) instead of against the best; naming only some "
                   "keys (data.permutation=none) tests each cell against the matching cell "
                   "with its own values of the others (default: the spec's [report] "
                   "reference, else the best cell)")
    p.add_argument("--attention", action="store_true",
                   help="add each cell's cross-attention maps (eval example 0, first and last "
                   "cross-attend, the cell's lowest seed; needs the run folders' checkpoints)")
    overrides_arg(p, "with a spec: the overrides its run took, e.g. train.steps=50")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from suite import api

    tables = api.report(args.out, overrides=args.overrides, metric=args.metric, rows=args.rows,
                        cols=args.cols, reference=args.reference, attention=args.attention)
    out = tables.folder
    print(table_excerpt(tables.markdown))
    print(f"wrote {len(tables.files)} files to {out / 'report'} (open {tables.html})")
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
    from suite import api
    from suite.analysis.compare import render

    result = api.compare(args.old, args.new, metric=args.metric,
                         allow_config_diff=args.allow_config_diff)
    print(render(result, Path(args.old), Path(args.new)))
    return result.exit_code
