"""``run --dry-run``: what a grid would train, and what it costs, without writing anything."""

from __future__ import annotations

from pathlib import Path

from suite.models import abstract_model, count_params
from suite.models.flops import analytic_flops
from suite.sweeps.spec import Run, Spec


def dry_run_table(spec: Spec, runs: list[Run], out: Path) -> str:
    """One line per run: id, unique parameters, analytic forward MFLOPs per example."""
    cache: dict[str, tuple[int, float]] = {}
    lines = [f"{spec.path}: {spec.description}".rstrip(": "),
             f"{'run id':<60} {'params':>10} {'MFLOPs/ex':>10}"]
    for run in runs:
        key = repr((run.config.model, run.config.data))
        if key not in cache:
            cache[key] = (count_params(abstract_model(run.config)),
                          analytic_flops(run.config)["total"])
        params, flops = cache[key]
        lines.append(f"{run.id:<60} {params:>10,} {flops / 1e6:>10.2f}")
    lines.append(f"{len(runs)} runs ({len(spec.seeds)} seeds) -> {out}/runs/<id>/; "
                 "nothing written (dry run)")
    return "\n".join(lines)
