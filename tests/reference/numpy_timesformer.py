"""A float64 NumPy forward of the ppTimeSformer, from docs/reference.md §1.

It reads weights in the reference key layout (section 2: Linear weights are [in, out], Conv2D
weights [out, in, kh, kw]) so that the same synthetic state feeds both this and the Paddle model.
Written for clarity first and speed second: everything is a matmul/einsum over whole batches,
because the full reference config (3137 tokens x 12 blocks) runs in CI.

scipy is here for its exact `erf` (the reference GELU is the erf form, and math.erf element by
element is ~30x slower on the ~10^8 activations of the full model).
"""
from __future__ import annotations

import re

import numpy as np
from scipy.special import erf

LAYER_NORM_EPS = 1e-6
HEAD_DIM = 64


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def layer_norm(x, weight, bias):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased, as LayerNorm does
    return (x - mean) / np.sqrt(var + LAYER_NORM_EPS) * _f64(weight) + _f64(bias)


def linear(x, weight, bias=None):
    y = x @ _f64(weight)  # reference layout: weight is [in, out]
    return y if bias is None else y + _f64(bias)


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def attention(x, state, prefix, heads):
    """Multi-head self-attention over axis 1 of x [N, L, D]; qkv has no bias."""
    n, length, width = x.shape
    head_dim = width // heads
    qkv = linear(x, state[prefix + ".qkv.weight"])
    # output columns are laid out as (q|k|v) x head x dim
    qkv = qkv.reshape(n, length, 3, heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [N, L, H, d]
    # einsum on the strided views: measured faster here than matmul on transposed copies
    scores = np.einsum("nlhd,nmhd->nhlm", q, k) * head_dim ** -0.5
    out = np.einsum("nhlm,nmhd->nlhd", softmax(scores, axis=-1), v)
    return linear(out.reshape(n, length, width), state[prefix + ".proj.weight"],
                  state[prefix + ".proj.bias"])


def patch_embed(video, weight, bias, patch):
    """Conv2D(k=stride=patch) on every frame, as a reshape + matmul.

    video [B, 3, T, H, W] -> [B, T, P, D] with patches in row-major (row, column) order."""
    b, c, t, h, w = video.shape
    gh, gw = h // patch, w // patch
    x = video.transpose(0, 2, 1, 3, 4)  # B, T, C, H, W
    x = x.reshape(b, t, c, gh, patch, gw, patch)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6)  # B, T, gh, gw, C, kh, kw
    x = x.reshape(b, t, gh * gw, c * patch * patch)
    kernel = _f64(weight).reshape(weight.shape[0], -1)  # [D, C*kh*kw], same (C, kh, kw) order
    return x @ kernel.T + _f64(bias)


def block(x, state, prefix, frames, heads):
    """One divided space-time block on x [B, 1 + P*T, D] (patch token 1 + p*T + t)."""
    b, tokens, width = x.shape
    patches = (tokens - 1) // frames
    cls_in = x[:, :1]  # [B, 1, D]
    patch_tokens = x[:, 1:]

    # a. temporal attention: each patch position attends over its T frames
    xt = patch_tokens.reshape(b * patches, frames, width)
    xt = attention(layer_norm(xt, state[prefix + ".temporal_norm1.weight"],
                              state[prefix + ".temporal_norm1.bias"]),
                   state, prefix + ".temporal_attn", heads)
    xt = linear(xt.reshape(b, patches * frames, width), state[prefix + ".temporal_fc.weight"],
                state[prefix + ".temporal_fc.bias"])
    patch_tokens = patch_tokens + xt

    # b. spatial attention: per frame, [block-input CLS ; that frame's patches]
    per_frame = patch_tokens.reshape(b, patches, frames, width).transpose(0, 2, 1, 3)
    cls_per_frame = np.broadcast_to(cls_in[:, None], (b, frames, 1, width))
    xs = np.concatenate([cls_per_frame, per_frame], axis=2).reshape(b * frames, 1 + patches, width)
    xs = attention(layer_norm(xs, state[prefix + ".norm1.weight"], state[prefix + ".norm1.bias"]),
                   state, prefix + ".attn", heads)
    xs = xs.reshape(b, frames, 1 + patches, width)
    cls_out = xs[:, :, 0].mean(axis=1, keepdims=True)  # average the T CLS outputs
    spatial_patches = xs[:, :, 1:].transpose(0, 2, 1, 3).reshape(b, patches * frames, width)

    # c. residual
    x = np.concatenate([cls_in, patch_tokens], axis=1) + \
        np.concatenate([cls_out, spatial_patches], axis=1)

    # d. MLP
    h = layer_norm(x, state[prefix + ".norm2.weight"], state[prefix + ".norm2.bias"])
    h = gelu(linear(h, state[prefix + ".mlp.fc1.weight"], state[prefix + ".mlp.fc1.bias"]))
    return x + linear(h, state[prefix + ".mlp.fc2.weight"], state[prefix + ".mlp.fc2.bias"])


def block_count(state) -> int:
    indices = {int(m.group(1)) for k in state
               if (m := re.match(r"backbone\.blocks\.(\d+)\.", k))}
    return max(indices) + 1 if indices else 0


def forward(state, video, heads=None):
    """video [B, 3, T, H, W] in [0, 1] -> (features [B, D], logits [B, C], event_times [B, C])."""
    video = _f64(video)
    b, _, frames, _, _ = video.shape
    proj_w = state["backbone.patch_embed.proj.weight"]
    width, patch = proj_w.shape[0], proj_w.shape[2]
    heads = heads or width // HEAD_DIM
    cls_token = _f64(state["backbone.cls_token"]).reshape(width)
    pos_embed = _f64(state["backbone.pos_embed"])[0]  # [1 + P, D]
    time_embed = _f64(state["backbone.time_embed"])[0]  # [T, D]
    assert time_embed.shape[0] == frames, "reference frame count must match the time embedding"

    # 1. patch embedding; per-frame CLS + spatial position (only the patch slots survive step 2)
    x = patch_embed(video, proj_w, state["backbone.patch_embed.proj.bias"], patch)  # B,T,P,D
    x = x + pos_embed[1:]
    # 2. per patch over time, + time embedding, flattened space-major / time-minor
    x = x.transpose(0, 2, 1, 3) + time_embed  # B, P, T, D
    patches = x.shape[1]
    x = x.reshape(b, patches * frames, width)
    cls = np.broadcast_to(cls_token + pos_embed[0], (b, 1, width))
    x = np.concatenate([cls, x], axis=1)

    # 3. blocks
    for i in range(block_count(state)):
        x = block(x, state, f"backbone.blocks.{i}", frames, heads)

    # 4. final norm, CLS feature
    features = layer_norm(x[:, 0], state["backbone.norm.weight"], state["backbone.norm.bias"])
    # 5. head
    logits = linear(features, state["head.fc.weight"], state["head.fc.bias"])
    event_times = 1.0 / (1.0 + np.exp(-linear(features, state["head.fc_event_times.weight"],
                                              state["head.fc_event_times.bias"])))
    return features, logits, event_times
