"""The fast paths compute the same numbers as the plain model: chunked cross-attention,
scanned weight-shared repeats, rematerialisation; bfloat16 keeps float32 where it must;
scanned repeats keep the compiled program's size flat in the depth."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from suite import config as C
from suite.models import build_model
from suite.models.layers import (
    MLP,
    SelfAttend,
    chunked_attention,
    linear,
    mixed_attention,
    mixed_dense,
)
from suite.models.perceiver import layer_schedule, segments
from suite.platform import devices

RNG = np.random.default_rng(0)
DEEP = {"model.num_blocks": 4, "model.num_cross_attends": 4, "model.self_attends_per_block": 1}


def normal(*shape):
    return jnp.asarray(RNG.normal(size=shape), jnp.float32)


@pytest.mark.parametrize("keys,chunk", [(37, 8), (64, 16), (5, 4)])
def test_chunked_attention_equals_plain_attention_and_so_do_its_gradients(keys, chunk):
    q, k, v = normal(2, 5, 2, 8), normal(2, keys, 2, 8), normal(2, keys, 2, 8)
    np.testing.assert_allclose(chunked_attention(q, k, v, chunk),
                               jax.nn.dot_product_attention(q, k, v), atol=1e-5)
    grads = [jax.grad(lambda *a, f=f: (f(*a) ** 2).sum(), argnums=(0, 1, 2))(q, k, v)
             for f in (lambda *a: chunked_attention(*a, chunk), jax.nn.dot_product_attention)]
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def models(**variants):
    """The same initial weights under several configs (a random head, so logits vary)."""
    head = None
    built = {}
    for name, overrides in variants.items():
        model = build_model(C.build("digits", {**DEEP, **overrides}), rngs=nnx.Rngs(0))
        head = normal(*model.head.kernel.shape) if head is None else head
        model.head.kernel[...] = head
        built[name] = model
    return built


def outputs_and_grads(model, x):
    loss = lambda m: (m(x) ** 2).sum()  # noqa: E731
    return model(x), jax.tree.leaves(nnx.grad(loss)(model))


TOWER = {"model.self_attends_per_block": 3}  # the latent layers: an inner scan


@pytest.mark.parametrize("shape,fast", [
    ({}, {"model.scan_repeats": True}), (TOWER, {"model.scan_repeats": True}),
    (TOWER, {"model.scan_repeats": True, "model.remat": True}), ({}, {"model.remat": True}),
    ({}, {"model.cross_attention_chunk": 16}),
    ({}, {"model.remat": True, "model.cross_attention_chunk": 7}),
], ids=["scan", "scan-tower", "scan-tower+remat", "remat", "chunk", "remat+chunk"])
def test_fast_paths_compute_the_numbers_of_the_plain_model(shape, fast):
    x = normal(3, 8, 8, 1)
    built = models(plain={**shape, "model.scan_repeats": False}, fast={**shape, **fast})
    (y0, g0), (y1, g1) = (outputs_and_grads(m, x) for m in built.values())
    np.testing.assert_allclose(y1, y0, atol=1e-5 * float(jnp.abs(y0).max()))
    scale = max(float(jnp.abs(g).max()) for g in g0)  # relative to the gradient's scale
    for a, b in zip(g1, g0, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5 * scale)


def test_shared_repeats_are_one_segment_and_the_schedule_is_kept():
    m = C.build("imagenet", {}).model
    assert [(unit[0], n) for unit, n in segments(m)] == [
        (("cross", 0), 1), (("self", 0), 1), (("cross", 1), 7)]
    for overrides in ({}, {"model.weight_sharing": False},
                      {"model.cross_attend_placement": "start"}, {"model.num_cross_attends": 2}):
        m = C.build("imagenet", overrides).model
        flat = [step for unit, n in segments(m) for _ in range(n) for step in unit]
        assert flat == layer_schedule(m)


def program_size(blocks: int, scan: bool) -> int:
    config = C.build("digits", {"model.num_blocks": blocks, "model.num_cross_attends": blocks,
                                "model.scan_repeats": scan})
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0))))
    x = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    return len(forward.lower(state, x).as_text())


def test_scanned_repeats_keep_the_program_size_flat_in_the_depth():
    assert program_size(8, scan=True) < 1.2 * program_size(2, scan=True)
    assert program_size(8, scan=False) > 3 * program_size(2, scan=False)


def test_bfloat16_computes_matmuls_in_bfloat16_and_keeps_float32_where_it_must():
    model = build_model(C.build("digits", {"model.precision": "bfloat16"}), rngs=nnx.Rngs(0))
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert {p.dtype for p in params} == {jnp.dtype(jnp.float32)}  # parameters stay f32
    assert model.cross[0].attn.q.dtype == jnp.bfloat16 and model.head.dtype is None
    logits = model(normal(2, 8, 8, 1))
    assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())
    hlo = jax.jit(lambda x: model(x)).lower(normal(2, 8, 8, 1)).as_text()
    assert "bf16" in hlo and "f32" in hlo


def test_a_bfloat16_projection_accumulates_in_float32_and_its_gradients_follow():
    x, w = normal(3, 5, 16), normal(16, 8)
    y = mixed_dense(x, w, jnp.dtype(jnp.bfloat16), x.dtype)
    bf = jnp.bfloat16
    assert y.dtype == jnp.float32
    np.testing.assert_array_equal(y, jnp.einsum("bmk,kn->bmn", x.astype(bf), w.astype(bf),
                                                preferred_element_type=jnp.float32))

    def loss(f):
        return lambda x, w: jnp.sum(jnp.sin(f(x, w)))

    dx, dw = jax.grad(loss(lambda x, w: mixed_dense(x, w, jnp.dtype(bf), x.dtype)),
                      argnums=(0, 1))(x, w)
    assert dx.dtype == jnp.float32 and dw.dtype == jnp.float32
    # Exactly the chain rule with bfloat16 operands: dy = cos(y) cast to bfloat16 ...
    dy = jnp.cos(y).astype(bf)
    np.testing.assert_allclose(dx, jnp.einsum("bmn,kn->bmk", dy, w.astype(bf),
                                              preferred_element_type=jnp.float32), rtol=1e-6)
    np.testing.assert_allclose(dw, jnp.einsum("bmk,bmn->kn", x.astype(bf), dy,
                                              preferred_element_type=jnp.float32), rtol=1e-5)
    # ... and, as a whole, within bfloat16 rounding of the float32 gradient (a single
    # element near zero may differ by more: compare norms, not elements).
    ref_dx, ref_dw = jax.grad(loss(lambda x, w: x @ w), argnums=(0, 1))(x, w)
    for got, ref in ((dx, ref_dx), (dw, ref_dw)):
        assert float(jnp.linalg.norm(got - ref) / jnp.linalg.norm(ref)) < 0.03
    dxb = jax.grad(lambda x: mixed_dense(x, w, jnp.dtype(bf), x.dtype).sum())(x.astype(bf))
    assert dxb.dtype == jnp.bfloat16  # a bfloat16 input gets a bfloat16 gradient


def test_float32_projections_are_flax_linear_exactly():
    ours = linear(16, 8, rngs=nnx.Rngs(0))
    stock = nnx.Linear(16, 8, rngs=nnx.Rngs(0))
    stock.kernel[...], stock.bias[...] = ours.kernel[...], normal(8)
    ours.bias[...] = stock.bias[...]
    x = normal(4, 16)
    np.testing.assert_array_equal(ours(x), stock(x))


def test_bfloat16_attention_matches_plain_attention_and_so_do_its_gradients():
    q, k, v = normal(2, 5, 3, 8), normal(2, 11, 3, 8), normal(2, 11, 3, 8)

    def loss(f):
        return lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v).astype(jnp.float32)))

    def rel(got, want):  # bfloat16 rounding, as a whole: one element may sit near zero
        return float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))

    mixed = mixed_attention(q, k, v, jnp.dtype(jnp.bfloat16))
    assert rel(mixed.astype(jnp.float32), jax.nn.dot_product_attention(q, k, v)) < 0.02
    ours = loss(lambda q, k, v: mixed_attention(q, k, v, jnp.dtype(jnp.bfloat16)))
    plain = loss(jax.nn.dot_product_attention)
    for got, want in zip(jax.grad(ours, argnums=(0, 1, 2))(q, k, v),
                         jax.grad(plain, argnums=(0, 1, 2))(q, k, v), strict=True):
        assert got.dtype == jnp.float32
        assert rel(got, want) < 0.03


@pytest.mark.parametrize("make,dots_per_step", [
    (lambda: MLP(16, 4, rngs=nnx.Rngs(0), dtype=jnp.bfloat16), 5),  # 2 forward, 3 backward
    # 6 projections and 2 attention matmuls forward; 12 and 4 backward
    (lambda: SelfAttend(16, 2, 4, 0.0, rngs=nnx.Rngs(0), dtype=jnp.bfloat16), 24),
])
def test_every_matmul_of_a_bfloat16_train_step_takes_bfloat16_and_accumulates_in_float32(
        make, dots_per_step):
    graphdef, state = nnx.split(make())

    def loss(state, x):
        return jnp.sum(nnx.merge(graphdef, state)(x) ** 2)

    text = jax.jit(jax.grad(loss)).lower(state, normal(2, 8, 16)).as_text()
    dots = re.findall(r"stablehlo.dot_general .*?: \((.*?)\) -> (\S+)", text)
    assert len(dots) == dots_per_step
    for operands, result in dots:  # float32 accumulation: XLA:CPU runs these on BF16 units
        assert re.fullmatch(r"tensor<[\dx]+xbf16>, tensor<[\dx]+xbf16>", operands), operands
        assert result.endswith("xf32>"), result


def test_the_compile_cache_goes_where_it_is_told_or_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv(devices.CACHE_ENV, str(tmp_path / "cache"))
    assert devices.compile_cache_dir() == tmp_path / "cache"
    monkeypatch.setenv(devices.CACHE_ENV, "off")
    assert devices.compile_cache_dir() is None


def test_the_targets_table_reads_in_units_and_keeps_targets_measured_earlier(tmp_path):
    from suite.cli.benchmarks import targets_write

    def row(name, target, plain, fast, goal, met):
        return {"name": name, "target": target, "plain": plain, "fast": fast,
                "ratio": fast / plain if name != "bfloat16" else fast, "goal": goal, "met": met}

    targets_write([row("memory", "temporaries", 96.4 * 2**30, 7.6 * 2**30, 0.25, True)],
                  tmp_path, "bench --targets memory", "cpu")
    text = targets_write([row("bfloat16", "bf16 accuracy", 0.944, 0.939, 0.90, True)],
                         tmp_path, "bench --targets bfloat16", "cpu")
    assert "| 96.4 GiB | 7.6 GiB | 7.9% | <= 25% | yes |" in re.sub(" +", " ", text)
    assert "93.9%" in text and ">= 90%" in text  # the earlier memory row is kept too
    assert "bench --targets memory" in text and "bench --targets bfloat16" in text


def test_the_peer_comparison_is_written_per_precision_with_each_sides_own_flops(tmp_path):
    from suite.benchmarks import peer

    def row(side, seconds, precision):
        flops = {"flops_analytic": 400e9} if side == "ours" else {"flops": 600e9, "torch": "2"}
        return {"round": 0, "side": side, "precision": precision, "step_seconds": seconds,
                **flops}

    for precision, name in [("float32", "peer.md"), ("bfloat16", "peer_bfloat16.md")]:
        path = peer.write([row("ours", 2.0, precision), row("theirs", 3.0, precision)],
                          tmp_path, "bench --peer", "cpu", precision)
        text = path.read_text()
        assert path.name == name and (tmp_path / name.replace(".md", ".csv")).exists()
        assert f"P1 structure, {precision}" in text
        assert "FLOP/s ratio (ours / theirs): 1.00; step-time ratio (ours / theirs): 0.67" in text
        assert "Where the time goes" not in text  # rows without part timings: no parts table


def test_the_peer_report_says_per_block_part_where_one_side_is_faster_per_flop(tmp_path):
    from suite.benchmarks import peer

    parts = {"ours": {"attention_seconds": 0.2, "attention_flops": 16e9,
                      "mlp_seconds": 0.1, "mlp_flops": 20e9},
             "theirs": {"attention_seconds": 0.1, "attention_flops": 16e9,
                        "mlp_seconds": 0.2, "mlp_flops": 40e9}}
    rows = [{"round": 0, "side": side, "precision": "float32", "step_seconds": 1.0,
             "flops_analytic": 4e11, "flops": 6e11, "torch": "2", **parts[side]}
            for side in ("ours", "theirs")]
    text = re.sub(" +", " ", peer.write(rows, tmp_path, "bench --peer", "cpu").read_text())
    assert "| attention | 200.0 | 16.00 | 80 | 100.0 | 16.00 | 160 | 0.50 |" in text
    assert "| mlp | 100.0 | 20.00 | 200 | 200.0 | 40.00 | 200 | 1.00 |" in text
