"""``perceiver-suite attention``: a run folder's cross-attention maps for one example, as
arrays and as the paper's figure (the input, one latent's map at each cross-attend, and
an overview of many latents), for images, 1-D signals and point clouds.

Maps are the scaled pre-softmax logits (``suite.models.attention_maps``), each drawn on
its own colour scale. ``cross_attend_K.npy`` is ``[latents, *index_dims]`` (one head) or
``[heads, latents, *index_dims]``; a point cloud's is ``[latents, points]`` with the
points' coordinates in ``points.npy``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from suite.config import Config  # noqa: E402
from suite.errors import SuiteError  # noqa: E402
from suite.files import write_text_atomic  # noqa: E402

COMPUTE_ONLY = ("model.cross_attention_chunk", "model.precision", "model.remat",
                "model.scan_repeats")
OVERVIEW = 16  # latents in the overview grid


def check_overrides(overrides: dict[str, Any]) -> None:
    """Only overrides that change how the model computes, not what it is, are taken."""
    for key in overrides:
        if key not in COMPUTE_ONLY:
            raise SuiteError(f"{key}={overrides[key]}: attention maps are of the trained model; "
                             f"only compute-only overrides are taken ({', '.join(COMPUTE_ONLY)})")


def example_of(config: Config, split: str | None, inputs: Path | None, n: int
               ) -> dict[str, np.ndarray]:
    """One example in the model's input layout: from an array file, or from a split
    through the evaluation transform (normalised, permuted as in training)."""
    if inputs is not None:
        try:
            array = np.load(inputs, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise SuiteError(f"{inputs}: not a readable .npy array ({e})") from None
        want = (*config.data.index_dims, config.data.channels)
        if tuple(array.shape) == want:
            array = array[None]
        if tuple(array.shape[1:]) != want or not 0 <= n < len(array):
            raise SuiteError(f"{inputs}: shape {list(array.shape)}; expected [B, "
                             f"{', '.join(map(str, want))}] with --example < B")
        return {"inputs": array[n].astype(np.float32)}
    from suite import data as data_lib

    ds = data_lib.load(config.data, config.seed)
    chosen = ds.eval if split == "eval" else ds.train
    if not 0 <= n < len(chosen):
        raise SuiteError(f"--example {n}: the {split} split has {len(chosen)} examples")
    batch = next(iter(data_lib.eval_batches(ds, 1, chosen.take(np.arange(n, n + 1)))))
    data_lib.pop_bad(batch)
    import jax

    return jax.tree.map(lambda v: v[0], batch)  # the one example (each modality's too)


def maps_for(model: Any, config: Config, example: dict[str, np.ndarray],
             which: list[int] | None) -> dict[int, np.ndarray]:
    """``{K: map}`` on the input grid (``[heads, N, *index_dims]``; point clouds
    ``[heads, N, points]``)."""
    from suite.models.attention_maps import cross_attention_maps, on_grid

    raw = cross_attention_maps(model, example["inputs"], example.get("positions"),
                               example.get("index"), which)
    if config.data.modalities:  # {K: {modality: [H, N, *its grid]}}
        return {k: split_modalities(v, config) for k, v in raw.items()}
    dims = () if config.data.pos_dim else tuple(model.adapter.index_dims)
    if not dims:
        return raw
    return {k: on_grid(v, dims, example.get("index")) for k, v in raw.items()}


def split_modalities(logits: np.ndarray, config: Config) -> dict[str, np.ndarray]:
    """``[H, N, M]`` over the concatenated modalities -> each modality's ``[H, N, *grid]``."""
    from suite.config.layout import layouts

    out, start = {}, 0
    for lay in layouts(config):
        out[lay.name] = logits[..., start:start + lay.items].reshape(*logits.shape[:2],
                                                                     *lay.grid)
        start += lay.items
    return out


def write_maps(maps: dict[int, np.ndarray], example: dict[str, np.ndarray],
               out: Path) -> list[Path]:
    """``cross_attend_K.npy`` per map (the head axis dropped when there is one head),
    ``input.npy`` and, for point clouds, ``points.npy``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, m in maps.items():
        for name, part in (m.items() if isinstance(m, dict) else [("", m)]):
            path = out / (f"cross_attend_{k}_{name}.npy" if name else f"cross_attend_{k}.npy")
            np.save(path, part[0] if part.shape[0] == 1 else part)
            written.append(path)
    inputs = example["inputs"]
    for name, x in (inputs.items() if isinstance(inputs, dict) else [("", inputs)]):
        path = out / (f"input_{name}.npy" if name else "input.npy")
        np.save(path, x)
        written.append(path)
    if "positions" in example:
        np.save(out / "points.npy", example["positions"])
        written.append(out / "points.npy")
    return written


def grid_input(config: Config, example: dict[str, np.ndarray]) -> np.ndarray:
    """The example back on its grid, as it was before any permutation."""
    x = example["inputs"]
    if "index" in example:
        back = np.empty_like(x)
        back[example["index"]] = x
        x = back.reshape(*config.data.index_dims, -1)
    return x


def draw(maps: dict[int, Any], config: Config, example: dict[str, Any],
         latents: list[int], path: Path, title: str) -> list[Path]:
    """The paper's figure: a row per chosen latent (the input, then that latent's map at
    every cross-attend; head 0), then an overview of 16 latents at the first and at the
    last cross-attend (two rows of 8 each). Several modalities: a figure each
    (``<path>_<modality>``), video drawn at its middle frame."""
    first = next(iter(maps.values()))
    if isinstance(first, dict):
        out = []
        for name in first:
            view = {"inputs": example["inputs"][name]}
            out += draw({k: m[name] for k, m in maps.items()}, config, view, latents,
                        path.with_name(f"{path.name}_{name}"), f"{title}: {name}")
        return out
    from suite.analysis.plots import save

    ks = sorted(maps)
    n = first.shape[1]
    shown = [i for i in latents if 0 <= i < n] or [0]
    overview = list(range(0, n, max(1, n // OVERVIEW)))[:OVERVIEW]
    ends = [ks[0]] + ([ks[-1]] if len(ks) > 1 else [])
    cols = max(1 + len(ks), OVERVIEW // 2)
    rows = len(shown) + 2 * len(ends)
    fig = plt.figure(figsize=(1.9 * cols, 2.0 * rows + 0.6))
    kind = "points" if "positions" in example else {1: "signal", 2: "image", 3: "video"}.get(
        first.ndim - 2, "image")
    shown_input = grid_input(config, example) if "index" in example else example["inputs"]
    panel = lambda slot, values, text, small=False: _panel(  # noqa: E731
        fig, rows, cols, slot, kind, values, shown_input, example.get("positions"), text, small)
    for r, i in enumerate(shown):
        panel(r * cols + 1, None, "input")
        for c, k in enumerate(ks):
            panel(r * cols + 2 + c, maps[k][0, i], f"latent {i}, cross-attend {k}")
    for j, k in enumerate(ends):
        for c, i in enumerate(overview):
            panel((len(shown) + 2 * j) * cols + c + 1, maps[k][0, i],
                  f"cross-attend {k}, latent {i}", small=True)
    middle = ", video at its middle frame" if kind == "video" else ""
    fig.suptitle(f"{title}\nscaled pre-softmax cross-attention logits q.k/sqrt(c), head 0; "
                 f"each map on its own colour scale{middle}", fontsize=9)
    return save(fig, path)


def _panel(fig, rows: int, cols: int, slot: int, kind: str, values: np.ndarray | None,
           inputs: np.ndarray, points: np.ndarray | None, title: str,
           small: bool = False) -> None:
    if slot > rows * cols:
        return
    three_d = kind == "points"
    ax = fig.add_subplot(rows, cols, slot, **({"projection": "3d"} if three_d else {}))
    if three_d:
        ax.scatter(points[:, 0], points[:, 1], points[:, 2], s=2,
                   c=values if values is not None else "k", cmap="viridis")
    elif values is None:  # the input
        x = inputs[len(inputs) // 2] if kind == "video" else inputs
        if kind in ("image", "video") and x.ndim == 3:
            img = (x - x.min()) / max(float(x.max() - x.min()), 1e-6)
            ax.imshow(img if img.shape[-1] == 3 else img[..., 0], cmap="gray")
        else:
            ax.plot(np.asarray(x).reshape(-1), lw=0.6)
    elif kind == "signal":
        ax.imshow(values.reshape(1, -1), aspect="auto", cmap="viridis")
    else:
        ax.imshow(values[len(values) // 2] if kind == "video" else values, cmap="viridis",
                  aspect="auto")
    ax.set_title(title, fontsize=6 if small else 8)
    ax.set_xticks([]), ax.set_yticks([])
    if three_d:
        ax.set_zticks([])


def describe(maps: dict[int, Any], out: Path, header: list[str] | None = None) -> str:
    """One line per cross-attend (shape, range) into ``out/maps.txt``, after ``header``
    (what was drawn, the command, the machine and code), and returned without it."""
    lines = []
    for k, m in maps.items():
        for name, part in (m.items() if isinstance(m, dict) else [("", m)]):
            shape = list(part.shape[1:] if part.shape[0] == 1 else part.shape)
            lines.append(f"cross-attend {k}{' ' + name if name else ''}: {shape} "
                         f"(min {part.min():.3g}, max {part.max():.3g})")
    text = "\n".join(lines)
    write_text_atomic(out / "maps.txt", "\n".join([*(header or []), text]) + "\n")
    return text


def report_figures(out: Path, frame: Any, spec: Any, report_dir: Path) -> list[Path]:
    """``report --attention``: per cell, the maps of eval example 0 at the first and the
    last cross-attend, from the cell's lowest completed seed."""
    from suite.analysis.plots import cell_label
    from suite.inference.predict import folder_config, load_state

    done = frame[(frame["status"] == "completed")]
    if done.empty or "model.kind" in done and (done["model.kind"] != "perceiver").all():
        return []
    done = done[done.get("model.kind", "perceiver") == "perceiver"].copy()
    done["cell"] = cell_label(done, spec)
    paths: list[Path] = []
    for cell, runs in done.groupby("cell", sort=False):
        run = runs.sort_values("seed").iloc[0]
        workdir = Path(out) / "runs" / run["run_id"]
        config = folder_config(workdir)
        model, step = load_state(config, workdir)
        example = example_of(config, "eval", None, 0)
        total = sum(1 for kind, _ in model.schedule if kind == "cross")
        maps = maps_for(model, config, example, sorted({1, total}))
        slug = "_".join(part.split("=")[-1] for part in cell.split(", "))
        paths += draw(maps, config, example, [0], report_dir / f"attention_{slug}",
                      f"{cell} (seed {int(run['seed'])}, step {step}; eval example 0)")
    return paths
