"""``perceiver-suite describe``: a config's parameters and FLOPs, analytic and XLA's."""

from __future__ import annotations

from typing import Any

from suite import config as cfg_lib
from suite.config import Config
from suite.config.layout import layouts


def describe(config: Config, *, xla: bool = True, train: bool = False) -> dict[str, Any]:
    """Params, analytic forward FLOPs per example and (optionally) XLA's, as a dict.

    ``train``: also compile the train step at ``train.batch_size`` on abstract shapes
    and report its compile time and XLA's memory (arguments, outputs, temporaries).
    """
    from suite.models import flops, registry

    out: dict[str, Any] = {
        "params": registry.count_params(registry.abstract_model(config)),
        "input_items": flops.input_items(config),
        "inputs_per_modality": {lay.name: [lay.items, flops.layout_channels(config, lay)]
                                for lay in layouts(config)},
        "input_channels": flops.input_channels(config),
    }
    source = flops.flops_source(config)  # None: analytic; else why XLA's count stands in
    cost = flops.xla_forward_flops(config) if xla else None
    analytic = flops.analytic_flops(config) if source is None or cost is None else {
        "xla": cost["flops"], "total": cost["flops"]}
    out["flops_count"] = "analytic" if source is None else f"XLA's count: {source}"
    out["flops_analytic"] = analytic["total"]
    out["flops_train_analytic"] = 3.0 * analytic["total"]  # per example: 3 x forward
    out["flops_analytic_breakdown"] = {k: v for k, v in analytic.items() if k != "total"}
    if cost is not None:
        out["flops_xla"] = cost["flops"]
        out["xla_bytes_accessed"] = cost["bytes_accessed"]
        out["xla_compile_seconds"] = cost["compile_seconds"]
        ratio = cost["flops"] / analytic["total"]
        out["flops_xla_ratio"] = ratio
        out["xla_loops"] = cost["loops"]
        note = xla_note(cost, analytic["total"], flops.shared_kv_savings(config))
        if note:
            out["flops_xla_note"] = note
    if train:
        out["train_step"] = train_step(config)
    out["config"] = cfg_lib.to_dict(config)
    return out


def xla_note(cost: dict[str, Any], analytic: float, savings: float) -> str:
    """Why XLA's count differs from the analytic one, where the reason is known."""
    notes = []
    if cost["loops"]:
        notes.append(f"{cost['loops']} loop(s) counted at their trip counts" + (
            f", {cost['loops_unknown_trips']} of unknown trip count counted once"
            if cost["loops_unknown_trips"] else ""))
    ratio = cost["flops"] / analytic
    if ratio < 0.97 and savings > 0 and abs(cost["flops"] - (analytic - savings)) < \
            0.03 * analytic:
        notes.append(
            f"{100 * (1 - ratio):.1f}% below analytic: the tied cross-attends apply the same "
            "k/v projections to the same input, and the compiled program computes them once "
            f"(analytic minus that repeat: {_fmt_flops(analytic - savings)})")
    elif abs(ratio - 1) >= 0.03:
        notes.append(f"{100 * abs(ratio - 1):.1f}% {'below' if ratio < 1 else 'above'} analytic"
                     ": XLA also counts element-wise operations (LayerNorm, softmax, GELU), "
                     "which the analytic count leaves out")
    return "; ".join(notes)


def train_step(config: Config) -> dict[str, Any]:
    """The train step compiled on abstract shapes: seconds, and XLA's memory in bytes."""
    from suite.platform.devices import enable_compile_cache
    from suite.training import preflight

    enable_compile_cache()
    graphdef, state = preflight.abstract_state(config)
    batch = config.train.batch_size
    plan = preflight.plan(config, graphdef, state, preflight.batch_spec(config, batch),
                          evaluate=False, check=False)
    m = plan.train_memory
    return {"batch_size": batch, "compile_seconds": plan.compile_seconds,
            "trace_seconds": plan.trace_seconds,
            "arguments_bytes": m.arguments, "outputs_bytes": m.outputs,
            "temporaries_bytes": m.temporaries, "aliased_bytes": m.aliased,
            "total_bytes": m.total}


def _fmt_flops(x: float) -> str:
    for unit, scale in (("TFLOPs", 1e12), ("GFLOPs", 1e9), ("MFLOPs", 1e6), ("kFLOPs", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f} FLOPs"


def _fmt_params(n: int) -> str:
    return f"{n:,} ({n / 1e6:.2f}M)" if n >= 1e5 else f"{n:,}"


# The baselines' own model keys, and the kinds that read each (the Perceiver reads none).
BASELINE_KEYS = {"num_layers": {"transformer", "vit"}, "hidden_dim": {"transformer", "vit",
                 "convnet"}, "patch_size": {"vit"}}
BUILT_IN_KINDS = {"perceiver", "transformer", "vit", "convnet"}


def unused_model_keys(kind: str) -> list[str]:
    """Model keys a built-in ``model.kind`` never reads (a registered model of another
    kind may read any, so none is hidden for it)."""
    if kind not in BUILT_IN_KINDS:
        return []
    return [key for key, kinds in BASELINE_KEYS.items() if kind not in kinds]


def render(info: dict[str, Any]) -> str:
    """The human-readable report: config by section (without the keys the model's kind
    never reads, named in one line), then the cost figures."""
    lines = []
    conf = info["config"]
    unused = unused_model_keys(conf["model"]["kind"])
    lines.append(f"seed = {conf['seed']}")
    for section in cfg_lib.SECTIONS:
        lines.append(f"[{section}]")
        for key, value in conf[section].items():
            if section == "model" and key in unused:
                continue
            lines.append(f"  {key:<26} = {value!r}" if isinstance(value, str) else
                         f"  {key:<26} = {value}")
        if section == "model" and unused:
            lines.append(f"  (not read by model.kind={conf['model']['kind']!r}: "
                         f"{', '.join(unused)})")
    lines.append("")
    lines.append(f"input array M x C          = {info['input_items']:,} x {info['input_channels']}")
    lines.append(f"parameters (unique)        = {_fmt_params(info['params'])}")
    count = info.get("flops_count", "analytic")
    lines.append(f"forward FLOPs / example    = {_fmt_flops(info['flops_analytic'])}  ("
                 + ("analytic; multiply and add counted apart)" if count == "analytic" else
                    f"{count}; MFU uses it)"))
    for part, value in info["flops_analytic_breakdown"].items():
        if value:
            lines.append(f"  {part:<24} = {_fmt_flops(value)}")
    lines.append(f"train FLOPs / example      = {_fmt_flops(info['flops_train_analytic'])}"
                 "  (3 x forward: the forward pass and a backward of twice its cost)")
    if "flops_xla" in info:
        lines.append(f"XLA forward FLOPs/example  = {_fmt_flops(info['flops_xla'])}"
                     + (f"  ({100 * info['flops_xla_ratio']:.1f}% of analytic; " if
                        count == "analytic" else "  (the count above, no analytic one; ")
                     + f"compiled in {info['xla_compile_seconds']:.1f}s)")
        if "flops_xla_note" in info and count == "analytic":
            lines.append(f"  note: {info['flops_xla_note']}")
    if "train_step" in info:
        t = info["train_step"]
        gib = lambda n: f"{n / 2**30:.2f} GiB"  # noqa: E731
        lines.append(f"train step, batch {t['batch_size']:<6} = {gib(t['total_bytes'])} "
                     f"(arguments {gib(t['arguments_bytes'])}, outputs {gib(t['outputs_bytes'])}"
                     f", temporaries {gib(t['temporaries_bytes'])}, donated "
                     f"{gib(t['aliased_bytes'])}); traced in {t['trace_seconds']:.1f}s, "
                     f"compiled in {t['compile_seconds']:.1f}s")
    return "\n".join(lines)
