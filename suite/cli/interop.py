"""Commands that bring weights in and put them to use: import-official, evaluate, predict,
attention."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from suite.cli.common import command, folder_out, overrides_arg
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
    from suite.weights.official import import_official

    folder_out(args.workdir, "--workdir")
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
        "imported) and print its loss, accuracy (and mAP) on a split as one JSON line. "
        "Read-only: a corrupt checkpoint is noted and the previous one used; nothing in "
        "the folder is moved or deleted.")
    p.add_argument("workdir", help="the run folder")
    p.add_argument("--data-dir", help="where the task's files are (else the folder's config)")
    p.add_argument("--split", choices=("eval", "train"), default="eval")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from suite.inference.predict import evaluate_folder
    from suite.inference.user_inputs import check_positive

    check_positive(args.batch_size, "--batch-size")
    print(json.dumps(evaluate_folder(Path(args.workdir), args.split, args.data_dir,
                                     args.batch_size)))
    return 0


# ----------------------------------------------------------------------------- predict


@command
def _predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="the top classes (or logits) of examples as a user holds them",
        description="Every input goes through the run's own evaluation pipeline: its "
        "normalisation, positions and data.permutation (with its index), as `evaluate` "
        "sees its data. --raw X.npy: examples in the task's own units, as `perceiver-suite "
        "data TASK` reports them (uint8 pixels, audio samples, point coordinates). "
        "--inputs X.npy: model-ready arrays [B, *index_dims, C], normalised, in grid "
        "order. Image files: decoded as the task's reader does. --split eval|train "
        "--example N: an example of the run's data. Prints each example's top classes "
        "(the first 20), or writes every logit ([B, classes], float32) to --out. "
        "Read-only: nothing in the run folder is moved or deleted.")
    p.add_argument("workdir", help="the run folder")
    p.add_argument("images", nargs="*", help="image files")
    p.add_argument("--raw", metavar="X.npy", help="examples in the task's raw units")
    p.add_argument("--inputs", metavar="X.npy",
                   help="model-ready examples [B, *index_dims, C], normalised, grid order")
    p.add_argument("--split", choices=("eval", "train"), help="an example of this split")
    p.add_argument("--example", type=int, help="which example of --split (default: 0)")
    p.add_argument("--out", metavar="Y.npy", help="write the logits here instead of printing")
    p.add_argument("--top", type=int, default=5, help="classes shown (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from suite.inference import predict as inference
    from suite.inference import user_inputs

    given = [name for name, v in (("--raw", args.raw), ("--inputs", args.inputs),
                                  ("image files", args.images), ("--split", args.split)) if v]
    if len(given) != 1:
        raise SuiteError("predict takes one of --raw X.npy, --inputs X.npy, image files or "
                         "--split eval|train --example N"
                         + (f"; got {' and '.join(given)}" if given else ""))
    if args.example is not None and not args.split:
        raise SuiteError(f"--example {args.example}: goes with --split eval|train")
    user_inputs.check_positive(args.batch_size, "--batch-size")
    if args.out and not Path(args.out).absolute().parent.is_dir():
        raise SuiteError(f"--out {args.out}: its folder does not exist")
    if args.out and Path(args.out).is_dir():
        raise SuiteError(f"--out {args.out}: a folder; expected the .npy file to write")
    workdir = Path(args.workdir)
    config = inference.folder_config(workdir)
    top, clipped = user_inputs.check_top(args.top, config.data.num_classes)
    labels = None
    if args.split:
        n = args.example or 0
        ds, split, label = inference.prepared_example(config, args.split, n)
        names, labels, first = [str(n)], [label], f"{args.split} example"
    elif args.images:
        ds, split = inference.prepared_images(config, [Path(p) for p in args.images])
        names, first = list(args.images), "file"
    else:
        ds, split, notes = inference.prepared_array(config, Path(args.raw or args.inputs),
                                                    raw=bool(args.raw))
        names, first = [str(i) for i in range(len(split))], "example"
        for note in notes:
            print(note, file=sys.stderr)
    model, step = inference.load_state(config, workdir)
    logits = inference.logits_of(model, ds, split, args.batch_size)
    if args.out:
        import numpy as np

        with open(args.out, "wb") as f:
            np.save(f, logits)
        print(f"wrote logits {list(logits.shape)} (step {step}) to {args.out}", file=sys.stderr)
        return 0
    if clipped:
        print(clipped, file=sys.stderr)
    tops = inference.top_classes(logits, top, config.train.loss == "sigmoid")
    print(inference.top_table(names, tops, labels, first=first))
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
    source.add_argument("--inputs", metavar="X.npy", help="model-ready examples [B, "
                        "*index_dims, C] (or one), normalised, grid order (as predict)")
    source.add_argument("--raw", metavar="X.npy",
                        help="examples in the task's raw units (as predict)")
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
        _attention_source(args), f"--example {args.example}",
        *([f"--cross-attend {' '.join(map(str, args.cross_attend))}"] if args.cross_attend
          else []),
        *([f"--latents {' '.join(map(str, args.latents))}"] if args.latents != [0] else []),
        f"--out {args.out}", *args.overrides])


def _attention_source(args: argparse.Namespace) -> str:
    return (f"--inputs {args.inputs}" if args.inputs else f"--raw {args.raw}" if args.raw
            else f"--split {args.split}")


def run_attention(args: argparse.Namespace) -> int:
    from suite import config as cfg_lib
    from suite import provenance
    from suite.analysis import attention
    from suite.inference import predict as inference
    from suite.inference import user_inputs
    from suite.platform.devices import machine_description

    overrides = cfg_lib.parse_overrides(args.overrides)
    attention.check_overrides(overrides)
    workdir, out = Path(args.workdir), folder_out(args.out, "--out")
    config = inference.folder_config(workdir, overrides)
    n = config.model.num_latents
    for i in args.latents:
        user_inputs.check_index(i, n, "--latents", f"the model has {n} latents")
    if args.split:
        ds, split, _ = inference.prepared_example(config, args.split, args.example)
        example = inference.one_example(ds, split, 0)
    else:
        path = Path(args.inputs or args.raw)
        ds, split, notes = inference.prepared_array(config, path, raw=bool(args.raw))
        user_inputs.check_example(args.example, len(split), f"{_attention_source(args)}")
        example = inference.one_example(ds, split, args.example)
        for note in notes:
            print(note, file=sys.stderr)
    model, step = inference.load_state(config, workdir)
    maps = attention.maps_for(model, config, example, args.cross_attend)
    attention.write_maps(maps, example, out)
    where = _attention_source(args) if not args.split else f"{args.split} split"
    attention.draw(maps, config, example, args.latents, out / "attention",
                   f"{workdir.name}: step {step}, example {args.example} of the {where}")
    header = [f"run: {workdir} (step {step}); example {args.example} of the {where}",
              f"command: {attention_command(args)}", f"machine: {machine_description()}",
              f"code: {provenance.describe(provenance.record())}", ""]
    print(attention.describe(maps, out, header))
    print(f"wrote {out}/cross_attend_*.npy, attention.png, attention.svg", file=sys.stderr)
    return 0
