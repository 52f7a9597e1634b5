"""Commands that bring weights in and put them to use: import-official, evaluate, predict."""

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
