"""Optimisers and learning-rate schedules from the paper, built with optax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from suite.config import TrainConfig

# Paper, section 4.1: lr divided by 10 at epochs 84, 102 and 114 of 120.
STEP_DECAY_FRACTIONS = (84 / 120, 102 / 120, 114 / 120)


def schedule(t: TrainConfig) -> optax.Schedule:
    """The learning rate per step: the paper's step decay or constant-then-cosine."""
    steps = t.steps - t.warmup_steps
    lr = t.learning_rate
    if t.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif t.schedule == "step":
        bounds = {max(1, int(round(f * steps))): 0.1 for f in STEP_DECAY_FRACTIONS}
        main = optax.piecewise_constant_schedule(lr, bounds)
    elif t.schedule == "constant_cosine":  # Perceiver IO: flat for half, then cosine to 0
        flat = steps // 2
        main = optax.join_schedules(
            [optax.constant_schedule(lr), optax.cosine_decay_schedule(lr, max(1, steps - flat))],
            [flat],
        )
    else:
        main = optax.cosine_decay_schedule(lr, max(1, steps))
    if t.warmup_steps:
        warm = optax.linear_schedule(0.0, lr, t.warmup_steps)
        return optax.join_schedules([warm, main], [t.warmup_steps])
    return main


def decay_mask(params) -> object:
    """Weight decay on matrices (kernels, latents, position tables), not biases or norms."""
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def optimizer(t: TrainConfig) -> optax.GradientTransformation:
    """Gradient clipping (optional), then LAMB / AdamW / SGD with masked weight decay."""
    lr = schedule(t)
    if t.optimizer == "lamb":  # official code: adam(b1=.9, b2=.999, eps=1e-6) + trust ratio
        opt = optax.lamb(lr, b1=0.9, b2=0.999, eps=1e-6, weight_decay=t.weight_decay,
                         mask=decay_mask)
    elif t.optimizer == "adamw":
        opt = optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=t.weight_decay,
                          mask=decay_mask)
    else:
        opt = optax.chain(optax.add_decayed_weights(t.weight_decay, mask=decay_mask),
                          optax.sgd(lr, momentum=0.9))
    if t.grad_clip:
        opt = optax.chain(optax.clip_by_global_norm(t.grad_clip), opt)
    return opt
