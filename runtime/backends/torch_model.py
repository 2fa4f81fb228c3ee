"""The ppTimeSformer (divided space-time attention) in PyTorch, read top to bottom, for the torch engine.

The forward is docs/reference.md §1 step by step; the module tree gives every parameter the
reference's name (§2), so a bundle's `weights.safetensors` loads by name through
`load_reference_state`, the one place that maps the reference layout onto this model. Imported
only when the torch engine is chosen (runtime/backends/torch.py): it needs torch at import time.

Both attentions are `F.scaled_dot_product_attention` (fused kernels on the GPU and the CPU; its
default scale, 1/sqrt(head dim), is the reference's). GELU is the exact erf form, LayerNorm has
eps 1e-6, as the reference.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

LAYER_NORM_EPS = 1e-6


class Attention(nn.Module):
    """Multi-head self-attention; qkv has no bias, its outputs are ordered (q, k, v) x head x dim."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, L, D] -> [N, L, D]
        n, length, width = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [N, heads, L, head dim]
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, length, width))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class DividedSpaceTimeBlock(nn.Module):
    """Attention over each patch's frames (time), then over each frame's patches (space), then the MLP.

    Tokens: [B, 1 + P*T, D], the CLS first, then patch-major, time-minor (token 1 + p*T + t).
    """

    def __init__(self, width: int, heads: int, mlp_ratio: int, frames: int):
        super().__init__()
        self.frames = frames
        self.norm1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.attn = Attention(width, heads)
        self.temporal_norm1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.temporal_attn = Attention(width, heads)
        self.temporal_fc = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(width, width * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        frames = self.frames
        patches_per_frame = (tokens - 1) // frames
        cls, patches = x[:, :1], x[:, 1:]

        # 1. Time: one sequence of T tokens per (clip, patch), the patch tokens only.
        time = self.temporal_attn(self.temporal_norm1(patches.reshape(batch * patches_per_frame, frames, width)))
        patches = patches + self.temporal_fc(time.reshape(batch, patches_per_frame * frames, width))

        # 2. Space: one sequence per (clip, frame): the block's input CLS, then that frame's patches.
        per_frame = patches.reshape(batch, patches_per_frame, frames, width).transpose(1, 2)
        per_frame = per_frame.reshape(batch * frames, patches_per_frame, width)
        cls_per_frame = cls.expand(batch, frames, width).reshape(batch * frames, 1, width)
        space = self.attn(self.norm1(torch.cat([cls_per_frame, per_frame], dim=1)))
        cls_out = space[:, 0].reshape(batch, frames, width).mean(dim=1, keepdim=True)  # averaged over frames
        space_patches = space[:, 1:].reshape(batch, frames, patches_per_frame, width).transpose(1, 2)

        # 3. Residual: [input CLS ; time-updated patches] + [averaged CLS output ; space output].
        x = torch.cat([cls + cls_out, patches + space_patches.reshape(batch, -1, width)], dim=1)
        # 4. MLP.
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """The reference's Conv2D (kernel = stride = patch), computed as the matrix product it is.

    Non-overlapping patches make the convolution one matmul over flattened (channel, row, column)
    patches. As a matmul, FP32 means IEEE FP32 on every device; cuDNN convolutions would take TF32
    by default on a GPU, off by about 1e-3.
    """

    def __init__(self, patch_size: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # [N, 3, S, S] -> [N, P, D]
        n, channels, height, width = frames.shape
        p = self.proj.kernel_size[0]
        patches = frames.reshape(n, channels, height // p, p, width // p, p).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(n, (height // p) * (width // p), channels * p * p)
        return F.linear(patches, self.proj.weight.reshape(self.proj.out_channels, -1), self.proj.bias)


class VisionTransformer(nn.Module):
    """The backbone: video [B, 3, T, S, S] -> the final-LayerNormed CLS token [B, D]."""

    def __init__(self, frames: int, depth: int, width: int, heads: int, image_size: int, patch_size: int,
                 mlp_ratio: int):
        super().__init__()
        patches_per_frame = (image_size // patch_size) ** 2
        self.patch_embed = PatchEmbed(patch_size, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, patches_per_frame + 1, width))
        self.time_embed = nn.Parameter(torch.zeros(1, frames, width))
        self.blocks = nn.ModuleList(DividedSpaceTimeBlock(width, heads, mlp_ratio, frames) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, height, width = video.shape
        # 1. Embed every frame's patches and add the spatial positions (slot 0 is the CLS's).
        tokens = self.patch_embed(video.transpose(1, 2).reshape(batch * frames, channels, height, width))
        tokens = tokens + self.pos_embed[:, 1:]  # [B*T, P, D]
        # 2. Regroup by patch over time, add the time embedding, flatten space-major / time-minor.
        patches_per_frame, dim = tokens.shape[1], tokens.shape[2]
        tokens = tokens.reshape(batch, frames, patches_per_frame, dim).transpose(1, 2) + self.time_embed[:, None]
        tokens = tokens.reshape(batch, patches_per_frame * frames, dim)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(batch, 1, dim)
        x = torch.cat([cls, tokens], dim=1)
        # 3. The blocks; 4. the final LayerNorm, and the feature is the CLS token.
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]


class Head(nn.Module):
    """Two Linear layers side by side on the feature: raw logits, and event times through a sigmoid."""

    def __init__(self, width: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(width, classes)
        self.fc_event_times = nn.Linear(width, classes)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc(features), torch.sigmoid(self.fc_event_times(features))


class TimeSformer(nn.Module):
    """`forward(video [B, 3, T, S, S] in [0, 1]) -> (features [B, D], logits [B, C], event_times [B, C])`."""

    def __init__(self, architecture: Mapping[str, int]):
        """`architecture`: a bundle's (frames, depth, width, heads, classes, image_size, patch_size, mlp_ratio)."""
        super().__init__()
        a = architecture
        self.backbone = VisionTransformer(a["frames"], a["depth"], a["width"], a["heads"], a["image_size"],
                                          a["patch_size"], a["mlp_ratio"])
        self.head = Head(a["width"], a["classes"])

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.backbone(video)
        logits, event_times = self.head(features)
        return features, logits, event_times


def load_reference_state(model: TimeSformer, state: Mapping[str, torch.Tensor]) -> None:
    """Copy a reference-layout state dict (docs/reference.md §2) into `model`, refusing any mismatch.

    The names are the same on both sides. Paddle stores a Linear weight as [in, out], torch as
    [out, in]: those are transposed here, and only here. Every missing, unexpected or mis-shaped key
    is named in one `InputError`; nothing is copied unless everything fits.
    """
    params = model.state_dict()
    linear = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Linear)}

    def reference_shape(name: str) -> tuple[int, ...]:
        shape = tuple(params[name].shape)
        return shape[::-1] if name in linear else shape

    missing = [f"{name} {list(reference_shape(name))}" for name in params if name not in state]
    unexpected = [f"{name} {list(state[name].shape)}" for name in state if name not in params]
    misshaped = [f"{name} (expected {list(reference_shape(name))}, got {list(state[name].shape)})"
                 for name in params if name in state and tuple(state[name].shape) != reference_shape(name)]
    problems = [f"{kind} {', '.join(names)}" for kind, names in
                (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if names]
    if problems:
        raise InputError("the weights do not match the bundle's architecture: " + "; ".join(problems))
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name].t() if name in linear else state[name])
