"""Floating-point operations per clip of the divided space-time TimeSformer, from its shapes.

One multiply-add counts as 2 FLOPs. Only matrix products (and the patch convolution, which is one)
are counted; LayerNorm, softmax, GELU, residual additions and the embeddings' additions are
O(tokens x width) and together below 1 % of the total.

With T frames, P = (image/patch)^2 patches per frame, D width, r MLP ratio, L blocks, C classes,
k = patch size, and N_t = P*T patch tokens:

    patch embed          2 * P*T * (3*k*k) * D
    per block, temporal  qkv 2*N_t*D*3D + scores and mix 2 * 2*P*T*T*D + proj 2*N_t*D*D + temporal_fc 2*N_t*D*D
    per block, spatial   (T*(P+1) tokens: each frame's patches with a CLS copy)
                         qkv 2*T(P+1)*D*3D + scores and mix 2 * 2*T*(P+1)^2*D + proj 2*T(P+1)*D*D
    per block, MLP       (1 + N_t tokens) 2 * 2*(1+N_t)*D*rD
    head                 2 * 2*D*C

The reference model (T=16, P=196, D=768, r=4, L=12): 0.784 TFLOP per clip (3.7 GFLOP patch
embed, 65.0 GFLOP per block). The number of heads does not change the count.
"""

from __future__ import annotations


def clip_flops(frames: int = 16, depth: int = 12, width: int = 768, mlp_ratio: int = 4,
               image_size: int = 224, patch_size: int = 16, num_classes: int = 18, **_ignored) -> dict:
    """FLOPs for one clip, split by part; extra keys (heads, ...) are accepted and ignored."""
    T, D, k = frames, width, patch_size
    P = (image_size // patch_size) ** 2
    patch_tokens = P * T
    spatial_tokens = T * (P + 1)
    mlp_tokens = 1 + patch_tokens

    patch_embed = 2 * patch_tokens * (3 * k * k) * D
    temporal = (2 * patch_tokens * D * 3 * D            # qkv
                + 2 * (2 * P * T * T * D)               # q k^T and attn v, one T x T per patch
                + 2 * patch_tokens * D * D              # proj
                + 2 * patch_tokens * D * D)             # temporal_fc
    spatial = (2 * spatial_tokens * D * 3 * D
               + 2 * (2 * T * (P + 1) ** 2 * D)          # one (P+1) x (P+1) per frame
               + 2 * spatial_tokens * D * D)
    mlp = 2 * (2 * mlp_tokens * D * mlp_ratio * D)
    block = temporal + spatial + mlp
    head = 2 * (2 * D * num_classes)
    total = patch_embed + depth * block + head
    return {"total": total, "patch_embed": patch_embed, "per_block": block, "temporal": temporal,
            "spatial": spatial, "mlp": mlp, "head": head}


def clip_tflop(arch: dict) -> float:
    return clip_flops(**arch)["total"] / 1e12
