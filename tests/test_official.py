"""DeepMind's released Perceiver IO weights: a checkpoint in the official format (built
here from the official module names at a small size) imports, gives the logits of an
independent numpy forward pass of the official equations, fine-tunes and resumes; a
pickle that would run code is refused before anything runs."""

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from suite import config as C
from suite.cli import main
from suite.inference.predict import predict_arrays
from suite.weights.hf_format import HFFormatError, read_folder
from suite.weights.official import OfficialFormatError, import_official, read_pickle

H = W = 8  # an 8x8 RGB image, 2 Fourier bands: C = 3 + 2 (2 x 2 + 1) = 13
BANDS, N, D, CLASSES, SELFS, BLOCKS, HEADS = 2, 4, 16, 5, 2, 2, 2
C_IN = 3 + 2 * (2 * BANDS + 1)
OVERRIDES = {"data.task": "synthetic", "data.index_dims": "8,8", "data.channels": "3",
             "model.num_blocks": str(BLOCKS), "model.self_heads": str(HEADS)}


def linear(rng, n_in, n_out):
    return {"w": rng.normal(0, 1 / np.sqrt(n_in), (n_in, n_out)).astype(np.float32),
            "b": rng.normal(0, 0.1, n_out).astype(np.float32)}


def norm(rng, n):
    return {"scale": (1 + 0.1 * rng.normal(size=n)).astype(np.float32),
            "offset": (0.1 * rng.normal(size=n)).astype(np.float32)}


def block(rng, prefix, q_dim, kv_dim, width, cross):
    """One official CrossAttention / SelfAttention module's arrays, by their Haiku names."""
    out = {f"{prefix}/attention/linear": linear(rng, q_dim, width),
           f"{prefix}/attention/linear_1": linear(rng, kv_dim, width),
           f"{prefix}/attention/linear_2": linear(rng, kv_dim, width),
           f"{prefix}/attention/linear_3": linear(rng, width, q_dim),
           f"{prefix}/mlp/linear": linear(rng, q_dim, q_dim),
           f"{prefix}/mlp/linear_1": linear(rng, q_dim, q_dim),
           f"{prefix}/layer_norm": norm(rng, q_dim), f"{prefix}/layer_norm_1": norm(rng, q_dim)}
    if cross:  # query norm, inputs norm, then the one before the MLP
        out[f"{prefix}/layer_norm_1"] = norm(rng, kv_dim)
        out[f"{prefix}/layer_norm_2"] = norm(rng, q_dim)
    return out


def official_params(seed=0):
    rng = np.random.default_rng(seed)
    enc, dec = "perceiver_encoder/~/", "classification_decoder/~/basic_decoder/"
    params = {f"{enc}trainable_position_encoding": {
        "pos_embs": rng.normal(0, 0.5, (N, D)).astype(np.float32)}}
    params |= block(rng, f"{enc}cross_attention", D, C_IN, C_IN, cross=True)
    for j in range(SELFS):
        params |= block(rng, f"{enc}self_attention{'' if j == 0 else f'_{j}'}", D, D, D, False)
    params[f"{dec}~/trainable_position_encoding"] = {
        "pos_embs": rng.normal(0, 0.5, (1, D)).astype(np.float32)}
    params |= block(rng, f"{dec}cross_attention", D, D, D, cross=True)
    params[f"{dec}output"] = linear(rng, D, CLASSES)
    return params


# --------------------------------------- the official equations, written out in numpy


def layer_norm(x, p):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["offset"]


def dense(x, p):
    return x @ p["w"] + p["b"]


def gelu(x):  # jax.nn.gelu's tanh approximation, as the official MLP
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def attend(params, prefix, xq, xkv, heads):
    q, k, v = (dense(x, params[f"{prefix}/attention/linear{s}"])
               for x, s in ((xq, ""), (xkv, "_1"), (xkv, "_2")))
    b, t, c = q.shape
    q, k, v = (a.reshape(b, a.shape[1], heads, c // heads) for a in (q, k, v))
    logits = np.einsum("bthd,bThd->bhtT", q, k) / np.sqrt(c // heads)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out = np.einsum("bhtT,bThd->bthd", w, v).reshape(b, t, c)
    return dense(out, params[f"{prefix}/attention/linear_3"])


def mlp(params, prefix, x):
    return dense(gelu(dense(x, params[f"{prefix}/mlp/linear"])), params[f"{prefix}/mlp/linear_1"])


def cross_attention(params, prefix, xq, xkv, heads, residual):
    a = attend(params, prefix, layer_norm(xq, params[f"{prefix}/layer_norm"]),
               layer_norm(xkv, params[f"{prefix}/layer_norm_1"]), heads)
    x = xq + a if residual else a
    return x + mlp(params, prefix, layer_norm(x, params[f"{prefix}/layer_norm_2"]))


def self_attention(params, prefix, x, heads):
    h = layer_norm(x, params[f"{prefix}/layer_norm"])
    x = x + attend(params, prefix, h, h, heads)
    return x + mlp(params, prefix, layer_norm(x, params[f"{prefix}/layer_norm_1"]))


def fourier_inputs(images):
    """[DM] ImagePreprocessor: pixels, then [pos, sin(pi f pos), cos(pi f pos)]."""
    axes = [np.linspace(-1, 1, n) for n in (H, W)]
    pos = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    freqs = np.stack([np.linspace(1, r / 2, BANDS) for r in (H, W)])  # max_resolution = grid
    f = (pos[:, :, None] * freqs[None]).reshape(len(pos), -1)
    enc = np.concatenate([pos, np.sin(np.pi * f), np.cos(np.pi * f)], -1)
    b = len(images)
    return np.concatenate([images.reshape(b, H * W, 3),
                           np.broadcast_to(enc, (b, *enc.shape))], -1)


def official_logits(params, images):
    enc, dec = "perceiver_encoder/~/", "classification_decoder/~/basic_decoder/"
    x = fourier_inputs(images.astype(np.float64))
    b = len(images)
    z = np.broadcast_to(params[f"{enc}trainable_position_encoding"]["pos_embs"], (b, N, D))
    z = cross_attention(params, f"{enc}cross_attention", z, x, 1, True)
    for _ in range(BLOCKS):  # the same self-attends in every block
        for j in range(SELFS):
            z = self_attention(params, f"{enc}self_attention{'' if j == 0 else f'_{j}'}", z,
                               HEADS)
    q = np.broadcast_to(params[f"{dec}~/trainable_position_encoding"]["pos_embs"], (b, 1, D))
    out = cross_attention(params, f"{dec}cross_attention", q, z, 1, True)
    return dense(out, params[f"{dec}output"])[:, 0]


# ------------------------------------------------------------------------------ tests


@pytest.fixture
def pystate(tmp_path):
    path = tmp_path / "tiny.pystate"
    params = official_params()
    path.write_bytes(pickle.dumps({"params": params, "state": {}}))
    return path, params


def test_imported_weights_give_the_official_equations_logits(pystate, tmp_path):
    path, params = pystate
    done = import_official(path, tmp_path / "run", C.build("imagenet_io", {}), OVERRIDES)
    assert done.arrays == sum(len(v) for v in params.values())
    m = done.config.model
    assert (m.num_latents, m.latent_dim, m.self_attends_per_block, m.fourier_bands) == \
        (N, D, SELFS, BANDS) and done.config.data.num_classes == CLASSES
    images = np.random.default_rng(1).normal(size=(3, H, W, 3)).astype(np.float32)
    ours = predict_arrays(tmp_path / "run", images)
    np.testing.assert_allclose(ours, official_logits(params, images), rtol=0, atol=1e-5)
    record = json.loads((tmp_path / "run" / "imported.json").read_text())
    assert record["source"] == str(path) and len(record["sha256"]) == 64


def test_an_import_stopped_while_saving_leaves_no_run_folder_and_a_rerun_succeeds(
        pystate, tmp_path, monkeypatch):
    from suite.training.checkpoint import Checkpointer

    path, _ = pystate
    save = Checkpointer.save

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        import_official(path, tmp_path / "run", C.build("imagenet_io", {}), OVERRIDES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.pystate"]
    (tmp_path / "run.partial-1").mkdir()  # a killed import's scratch: ignored
    (tmp_path / "run.partial-1" / "config.json").write_text("{}")
    monkeypatch.setattr(Checkpointer, "save", save)
    import_official(path, tmp_path / "run", C.build("imagenet_io", {}), OVERRIDES)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoints", "config.json", "imported.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "run.partial-1", "tiny.pystate"]


def test_an_import_into_an_existing_folder_of_other_files_keeps_them(pystate, tmp_path):
    path, _ = pystate
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine\n")
    import_official(path, tmp_path / "run", C.build("imagenet_io", {}), OVERRIDES)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoints", "config.json", "imported.json", "notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tiny.pystate"]


def test_a_missing_or_leftover_array_or_a_shape_mismatch_is_named(pystate, tmp_path):
    path, params = pystate
    base = C.build("imagenet_io", {})
    extra = {**params, "perceiver_encoder/~/cross_attention_1/attention/linear": {"w": 0}}
    with pytest.raises(OfficialFormatError, match="no place for perceiver_encoder/~/cross_"):
        import_official(path, tmp_path / "a", base, OVERRIDES, params=extra)
    gone = {k: v for k, v in params.items() if not k.endswith("self_attention_1/mlp/linear")}
    with pytest.raises(OfficialFormatError, match=r"lacks perceiver_encoder/~/self_attention_1"
                                                  r"/mlp/linear/[wb] \(for self_attends/1/mlp"):
        import_official(path, tmp_path / "b", base, OVERRIDES, params=gone)
    bent = {**params, "classification_decoder/~/basic_decoder/output": {
        "w": np.zeros((D, CLASSES), np.float32), "b": np.zeros(CLASSES + 1, np.float32)}}
    with pytest.raises(OfficialFormatError, match=r"output/b is \[6\], the model's "
                                                  r"decoder/output/bias is \[5\]"):
        import_official(path, tmp_path / "d", base, OVERRIDES, params=bent)
    with pytest.raises(OfficialFormatError, match="contradicts the checkpoint"):
        import_official(path, tmp_path / "c", base, {**OVERRIDES, "model.num_latents": "8"})


class Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch ran-code",))


def test_a_pickle_that_would_run_code_is_refused_before_anything_runs(tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pystate"
    path.write_bytes(pickle.dumps({"params": {"m": {"w": Payload()}}, "state": {}}))
    with pytest.raises(OfficialFormatError, match=r"refused: the pickle names (posix|os)\.system"):
        read_pickle(path)
    code = main(["import-official", str(path), "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "system" in err[0]
    assert not (tmp_path / "ran-code").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("variant", ["numpy 1", "protocol 3", "protocol 4", "protocol 5",
                                     "fortran order", "big-endian"])
def test_released_checkpoints_as_numpy_1_and_2_write_them_read_exactly(tmp_path, variant):
    params = official_params()
    if variant == "fortran order":
        params = {m: {k: np.asfortranarray(v) for k, v in leaves.items()}
                  for m, leaves in params.items()}
    if variant == "big-endian":
        params = {m: {k: v.astype(">f4") for k, v in leaves.items()}
                  for m, leaves in params.items()}
    protocol = int(variant[-1]) if variant.startswith("protocol") else 4
    data = pickle.dumps({"params": params, "state": {}}, protocol=3 if variant == "numpy 1"
                        else protocol)
    if variant == "numpy 1":  # numpy 1 names numpy.core.multiarray where 2 has numpy._core
        data = data.replace(b"numpy._core.", b"numpy.core.")
    (tmp_path / "w.pystate").write_bytes(data)
    read = read_pickle(tmp_path / "w.pystate")
    assert read.keys() == params.keys()
    for module, leaves in params.items():
        assert read[module].keys() == leaves.keys()
        for name, array in leaves.items():
            got = read[module][name]
            assert got.dtype == np.float32 and got.flags.c_contiguous
            np.testing.assert_array_equal(got, array)


@pytest.mark.slow
def test_imported_weights_fine_tune_and_resume_like_any_run(pystate, tmp_path, capsys):
    path, _ = pystate
    run = tmp_path / "run"
    fine_tune = [f"{k}={v}" for k, v in OVERRIDES.items()] + [
        "data.normalization=dataset", "data.augment=false", "data.randaugment_layers=0",
        "data.mixup=0", "data.cutmix=0", "train.steps=6", "train.batch_size=8",
        "train.log_every=3", "train.checkpoint_every=3", "train.keep_checkpoints=3",
        "train.tensorboard=false", "data.num_classes=5"]
    assert main(["import-official", str(path), "--workdir", str(run), *fine_tune]) == 0
    assert main(["train", "--workdir", str(run)]) == 0  # the folder's own config
    first = json.loads((run / "summary.json").read_text())
    assert first["status"] == "completed" and first["step"] == 6
    (run / "summary.json").unlink()  # as a crash after the step-3 checkpoint leaves it
    shutil.rmtree(run / "checkpoints" / "6")
    assert main(["train", "--workdir", str(run)]) == 0
    assert json.loads((run / "summary.json").read_text())["metrics"] == first["metrics"]
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["step"] == 6 and line["eval/accuracy"] == first["metrics"]["eval/accuracy"]


FIXTURE = Path(__file__).parent / "fixtures" / "hf_perceiver"


@pytest.mark.skipif(not (FIXTURE / "model" / "model.safetensors").exists(),
                    reason="the Hugging Face fixture is made by nox -s hf-fixture")
def test_hugging_faces_format_imports_and_gives_its_own_logits(tmp_path):
    base = C.build("imagenet_io", {})
    done = import_official(FIXTURE / "model", tmp_path / "run", base,
                           {"data.task": "synthetic"})
    assert done.config.model.gelu_approximate is False  # the port's hidden_act="gelu"
    inputs = np.load(FIXTURE / "inputs.npy")
    ours = predict_arrays(tmp_path / "run", inputs)
    np.testing.assert_allclose(ours, np.load(FIXTURE / "logits.npy"), rtol=0, atol=1e-4)
    assert "safetensors" in json.loads((tmp_path / "run" / "imported.json").read_text())["format"]


def safetensors_bytes(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


def port(tmp_path, config=None, header=None, data=b"", raw=None) -> Path:
    """A Hugging Face folder: ``config.json`` and ``model.safetensors`` as given."""
    folder = tmp_path / "port"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"image_size": 8} if config is None
                                                   else config))
    (folder / "model.safetensors").write_bytes(
        raw if raw is not None else safetensors_bytes(header or {}, data))
    return folder


def refusal(folder) -> str:
    with pytest.raises(HFFormatError) as caught:
        read_folder(folder)
    assert "\n" not in str(caught.value)
    return str(caught.value)


LATENTS = "perceiver.embeddings.latents"


@pytest.mark.parametrize(("config", "says"), [
    ([1, 2], "config.json: expected a JSON object of the model's settings, found [1, 2]"),
    ({"image_size": "224"}, 'config.json: image_size="224": expected a positive integer'),
    ({"image_size": None}, "config.json: image_size=null: expected a positive integer"),
    ({"image_size": True}, "config.json: image_size=true: expected a positive integer"),
    ({"num_blocks": 0}, "config.json: num_blocks=0: expected a positive integer"),
    ({"hidden_act": ["gelu"]}, 'config.json: hidden_act=["gelu"]: the Perceiver\'s MLPs'),
    ({"use_query_residual": "no"}, 'use_query_residual="no": expected true or false'),
    ({"num_blocks": 10**12}, "config.json: num_blocks=1000000000000 is over the suite's limit "
     "of 4,096"),
    ({"image_size": 10**8}, "config.json: image_size=100000000 is over the suite's limit of "
     "46,340"),
    ({"num_self_attention_heads": 10**6}, "num_self_attention_heads=1000000 is over the "
     "suite's limit of 1,024"),
])
def test_a_hugging_face_config_of_the_wrong_types_is_one_line(tmp_path, config, says):
    assert says in refusal(port(tmp_path, config=config))


def test_a_config_that_is_not_json_is_one_line(tmp_path):
    folder = port(tmp_path)
    (folder / "config.json").write_text("{\n  'image_size': 8\n}")
    assert "config.json: not a readable JSON config (Expecting property name" in \
        refusal(folder)


@pytest.mark.parametrize(("header", "data", "says"), [
    ({"perceiver.decoder.decoder.final_layer.scale": {
        "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(4),
     "model.safetensors: tensor perceiver.decoder.decoder.final_layer.scale has no place"),
    ({"perceiver.encoder.self_attends.00.layernorm.weight": {
        "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(4),
     "tensor perceiver.encoder.self_attends.00.layernorm.weight has no place"),
    ({"bad\nname": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(4),
     'tensor "bad\\nname" has no place'),
    ({LATENTS: {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}, bytes(8),
     'tensor perceiver.embeddings.latents has dtype "I64"; only F16, F32, F64 are read'),
    ({LATENTS: {"dtype": "F32", "shape": [1 << 40, 1 << 20], "data_offsets": [0, 4]}},
     bytes(4), "do not fit its F32 data in the file's 4 bytes"),
    ({LATENTS: {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(4),
     "shape [4] and data_offsets [0, 16] do not fit"),
    ({LATENTS: {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "perceiver.decoder.decoder.final_layer.bias": {
          "dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12),
     "tensors perceiver.embeddings.latents and perceiver.decoder.decoder.final_layer.bias "
     "share bytes"),
    ([1], b"", "the header is [1], not a JSON object"),
])
def test_a_safetensors_header_out_of_bounds_or_with_unknown_names_is_one_line(
        tmp_path, header, data, says):
    assert says in refusal(port(tmp_path, header=header, data=data))


def test_a_safetensors_header_size_past_the_file_is_refused_before_reading(tmp_path):
    raw = (1 << 40).to_bytes(8, "little") + b"{}"
    assert "a header of 1,099,511,627,776 bytes in a file of 10: not a safetensors file" in \
        refusal(port(tmp_path, raw=raw))


def test_the_cli_refuses_a_bad_hugging_face_folder_and_writes_nothing(tmp_path, capsys):
    folder = port(tmp_path, config={"image_size": "8"})
    code = main(["import-official", str(folder), "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and 'image_size="8"' in err[0]
    assert not (tmp_path / "run").exists()
