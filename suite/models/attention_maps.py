"""The Perceiver's cross-attention maps, as the paper draws them (v2 Fig. 3): for every
latent, the scaled pre-softmax logits ``q.k / sqrt(c)`` over every input, per
cross-attend and head (the post-softmax maps are too sparse to read).

A separate forward pass computes them, so the compiled train step has no extra output:
the model's own modules run in forward order, unrolled, one example at a time; at each
cross-attend the logits are read from its query and key projections, the keys a chunk
of inputs at a time (the ImageNet model's 512 x 50,176 map is 100 MB per head, its
``[M, F]`` keys never whole). Every compute path of the train step (scanned or unrolled
repeats, chunked or plain cross-attention, bf16) computes the same latents, so the maps
are those of the model, whatever path it trains with.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from suite.errors import SuiteError

CHUNK = 4096  # inputs whose keys are projected at once


def logits_of(cross, z: jax.Array, x: jax.Array, chunk: int = CHUNK) -> jax.Array:
    """Scaled pre-softmax logits of a cross-attend, ``[heads, N, M]`` for one example;
    ``z [1, N, D]`` the latents it reads with, ``x [1, M, C]`` the inputs."""
    attn = cross.attn
    q = attn.heads(attn.q(cross.ln_q(z)))[0].astype(jnp.float32)  # [N, H, c]
    q = q / math.sqrt(q.shape[-1])
    m = x.shape[1]
    size = min(chunk, m)
    pad = -m % size
    xs = jnp.pad(x, ((0, 0), (0, pad), (0, 0))) if pad else x
    graphdef, state = nnx.split((cross.ln_kv, attn.k))

    def keys(piece):  # [size, C] -> logits [H, N, size]
        ln, k_proj = nnx.merge(graphdef, state)
        k = attn.heads(k_proj(ln(piece[None])))[0].astype(jnp.float32)  # [size, H, c]
        return jnp.einsum("nhc,mhc->hnm", q, k)

    pieces = xs[0].reshape(-1, size, xs.shape[-1])
    out = jax.lax.map(keys, pieces)  # [chunks, H, N, size]
    return out.transpose(1, 2, 0, 3).reshape(q.shape[1], q.shape[0], -1)[..., :m]


def variant_logits(cross, z: jax.Array, x: jax.Array) -> jax.Array:
    """A cross-attention variant's logits through its ``attention_logits`` hook
    (``suite.extend``), ``[heads, N, M]`` for one example."""
    out = cross.attn.attention_logits(cross.ln_q(z), cross.ln_kv(x))
    if out.ndim != 4 or out.shape[0] != 1 or out.shape[2:] != (z.shape[1], x.shape[1]):
        raise SuiteError(f"{type(cross.attn).__name__}.attention_logits gave shape "
                         f"{list(out.shape)}; expected [1, heads, {z.shape[1]}, {x.shape[1]}]")
    return out[0].astype(jnp.float32)


def cross_attention_maps(model, inputs: np.ndarray, positions: np.ndarray | None = None,
                         index: np.ndarray | None = None,
                         which: list[int] | None = None) -> dict[int, np.ndarray]:
    """``{K: logits [heads, N, M]}`` for the cross-attends ``which`` (1-based, forward order;
    default all) of one example (``inputs [*index_dims, C]`` or ``[M, C]`` permuted, or
    ``{modality: [*dims, C]}``: then M is the modalities' items in the model's order)."""
    from suite.models.perceiver import Perceiver

    if not isinstance(model, Perceiver):
        raise SuiteError(f"attention maps are the Perceiver's cross-attends; "
                         f"model.kind={type(model).__name__} has none")
    attn = model.cross[0].attn
    if not model.standard_cross and not hasattr(attn, "attention_logits"):
        raise SuiteError(f"the cross-attention variant {type(attn).__name__} gives no attention "
                         "maps: its class defines no attention_logits(q_in, kv_in) -> [B, H, N, "
                         "M] (suite.extend)")
    kwargs = {"inputs": jax.tree.map(lambda a: jnp.asarray(a, jnp.float32)[None], inputs)}
    if positions is not None:
        kwargs["positions"] = jnp.asarray(positions, jnp.float32)[None]
    if index is not None:
        kwargs["index"] = jnp.asarray(index)[None]
    total = sum(1 for kind, _ in model.schedule if kind == "cross")
    which = list(range(1, total + 1)) if which is None else which
    bad = [k for k in which if not 1 <= k <= total]
    if bad:
        raise SuiteError(f"--cross-attend {bad[0]}: the model has cross-attends 1..{total}")
    graphdef, state = nnx.split(model)
    maps = _maps(graphdef, state, kwargs, tuple(sorted(set(which))))
    return {k: np.asarray(v) for k, v in maps.items()}


@partial(jax.jit, static_argnums=(0, 3))
def _maps(graphdef, state, kwargs, which):
    model = nnx.merge(graphdef, state)
    model.eval()
    x, _ = model.encode_inputs(kwargs["inputs"], kwargs.get("positions"), kwargs.get("index"))
    z = jnp.broadcast_to(model.latents[...], (1, *model.latents.shape)).astype(x.dtype)
    out, k = {}, 0
    for kind, i in model.schedule:  # forward order, every repeat unrolled
        if kind == "cross":
            k += 1
            if k in which:
                out[k] = logits_of(model.cross[i], z, x) if model.standard_cross else \
                    variant_logits(model.cross[i], z, x)
            z = model.cross[i](z, x)
        else:
            z = model.self_attends[i](z)
    return out


def on_grid(logits: np.ndarray, index_dims: tuple[int, ...], item_index: np.ndarray | None
            ) -> np.ndarray:
    """``[H, N, M]`` -> ``[H, N, *index_dims]`` in grid order (a permuted input's items
    put back where they came from), or ``[H, N, M]`` for point clouds (no grid)."""
    if item_index is not None:  # item j of the input sat at grid position item_index[j]
        back = np.empty_like(logits)
        back[..., item_index] = logits
        logits = back
    return logits.reshape(*logits.shape[:2], *index_dims)
