"""XLA's cost analysis of a compiled program, with every loop counted as often as it runs.

XLA's ``cost_analysis()`` walks the HLO once: a ``while`` loop's body (a ``lax.scan``, so
the Perceiver's scanned repeats) is counted once, whatever its trip count, and a
program partitioned over devices (a mesh) is counted for one device. Here the program's
optimised HLO is split into its loop bodies, XLA's own cost analysis runs on each, and
each body is weighted by its known trip count; the whole is multiplied by the number of
partitions. A loop whose trip count XLA does not know is counted once, and said so.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax

_HEAD = re.compile(r"^(?P<entry>ENTRY\s+)?%?(?P<name>[\w.\-]+)\s+\(.*\{\s*$")
_WHILE = re.compile(r"\swhile\(.*?condition=%?(?P<cond>[\w.\-]+),\s*body=%?(?P<body>[\w.\-]+)")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_CALL = re.compile(r"\b(?:calls|to_apply|body|condition)=%?([\w.\-]+)")
_CALLS = re.compile(r"\b(?:branch_computations|called_computations)=\{([^}]*)\}")
_PARTITIONS = re.compile(r"\bnum_partitions=(\d+)")


@dataclasses.dataclass(frozen=True)
class Cost:
    """FLOPs and bytes of one execution of a program, on all the devices it runs on."""

    flops: float
    bytes_accessed: float
    flops_loops_once: float  # XLA's own figure: every loop body once, one device
    loops: int  # while loops found
    unknown_trips: int  # loops whose trip count XLA does not know (counted once)
    partitions: int


def cost(compiled: Any) -> Cost:
    """The cost of one execution of ``compiled`` (a ``jax.stages.Compiled``)."""
    raw = compiled.cost_analysis()
    raw = (raw[0] if raw else {}) if isinstance(raw, list | tuple) else (raw or {})
    flops0, bytes0 = float(raw.get("flops", float("nan"))), float(
        raw.get("bytes accessed", float("nan")))
    try:
        modules = compiled.runtime_executable().hlo_modules()
    except Exception:  # a backend without HLO access: XLA's figure as it is
        return Cost(flops0, bytes0, flops0, 0, 0, 1)
    if not modules:
        return Cost(flops0, bytes0, flops0, 0, 0, 1)
    return module_cost(modules[0], jax.devices()[0].client, flops0, bytes0)


def module_cost(module: Any, client: Any, flops0: float, bytes0: float) -> Cost:
    """:func:`cost` of an ``HloModule``; ``flops0``, ``bytes0``: XLA's figures for it."""
    import jaxlib._hlo as hlo

    options = hlo.HloPrintOptions()
    options.print_metadata = False  # metadata refers to tables of the full module only
    text = module.to_string(options)
    partitions = int(m.group(1)) if (m := _PARTITIONS.search(text.splitlines()[0])) else 1
    program = _Program(text, client, (flops0, bytes0))
    if program.entry is None or not program.loops:
        return Cost(flops0 * partitions, bytes0 * partitions, flops0, 0, 0, partitions)
    flops, nbytes = program.total(program.entry)
    return Cost(flops * partitions, nbytes * partitions, flops0, len(program.loops),
                program.unknown, partitions)


class _Program:
    """An HLO module's computations, XLA's cost of each (loops once), and the totals."""

    def __init__(self, text: str, client: Any, entry_cost: tuple[float, float]):
        self.computations, self.entry = _computations(text)
        self.client = client
        self.loops = [line for lines in self.computations.values() for line in lines[1:]
                      if _WHILE.search(line)]
        self.looping = {name for name, lines in self.computations.items()
                        if any(_WHILE.search(line) for line in lines[1:])}
        grew = True
        while grew:  # and the computations that reach a loop through their callees
            grew = False
            for name, lines in self.computations.items():
                if name not in self.looping and any(c in self.looping for c in _callees(lines)):
                    self.looping.add(name)
                    grew = True
        self.own: dict[str, tuple[float, float]] = {self.entry: entry_cost} if self.entry else {}
        self.full: dict[str, tuple[float, float]] = {}
        self.unknown = 0

    def once(self, name: str) -> tuple[float, float]:
        """XLA's FLOPs and bytes of a computation as the entry of a module: loops once."""
        if name not in self.own:
            import jaxlib._hlo as hlo

            sub = hlo.hlo_module_from_text(_submodule(self.computations, name))
            c = _cost_analysis(self.client, sub)
            self.own[name] = (float(c.get("flops", 0.0)), float(c.get("bytes accessed", 0.0)))
        return self.own[name]

    def total(self, name: str) -> tuple[float, float]:
        """The same with every nested loop body at its trip count."""
        if name in self.full:
            return self.full[name]
        flops, nbytes = self.once(name)
        for line in self.computations[name][1:]:
            if m := _WHILE.search(line):
                trip = _TRIP.search(line)
                if trip is None:
                    self.unknown += 1
                    continue
                callees, n = [m.group("body")], int(trip.group(1))
            else:  # a call or fusion that holds a loop somewhere
                callees, n = [c for c in _callees([line]) if c in self.looping], 1
            for callee in callees:
                (f_full, b_full), (f_once, b_once) = self.total(callee), self.once(callee)
                flops, nbytes = flops + n * f_full - f_once, nbytes + n * b_full - b_once
        self.full[name] = (flops, nbytes)
        return self.full[name]


def _cost_analysis(client: Any, module: Any) -> dict[str, float]:
    from jax._src.lib import _jax

    return _jax.hlo_module_cost_analysis(client, module)


def _computations(text: str) -> tuple[dict[str, list[str]], str | None]:
    """``{name: its lines}`` of an HLO module's text, and the entry computation's name."""
    found: dict[str, list[str]] = {}
    entry, name, lines = None, None, []
    for line in text.splitlines():
        if name is None:
            if m := _HEAD.match(line):
                name, lines = m.group("name"), [line]
                entry = name if m.group("entry") else entry
            continue
        lines.append(line)
        if line.strip() == "}":
            found[name], name = lines, None
    return found, entry


def _callees(lines: list[str]) -> list[str]:
    """The computations that instructions call (fusions, loops, reductions, branches)."""
    out: list[str] = []
    for line in lines:
        out += _CALL.findall(line)
        for group in _CALLS.findall(line):
            out += [c.strip().lstrip("%") for c in group.split(",") if c.strip()]
    return out


def _submodule(computations: dict[str, list[str]], root: str) -> str:
    """HLO text of a module whose entry is ``root``, with the computations it calls."""
    keep, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        todo += [c for c in _callees(computations[name][1:]) if c not in keep]
    lines: list[str] = []
    for name, body in computations.items():
        if name in keep and name != root:
            lines += body
    head = re.sub(r"^ENTRY\s+", "", computations[root][0])
    return "\n".join(["HloModule loop_body", "", *lines, "ENTRY " + head,
                      *computations[root][1:]]) + "\n"
