"""Synthetic reference weights, from the table in docs/reference.md §2.

`reference_state` produces every tensor of a reference `.pdparams` (same key names, shapes and
float32 dtype; random values), `write_pdparams` writes it the way the reference files are: a
protocol-4 pickle of name -> ndarray plus Paddle's `StructuredToParameterName@@` bookkeeping key.

Values are scaled so that every part of the network matters to the output: Linear weights have
std 1/sqrt(fan_in) (unit-size activations, attention logits of order 1 so that softmax is far from
uniform), LayerNorm weights ~1, biases and embeddings large enough to move the result. With the
tiny std 0.02 of a real initialisation, attention would be nearly uniform and a mis-ordered token
layout could pass unnoticed.
"""
from __future__ import annotations

import pickle

import numpy as np

BOOKKEEPING_KEY = "StructuredToParameterName@@"
FULL_PARAMETER_COUNT = 121_237_284
FULL_TENSOR_COUNT = 227


def reference_shapes(depth=12, width=768, frames=16, classes=18, patch=16, image=224,
                     mlp_ratio=4) -> dict[str, tuple[int, ...]]:
    """Key -> shape, in the order of the section-2 table."""
    patches = (image // patch) ** 2
    hidden = width * mlp_ratio
    shapes = {
        "backbone.cls_token": (1, 1, width),
        "backbone.pos_embed": (1, patches + 1, width),
        "backbone.time_embed": (1, frames, width),
        "backbone.patch_embed.proj.weight": (width, 3, patch, patch),
        "backbone.patch_embed.proj.bias": (width,),
    }
    for i in range(depth):
        b = f"backbone.blocks.{i}."
        shapes.update({
            b + "norm1.weight": (width,), b + "norm1.bias": (width,),
            b + "attn.qkv.weight": (width, 3 * width),
            b + "attn.proj.weight": (width, width), b + "attn.proj.bias": (width,),
            b + "temporal_norm1.weight": (width,), b + "temporal_norm1.bias": (width,),
            b + "temporal_attn.qkv.weight": (width, 3 * width),
            b + "temporal_attn.proj.weight": (width, width),
            b + "temporal_attn.proj.bias": (width,),
            b + "temporal_fc.weight": (width, width), b + "temporal_fc.bias": (width,),
            b + "norm2.weight": (width,), b + "norm2.bias": (width,),
            b + "mlp.fc1.weight": (width, hidden), b + "mlp.fc1.bias": (hidden,),
            b + "mlp.fc2.weight": (hidden, width), b + "mlp.fc2.bias": (width,),
        })
    shapes.update({
        "backbone.norm.weight": (width,), "backbone.norm.bias": (width,),
        "head.fc.weight": (width, classes), "head.fc.bias": (classes,),
        "head.fc_event_times.weight": (width, classes), "head.fc_event_times.bias": (classes,),
    })
    return shapes


def _random_tensor(rng, key, shape):
    def normal(std):
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    if key.endswith(("cls_token", "pos_embed", "time_embed")):
        return normal(0.5)
    if "norm" in key.rsplit(".", 2)[-2] and key.endswith(".weight"):  # LayerNorm gain
        return 1.0 + normal(0.1)
    if key.endswith(".bias"):
        return normal(0.1)
    if key == "backbone.patch_embed.proj.weight":
        return normal(1.0 / np.sqrt(np.prod(shape[1:])))
    return normal(1.0 / np.sqrt(shape[0]))  # Linear [in, out]


def reference_state(rng, depth=12, width=768, frames=16, classes=18, patch=16, image=224,
                    mlp_ratio=4) -> dict[str, np.ndarray]:
    """All tensors of a reference .pdparams (float32, random), without the bookkeeping key."""
    return {key: _random_tensor(rng, key, shape)
            for key, shape in reference_shapes(depth, width, frames, classes, patch, image,
                                               mlp_ratio).items()}


def _parameter_names(state):
    """Paddle's structured -> internal name map; values only need to be plausible strings."""
    names, layer_index, kind_count = {}, {}, {}
    for key in state:
        if key.endswith(("cls_token", "pos_embed", "time_embed")):
            kind = "create_parameter"
        elif "patch_embed" in key:
            kind = "conv2d"
        elif "norm" in key.rsplit(".", 2)[-2]:
            kind = "layer_norm"
        else:
            kind = "linear"
        layer = key.rsplit(".", 1)[0] if kind != "create_parameter" else key
        if layer not in layer_index:
            layer_index[layer] = kind_count.get(kind, 0)
            kind_count[kind] = layer_index[layer] + 1
        suffix = "b_0" if key.endswith(".bias") else "w_0"
        names[key] = f"{kind}_{layer_index[layer]}.{suffix}"
    return names


def write_pdparams(state, path, bookkeeping=True):
    """Write `state` as a reference-style .pdparams (pickle protocol 4)."""
    payload = dict(state)
    if bookkeeping:
        payload[BOOKKEEPING_KEY] = _parameter_names(state)
    with open(path, "wb") as f:
        pickle.dump(payload, f, protocol=4)
    return path
