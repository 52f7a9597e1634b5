"""Our train step against lucidrains' perceiver-pytorch, at one structure, on one machine.

The P1 structure: a 32x32x3 input with 6 Fourier bands per axis (29 channels), batch 8,
6 cross-attends each followed by 1 self-attend, 256 x 512 latents, cross-attention q/k/v
width 64 (one head), 8 latent heads of 64, MLP x4, no weight sharing; AdamW on both
sides. ``precision="bfloat16"`` runs ours with ``model.precision=bfloat16`` and theirs
under ``torch.autocast(bfloat16)``, so both sides compare at the same precision. The
peer's MLP is a GEGLU (twice the first layer), so it does more FLOPs per step: each
side's FLOP/s is its own FLOPs over its own time (ours analytic and XLA's, theirs by
``torch.utils.flop_counter``). Each measurement runs in its own process (start-up and
compilation excluded: burn-in steps first), alternating ours and theirs over rounds, so
that drift of a shared machine hits both sides alike.

Each process also times the two parts of one latent self-attend block at P1's shapes
(``[8, 256, 512]``, forward and backward, each side through its own modules): the
attention (projections and the 8-head core) and the MLP. A whole-step FLOP/s ratio
says *that* one side is faster per FLOP; the parts say *where*.

Run through ``nox -s bench-peer``, which installs torch and perceiver-pytorch into its
own environment; the suite itself never imports torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

P1 = {
    "data.task": "synthetic", "data.index_dims": "32,32", "data.channels": 3,
    "data.num_classes": 10, "model.num_latents": 256, "model.latent_dim": 512,
    "model.num_blocks": 6, "model.num_cross_attends": 6, "model.self_attends_per_block": 1,
    "model.cross_heads": 1, "model.cross_qk_channels": 64, "model.self_heads": 8,
    "model.widening_factor": 4, "model.weight_sharing": False, "model.fourier_bands": 6,
    "model.max_resolution": 20, "train.batch_size": 8, "train.optimizer": "adamw",
    "train.learning_rate": 1e-4,
}


def ours(steps: int, overrides: dict[str, Any], precision: str = "float32") -> dict[str, Any]:
    """Median seconds per train step of our P1 model (in this process)."""
    import jax
    from flax import nnx

    from suite import config as cfg_lib
    from suite.models import build_model
    from suite.models.flops import cost_of, train_flops
    from suite.training.optim import optimizer, schedule
    from suite.training.steps import Steps

    config = cfg_lib.build("synthetic", {**P1, "model.precision": precision, **overrides})
    model = build_model(config, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split((model, nnx.Optimizer(model, optimizer(config.train),
                                                      wrt=nnx.Param)))
    rng = np.random.default_rng(0)
    batch = {"inputs": rng.normal(size=(8, 32, 32, 3)).astype(np.float32),
             "label": rng.integers(0, 10, 8).astype(np.int32)}
    step = Steps(graphdef, config, schedule(config.train)).train_step.lower(state,
                                                                           batch).compile()
    times = _time(lambda s: step(s, batch), state, steps, jax.block_until_ready)
    return {"step_seconds": float(np.median(times)),
            "flops_analytic": train_flops(config, 8), "flops_xla": cost_of(step)["flops"],
            **_our_parts(precision)}


PART_SHAPE = (8, 256, 512)  # P1's latents: batch 8, 256 x 512
PART_STEPS = 10
PARTS = ("attention", "mlp")


def _our_parts(precision: str) -> dict[str, float]:
    """Seconds and analytic FLOPs of one forward + backward of our self-attend block's
    parts (backward = 2x forward: gradients for the weights and the input)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from suite.models.layers import COMPUTE_DTYPES, MLP, Attention

    dtype, rngs = COMPUTE_DTYPES[precision], nnx.Rngs(0)
    b, t, d = PART_SHAPE
    forward = {"attention": 4 * 2 * b * t * d * d + 2 * 2 * b * t * t * d,  # q, k, v, out; core
               "mlp": 2 * 2 * b * t * d * P1["model.widening_factor"] * d}
    x = jnp.asarray(np.random.default_rng(0).normal(size=PART_SHAPE), jnp.float32)
    heads, widening = P1["model.self_heads"], P1["model.widening_factor"]
    parts = {"attention": (Attention(d, d, d, d, heads, rngs=rngs, dtype=dtype),
                           lambda m, x: m(x, x)),
             "mlp": (MLP(d, widening, rngs=rngs, dtype=dtype), lambda m, x: m(x))}
    out = {}
    for name, (module, apply) in parts.items():
        graphdef, params = nnx.split(module)

        def loss(params, x, graphdef=graphdef, apply=apply):
            return jnp.sum(apply(nnx.merge(graphdef, params), x).astype(jnp.float32))

        grad = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
        times = _time(lambda s, grad=grad, params=params: (s, grad(params, x)), None,
                      PART_STEPS, jax.block_until_ready)
        out |= {f"{name}_seconds": float(np.median(times)),
                f"{name}_flops": 3.0 * forward[name]}
    return out


def _time(run, state, steps: int, sync) -> list[float]:
    for _ in range(2):  # burn-in
        state, out = run(state)
    sync(out)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, out = run(state)
        sync(out)
        times.append(time.perf_counter() - start)
    return times


def theirs(steps: int, precision: str = "float32") -> dict[str, Any]:
    """Median seconds per train step of perceiver-pytorch at P1 (in this process), in
    float32 or under bfloat16 autocast."""
    import torch
    from perceiver_pytorch import Perceiver
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = Perceiver(num_freq_bands=6, depth=6, max_freq=10.0, input_channels=3,
                      input_axis=2, num_latents=256, latent_dim=512, cross_heads=1,
                      latent_heads=8, cross_dim_head=64, latent_dim_head=64, num_classes=10,
                      self_per_cross_attn=1, weight_tie_layers=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = torch.randn(8, 32, 32, 3), torch.randint(0, 10, (8,))

    def step(_):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return None, loss

    with FlopCounterMode(display=False) as counter:
        step(None)
    times = _time(step, None, steps, lambda out: float(out))
    return {"step_seconds": float(np.median(times)), "flops": float(counter.get_total_flops()),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            **_their_parts(precision)}


def _their_parts(precision: str) -> dict[str, float]:
    """The same parts through perceiver-pytorch's own ``Attention`` and ``FeedForward``."""
    import torch
    from perceiver_pytorch.perceiver_pytorch import Attention, FeedForward
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    x = torch.randn(*PART_SHAPE, requires_grad=True)
    out = {}
    for name, module in (("attention", Attention(512, heads=8, dim_head=64)),
                         ("mlp", FeedForward(512, mult=4))):
        def run(_, module=module):
            module.zero_grad(set_to_none=True)
            x.grad = None
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                y = module(x)
            y.float().sum().backward()
            return None, None

        with FlopCounterMode(display=False) as counter:
            run(None)
        times = _time(run, None, PART_STEPS, lambda _: None)
        out |= {f"{name}_seconds": float(np.median(times)),
                f"{name}_flops": float(counter.get_total_flops())}
    return out


def compare(rounds: int = 3, steps: int = 5, overrides: dict[str, Any] | None = None,
            precision: str = "float32",
            log=lambda msg: print(msg, file=sys.stderr, flush=True)) -> list[dict[str, Any]]:
    """Alternate ours and theirs, each in a fresh process; one row per measurement."""
    rows = []
    for r in range(rounds):
        for side in ("ours", "theirs"):
            payload = json.dumps({"side": side, "steps": steps, "overrides": overrides or {},
                                  "precision": precision})
            done = subprocess.run([sys.executable, "-m", "suite.benchmarks.peer", payload],
                                  capture_output=True, text=True, env=os.environ.copy())
            if done.returncode != 0:
                raise RuntimeError(f"{side}: {done.stderr.strip().splitlines()[-1:]}")
            row = {"round": r, "side": side, "precision": precision,
                   **json.loads(done.stdout.strip().splitlines()[-1])}
            log(f"round {r} {side}: {row['step_seconds']:.3f} s/step")
            rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    ours_s = float(np.median([r["step_seconds"] for r in rows if r["side"] == "ours"]))
    theirs_s = float(np.median([r["step_seconds"] for r in rows if r["side"] == "theirs"]))
    ours_f = next(r["flops_analytic"] for r in rows if r["side"] == "ours")
    theirs_f = next(r["flops"] for r in rows if r["side"] == "theirs")
    return {"ours_step_seconds": ours_s, "theirs_step_seconds": theirs_s,
            "ours_flops": ours_f, "theirs_flops": theirs_f,
            "ours_flops_per_s": ours_f / ours_s, "theirs_flops_per_s": theirs_f / theirs_s,
            "flops_per_s_ratio": (ours_f / ours_s) / (theirs_f / theirs_s),
            "step_time_ratio": ours_s / theirs_s}


def parts_table(rows: list[dict[str, Any]]):
    """One row per block part: each side's median seconds, GFLOP and GFLOP/s (None when
    the rows predate the part timings)."""
    import pandas as pd

    if not all(f"{p}_seconds" in r for r in rows for p in PARTS):
        return None
    out = []
    for part in PARTS:
        row: dict[str, Any] = {f"part (fwd + bwd, {list(PART_SHAPE)})": part}
        per_s = {}
        for side in ("ours", "theirs"):
            mine = [r for r in rows if r["side"] == side]
            sec = float(np.median([r[f"{part}_seconds"] for r in mine]))
            flops = float(mine[0][f"{part}_flops"])
            per_s[side] = flops / sec
            row |= {f"{side} ms": f"{sec * 1e3:.1f}", f"{side} GFLOP": f"{flops / 1e9:.2f}",
                    f"{side} GFLOP/s": f"{per_s[side] / 1e9:.0f}"}
        row["GFLOP/s ratio"] = f"{per_s['ours'] / per_s['theirs']:.2f}"
        out.append(row)
    return pd.DataFrame(out)


def stem(precision: str) -> str:
    """``peer`` for float32 (the reference), ``peer_bfloat16`` for bfloat16."""
    return "peer" if precision == "float32" else f"peer_{precision}"


def write(rows: list[dict[str, Any]], out: Path, command: str, machine: str,
          precision: str = "float32") -> Path:
    import pandas as pd

    from suite.files import write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    name = stem(precision)
    write_text_atomic(out / f"{name}.csv", pd.DataFrame(rows).to_csv(index=False))
    s = summarise(rows)
    theirs_row = next(r for r in rows if r["side"] == "theirs")
    table = pd.DataFrame([
        {"implementation": "perceiver-suite (JAX, this repo)",
         "s/step (median)": f"{s['ours_step_seconds']:.3f}",
         "GFLOP/step": f"{s['ours_flops'] / 1e9:.0f} (analytic)",
         "GFLOP/s": f"{s['ours_flops_per_s'] / 1e9:.1f}"},
        {"implementation": f"perceiver-pytorch 0.11 (torch {theirs_row['torch']})",
         "s/step (median)": f"{s['theirs_step_seconds']:.3f}",
         "GFLOP/step": f"{s['theirs_flops'] / 1e9:.0f} (flop_counter)",
         "GFLOP/s": f"{s['theirs_flops_per_s'] / 1e9:.1f}"},
    ])
    how = ("float32 on both sides" if precision == "float32" else
           f"{precision}: ours `model.precision={precision}` (float32 parameters, optimizer "
           f"and softmax), theirs `torch.autocast(\"cpu\", {precision})`")
    md = [f"# Train step against perceiver-pytorch (P1 structure, {precision})", "",
          f"Precision: {how}.", "", table.to_markdown(
        index=False), "", f"FLOP/s ratio (ours / theirs): {s['flops_per_s_ratio']:.2f}; "
        f"step-time ratio (ours / theirs): {s['step_time_ratio']:.2f}.", ""]
    parts = parts_table(rows)
    if parts is not None:
        md += ["Where the time goes: the two parts of one latent self-attend block, each "
               "side through its own modules (ours: `Attention`, `MLP`; theirs: "
               "`Attention`, `FeedForward`, whose GEGLU doubles the first layer). FLOPs are "
               "analytic for ours, `flop_counter`'s for theirs.", "",
               parts.to_markdown(index=False, disable_numparse=True,
                                 colalign=("left",) + ("right",) * 7), ""]
    md += [f"- command: `{command}`", f"- machine: {machine}",
        f"- {len(rows) // 2} rounds, alternating; each in a fresh process after 2 burn-in "
        "steps; medians of the timed steps.", ""]
    write_text_atomic(out / f"{name}.md", "\n".join(md))
    return out / f"{name}.md"


if __name__ == "__main__":  # one side's measurement: python -m suite.benchmarks.peer '<json>'
    args = json.loads(sys.argv[1])
    precision = args.get("precision", "float32")
    result = ours(args["steps"], args["overrides"], precision) if args["side"] == "ours" \
        else theirs(args["steps"], precision)
    print(json.dumps(result))
