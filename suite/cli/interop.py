"""Commands that bring weights in and put them to use: import-official, evaluate, predict,
attention."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from suite.cli.common import command, overrides_arg
from suite.errors import SuiteError

# --------------------------------------------------------------------- import-official


@command
def _import_official(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-official", help="DeepMind's released Perceiver IO weights -> a run folder",
        description="Read a released checkpoint (imagenet_fourier_position_encoding.pystate, "
        "the pickle the official colab loads) with an unpickler that admits numpy arrays "
        "and plain containers only, infer the config from the arrays' shapes (over the "
        "imagenet_io preset and the overrides given, for heads, blocks and the input grid), "
        "map every array to one parameter with an exact shape check, and write a run "
        "folder: config.json, an Orbax checkpoint at step 0 and imported.json. "
        "`train --workdir DIR` there fine-tunes the weights; `evaluate` and `predict` use "
        "them. Overrides set the fine-tuning run too (data.data_dir, train.steps, ...).")
    p.add_argument("path", help="the .pystate pickle")
    p.add_argument("--workdir", required=True, help="the run folder to write (must be new)")
    p.add_argument("--preset", default="imagenet_io", metavar="NAME",
                   help="what the arrays cannot tell (default: %(default)s)")
    overrides_arg(p, "dotted config overrides, e.g. data.data_dir=/data/imagenet")
    p.set_defaults(func=run_import_official)


def run_import_official(args: argparse.Namespace) -> int:
    from suite import config as cfg_lib
    from suite.training.official import import_official

    base = cfg_lib.build(args.preset, {})
    done = import_official(Path(args.path), Path(args.workdir), base,
                           cfg_lib.parse_overrides(args.overrides))
    m = done.config.model
    print(f"imported {done.arrays} arrays (sha256 {done.sha256[:12]}) into {args.workdir}: "
          f"{m.num_latents} x {m.latent_dim} latents, {m.num_blocks} blocks of "
          f"{m.self_attends_per_block} self-attends, {m.fourier_bands} bands, "
          f"{done.config.data.num_classes} classes")
    return 0


# ---------------------------------------------------------------------------- evaluate


@command
def _evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="a run folder's newest checkpoint on a split: one JSON line",
        description="Load the newest intact checkpoint of a run folder (trained or "
        "imported) and print its loss, accuracy (and mAP) on a split as one JSON line.")
    p.add_argument("workdir", help="the run folder")
    p.add_argument("--data-dir", help="where the task's files are (else the folder's config)")
    p.add_argument("--split", choices=("eval", "train"), default="eval")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from suite.training.inference import evaluate_folder

    print(json.dumps(evaluate_folder(Path(args.workdir), args.split, args.data_dir,
                                     args.batch_size)))
    return 0


# ----------------------------------------------------------------------------- predict


@command
def _predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="logits of arrays, or the top-5 classes of image files",
        description="With --inputs X.npy: logits for arrays already in the model's input "
        "layout [B, *index_dims, C] (normalised as its data pipeline would), batched, in "
        "float32, written to --out. With image files: each through the task's evaluation "
        "transform (the centre crop, the folder's normalisation), its top-5 classes.")
    p.add_argument("workdir", help="the run folder")
    p.add_argument("images", nargs="*", help="image files")
    p.add_argument("--inputs", help="a .npy array [B, *index_dims, C]")
    p.add_argument("--out", help="where to write the logits (.npy), with --inputs")
    p.add_argument("--top", type=int, default=5)
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from suite.training import inference

    if bool(args.inputs) == bool(args.images):
        raise SuiteError("predict takes --inputs X.npy (with --out Y.npy) or image files")
    if args.inputs:
        if not args.out:
            raise SuiteError("--inputs needs --out Y.npy for the logits")
        try:
            inputs = np.load(args.inputs, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise SuiteError(f"{args.inputs}: not a readable .npy array ({e})") from None
        logits = inference.predict_arrays(Path(args.workdir), inputs)
        np.save(args.out, logits)
        print(f"wrote logits {list(logits.shape)} to {args.out}", file=sys.stderr)
        return 0
    for row in inference.predict_images(Path(args.workdir), [Path(p) for p in args.images],
                                        args.top):
        print(row["path"] + ": " + ", ".join(f"{c} ({p:.1%})" for c, p in row["top"]))
    return 0


# --------------------------------------------------------------------------- attention


@command
def _attention(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention", help="cross-attention maps of a run folder's model for one example",
        description="Compute, for one example, every latent's scaled pre-softmax "
        "cross-attention logits (q.k/sqrt(c)) over the inputs at each cross-attend, with "
        "the newest checkpoint of a run folder (trained or imported), in a separate "
        "forward pass; write OUT/cross_attend_K.npy ([latents, *index_dims], or [heads, "
        "...] with several heads; point clouds: [latents, points] and points.npy) and the "
        "paper's figure (OUT/attention.png, .svg). Compute-only overrides are taken.")
    p.add_argument("workdir", help="the run folder")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--inputs", help="a .npy array [B, *index_dims, C] (or one example)")
    source.add_argument("--split", choices=("eval", "train"),
                        help="an example of this split, through the evaluation transform")
    p.add_argument("--example", type=int, default=0, help="which example (default: 0)")
    p.add_argument("--cross-attend", type=int, nargs="+", metavar="K",
                   help="cross-attends to map, 1-based in forward order (default: all)")
    p.add_argument("--latents", type=int, nargs="+", metavar="I", default=[0],
                   help="latents drawn one by one (default: 0); 16 more in an overview")
    p.add_argument("--out", required=True, help="the folder to write")
    overrides_arg(p, "compute-only overrides: model.cross_attention_chunk, model.precision, "
                  "model.remat, model.scan_repeats")
    p.set_defaults(func=run_attention)


def attention_command(args: argparse.Namespace) -> str:
    """The ``attention`` command line that draws these maps again."""
    return " ".join([
        "perceiver-suite attention", str(args.workdir),
        f"--inputs {args.inputs}" if args.inputs else f"--split {args.split}",
        f"--example {args.example}",
        *([f"--cross-attend {' '.join(map(str, args.cross_attend))}"] if args.cross_attend
          else []),
        *([f"--latents {' '.join(map(str, args.latents))}"] if args.latents != [0] else []),
        f"--out {args.out}", *args.overrides])


def run_attention(args: argparse.Namespace) -> int:
    from suite import config as cfg_lib
    from suite import provenance
    from suite.analysis import attention
    from suite.training.devices import machine_description
    from suite.training.inference import folder_config, load_state

    overrides = cfg_lib.parse_overrides(args.overrides)
    attention.check_overrides(overrides)
    workdir, out = Path(args.workdir), Path(args.out)
    config = folder_config(workdir, overrides)
    model, step = load_state(config, workdir)
    example = attention.example_of(config, args.split,
                                   Path(args.inputs) if args.inputs else None, args.example)
    maps = attention.maps_for(model, config, example, args.cross_attend)
    attention.write_maps(maps, example, out)
    where = f"--inputs {args.inputs}" if args.inputs else f"{args.split} split"
    attention.draw(maps, config, example, args.latents, out / "attention",
                   f"{workdir.name}: step {step}, example {args.example} of the {where}")
    header = [f"run: {workdir} (step {step}); example {args.example} of the {where}",
              f"command: {attention_command(args)}", f"machine: {machine_description()}",
              f"code: {provenance.describe(provenance.record())}", ""]
    print(attention.describe(maps, out, header))
    print(f"wrote {out}/cross_attend_*.npy, attention.png, attention.svg", file=sys.stderr)
    return 0
