"""Benchmarks: does the input pipeline keep up with the train step? (CSV + Markdown)

For each task, measure the grain pipeline's training-batch throughput and the compiled
train step's throughput for the task's small preset, both in examples/s, after a
burn-in. The pipeline should be many times faster than the step, so the step never
waits for data.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
from flax import nnx

from suite import config as cfg_lib
from suite import data as data_lib
from suite.errors import DataError
from suite.files import write_text_atomic
from suite.models.flops import train_flops
from suite.models.registry import build_model
from suite.platform.devices import machine_description, peak_flops
from suite.training.optim import optimizer as make_optimizer
from suite.training.optim import schedule as make_schedule
from suite.training.steps import Steps


def pipeline_throughput(ds: data_lib.Dataset, batch_size: int, batches: int) -> float:
    it = iter(data_lib.train_batches(ds, batch_size, seed=0))
    for _ in range(3):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def step_throughput(config: cfg_lib.Config, ds: data_lib.Dataset, steps: int) -> float:
    model = build_model(config, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, make_optimizer(config.train), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))
    fns = Steps(graphdef, config, make_schedule(config.train))
    it = iter(data_lib.train_batches(ds, config.train.batch_size, seed=0))
    batch = next(it)
    step = fns.train_step.lower(state, batch).compile()
    _, seconds = time_step(step, state, batch, steps)
    return config.train.batch_size / seconds


def time_step(step: Any, state: Any, batch: Any, steps: int, burn_in: int = 3
              ) -> tuple[Any, float]:
    """Seconds per call of a compiled train step after ``burn_in`` calls, and the state it
    leaves (the step donates the one it is given)."""
    for _ in range(burn_in):
        state, m = step(state, batch)
    jax.block_until_ready(m)
    start = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, batch)
    jax.block_until_ready(m)
    return state, (time.perf_counter() - start) / steps


def utilisation(config: cfg_lib.Config, batch_size: int, step_seconds: float
                ) -> dict[str, Any]:
    """Analytic train FLOP/s of a step and its MFU against the peak of the config's compute
    precision (``peak_source`` names the figure)."""
    flops = train_flops(config, batch_size) / step_seconds
    precision = config.model.precision
    peak, source = peak_flops(precision)
    return {"train_GFLOP_per_s": round(flops / 1e9, 2), "mfu": round(flops / peak, 3),
            "precision": precision, "peak_GFLOP_per_s": round(peak / 1e9, 1),
            "peak_source": source}


def dispatch_overhead(presets: tuple[str, ...] = ("synthetic", "digits"),
                      steps: int = 50) -> list[dict[str, Any]]:
    return [_dispatch_overhead(p, steps) for p in presets]


def _dispatch_overhead(preset: str, steps: int) -> dict[str, Any]:
    """Seconds per train step: ``nnx.jit`` on modules vs ``jax.jit`` on split state.

    ``nnx.jit`` walks the module graph on every call; for small models that Python work
    is a large share of the step. The trainer splits once and jits a pure function.
    """
    from suite.training.steps import loss_fn

    config = cfg_lib.build(preset, {})
    ds = data_lib.load(config.data)
    batch = next(iter(data_lib.train_batches(ds, config.train.batch_size, seed=0)))
    model = build_model(config, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, make_optimizer(config.train), wrt=nnx.Param)

    @nnx.jit
    def nnx_step(model, opt, batch):
        (loss, _), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch, config)
        opt.update(model, grads)
        return loss

    graphdef, state = nnx.split((model, opt))
    fns = Steps(graphdef, config, make_schedule(config.train))
    compiled = fns.train_step.lower(state, batch).compile()

    def time_it(fn) -> float:
        for _ in range(3):
            out = fn()
        jax.block_until_ready(out)
        start = time.perf_counter()
        for _ in range(steps):
            out = fn()
        jax.block_until_ready(out)
        return (time.perf_counter() - start) / steps

    holder = {"state": state}

    def split_step():
        holder["state"], m = compiled(holder["state"], batch)
        return m

    model2 = build_model(config, rngs=nnx.Rngs(0))
    opt2 = nnx.Optimizer(model2, make_optimizer(config.train), wrt=nnx.Param)
    t_nnx = time_it(lambda: nnx_step(model2, opt2, batch))
    t_split = time_it(split_step)
    return {"preset": preset, "nnx.jit s/step": round(t_nnx, 5),
            "split + jax.jit s/step": round(t_split, 5), "speed-up": round(t_nnx / t_split, 2)}


def pipeline_vs_step(tasks: list[str], steps: int = 20, batches: int = 50) -> list[dict[str, Any]]:
    rows = []
    for task in tasks:
        preset = task if task in cfg_lib.PRESETS else cfg_lib.DEFAULT_PRESET
        config = cfg_lib.build(preset, {"data.task": task})
        try:
            ds = data_lib.load(config.data)
        except DataError as e:
            rows.append({"task": task, "status": f"skipped: {e}"})
            continue
        bs = config.train.batch_size
        pipe = pipeline_throughput(ds, bs, batches)
        step = step_throughput(config, ds, steps)
        rows.append({"task": task, "status": "ok", "batch_size": bs,
                     **utilisation(config, bs, bs / step),
                     "pipeline_examples_per_s": round(pipe, 1),
                     "train_step_examples_per_s": round(step, 1),
                     "headroom": round(pipe / step, 1)})
    return rows


def write(rows: list[dict[str, Any]], out: Path, command: str,
          overhead: list[dict[str, Any]] | None = None) -> Path:
    import pandas as pd

    frame = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "pipeline.csv", frame.to_csv(index=False))
    md = ["# Input pipeline vs train step (examples/s)", "",
          frame.to_markdown(index=False), ""]
    if overhead:
        write_text_atomic(out / "dispatch.csv", pd.DataFrame(overhead).to_csv(index=False))
        md += ["# Train-step dispatch: nnx.jit vs split state + jax.jit", "",
               pd.DataFrame(overhead).to_markdown(index=False), ""]
    md += [f"- command: `{command}`", f"- machine: {machine_description()}", "",
          "headroom = pipeline throughput / train-step throughput (single process loader).",
          "train GFLOP/s: analytic train FLOPs (3 x forward) per second; mfu: that over "
          "the peak of the preset's compute precision (peak_source names it).", ""]
    write_text_atomic(out / "pipeline.md", "\n".join(md))
    return out / "pipeline.md"


def image_loader(folder: str | None, workers: tuple[int, ...] = (0, 1, 2), batches: int = 10,
                 batch_size: int = 32) -> list[dict[str, Any]]:
    """Streamed image folders: training images/s (224x224 random-resized crops, flips and
    RandAugment 4 x 5, as the ImageNet preset) with 0 (threads only), 1, 2... loader
    worker processes. Without ``folder``, 2,000 generated 256x256 JPEGs."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = folder or str(generated_images(Path(tmp) / "images"))
        rows = []
        for n in workers:
            config = cfg_lib.build("cifar10", {
                "data.task": "image_folder", "data.data_dir": root,
                "data.index_dims": "224,224", "data.augment": True,
                "data.randaugment_layers": 4, "data.num_workers": n, "data.num_classes": 1000})
            ds = data_lib.load(config.data)
            speed = pipeline_throughput(ds, batch_size, batches)
            rows.append({"loader_workers": n, "images_per_s": round(speed, 1),
                         "images_per_s_per_worker": round(speed / max(1, n), 1)})
    return rows


def generated_images(root: Path, classes: int = 10, per_class: int = 200) -> Path:
    """``classes`` folders of random 256x256 JPEGs (quality 90), for the loader bench."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.jpg", quality=90)
    return root


def video_loader(folder: str | None, workers: tuple[int, ...] = (0, 1, 2), batches: int = 8
                 ) -> list[dict[str, Any]]:
    """The ``video_folder`` preset's loader against its train step: training clips/s
    (decode, clip, crop) with 0 (threads only), 1, 2... loader processes, and the
    headroom over the step's examples/s. Without ``folder``, 64 generated MP4s."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = folder or str(generated_videos(Path(tmp) / "videos"))
        base = cfg_lib.build("video_folder", {"data.data_dir": root, "data.num_classes": 2})
        ds = data_lib.load(base.data)
        step = step_throughput(base, ds, steps=10)
        rows = []
        for n in workers:
            config = cfg_lib.build("video_folder", {"data.data_dir": root,
                                                    "data.num_classes": 2,
                                                    "data.num_workers": n})
            speed = pipeline_throughput(data_lib.load(config.data), config.train.batch_size,
                                        batches)
            rows.append({"loader_workers": n, "clips_per_s": round(speed, 1),
                         "clips_per_s_per_worker": round(speed / max(1, n), 1),
                         "train_step_examples_per_s": round(step, 1),
                         "headroom": round(speed / step, 1)})
    return rows


def generated_videos(root: Path, per_class: int = 32, frames: int = 24) -> Path:
    """Two classes of 64x48 MP4s (a square moving left or right), for the loader bench."""
    import numpy as np

    from suite.data.extras import module

    av = module("video")  # missing: one line naming the extra, as the video tasks say

    rng = np.random.default_rng(0)
    for k, name in enumerate(("left", "right")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            with av.open(str(root / name / f"{i}.mp4"), mode="w") as box:
                stream = box.add_stream("mpeg4", rate=25)
                stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
                for f in range(frames):
                    img = rng.integers(0, 40, (48, 64, 3), dtype=np.uint8)
                    x = 4 + 2 * f if k else 52 - 2 * f
                    img[16:28, max(0, x):x + 10] = 230
                    for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        box.mux(packet)
                for packet in stream.encode():
                    box.mux(packet)
    return root
