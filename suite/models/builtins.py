"""The suite's own models and Perceiver parts, registered through ``suite.extend`` as a
user's are. Targets are import strings, so choosing one by name (validating a config)
imports no model code; the registry imports this module the first time it is read.
"""

from __future__ import annotations

from suite import extend

MODELS = "suite.models"

extend.register_model("perceiver", f"{MODELS}.perceiver:Perceiver",
                      flops=f"{MODELS}.flops:perceiver_flops")
extend.register_model("transformer", f"{MODELS}.baselines:TransformerClassifier",
                      flops=f"{MODELS}.flops:baseline_flops")
extend.register_model("vit", f"{MODELS}.baselines:ViT", flops=f"{MODELS}.flops:baseline_flops")
extend.register_model("convnet", f"{MODELS}.baselines:ConvNet",
                      flops=f"{MODELS}.flops:baseline_flops")

extend.register_cross_attention("standard", f"{MODELS}.parts:StandardCrossAttention")
extend.register_self_attention("standard", f"{MODELS}.parts:StandardSelfAttention")
extend.register_mlp("standard", f"{MODELS}.parts:StandardMLP")
extend.register_latent_init("truncated_normal", f"{MODELS}.parts:truncated_normal_latents")

extend.register_position_encoding("fourier", f"{MODELS}.encodings:FourierPositions")
extend.register_position_encoding("learned", f"{MODELS}.encodings:LearnedPositions")
extend.register_position_encoding("none", f"{MODELS}.encodings:NoPositions")
