"""The reference ppTimeSformer (divided space-time attention) in Paddle, read top to bottom.

Parameter names and shapes are the reference's (docs/reference.md §2), so a
published `.pdparams` loads with `tsf.training.weights.load_reference_weights` and a checkpoint
saved from here loads in the reference.

The forward has no data-dependent Python control flow: shapes that depend on the batch are
expressed with -1 in reshapes and with broadcasting, so `paddle.jit.to_static` /
`paddle.onnx.export` trace one static graph with a dynamic batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import paddle
import paddle.nn as nn
import paddle.nn.functional as F


@dataclass(frozen=True)
class TimeSformerConfig:
    """Hyper-parameters; the defaults are the reference's."""

    frames: int = 16
    depth: int = 12
    width: int = 768
    heads: int = 12
    image_size: int = 224
    patch_size: int = 16
    num_classes: int = 18
    mlp_ratio: int = 4

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image size {self.image_size} is not a multiple of patch {self.patch_size}")

    @property
    def patches_per_frame(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TimeSformerConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


LAYER_NORM_EPS = 1e-6


class Attention(nn.Layer):
    """Multi-head self-attention; qkv has no bias, its columns are (q|k|v) x head x dim."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(width, width * 3, bias_attr=False)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        tokens, width = x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape([-1, tokens, 3, self.heads, self.head_dim])
        qkv = qkv.transpose([2, 0, 3, 1, 4])  # 3, B, heads, tokens, dim
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.softmax(paddle.matmul(q, k, transpose_y=True) * self.scale, axis=-1)
        out = paddle.matmul(attn, v).transpose([0, 2, 1, 3]).reshape([-1, tokens, width])
        return self.proj(out)


class Mlp(nn.Layer):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate=False))


class DividedSpaceTimeBlock(nn.Layer):
    """Temporal attention over each patch's T tokens, then spatial attention within each frame.

    Token layout of x: [B, 1 + P*T, D], CLS first, then patch-major / time-minor (1 + p*T + t).
    """

    def __init__(self, width: int, heads: int, mlp_ratio: int, frames: int, patches: int):
        super().__init__()
        self.frames = frames
        self.patches = patches
        self.norm1 = nn.LayerNorm(width, epsilon=LAYER_NORM_EPS)
        self.attn = Attention(width, heads)
        self.temporal_norm1 = nn.LayerNorm(width, epsilon=LAYER_NORM_EPS)
        self.temporal_attn = Attention(width, heads)
        self.temporal_fc = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, epsilon=LAYER_NORM_EPS)
        self.mlp = Mlp(width, width * mlp_ratio)

    def forward(self, x):
        T, P, D = self.frames, self.patches, x.shape[2]
        cls_in = x[:, :1, :]  # [B, 1, D]
        patches = x[:, 1:, :]  # [B, P*T, D]

        # a. temporal attention: one sequence of T tokens per (sample, patch).
        temporal = self.temporal_attn(self.temporal_norm1(patches.reshape([-1, T, D])))
        patches = patches + self.temporal_fc(temporal.reshape([-1, P * T, D]))

        # b. spatial attention: one sequence per (sample, frame), the block-input CLS in front.
        per_frame = patches.reshape([-1, P, T, D]).transpose([0, 2, 1, 3]).reshape([-1, P, D])
        cls_per_frame = (cls_in + paddle.zeros_like(patches[:, :T, :])).reshape([-1, 1, D])
        spatial = self.attn(self.norm1(paddle.concat([cls_per_frame, per_frame], axis=1)))
        cls_out = spatial[:, 0, :].reshape([-1, T, D]).mean(axis=1, keepdim=True)
        spatial_patches = spatial[:, 1:, :].reshape([-1, T, P, D]).transpose([0, 2, 1, 3])
        spatial_patches = spatial_patches.reshape([-1, P * T, D])

        # c. residual: [CLS in ; temporally updated patches] + [mean CLS out ; spatial out].
        x = paddle.concat([cls_in + cls_out, patches + spatial_patches], axis=1)
        # d. MLP.
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Layer):
    def __init__(self, patch_size: int, width: int):
        super().__init__()
        self.proj = nn.Conv2D(3, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, frames):  # [B*T, 3, H, W] -> [B*T, P, D]
        return self.proj(frames).flatten(2).transpose([0, 2, 1])


class VisionTransformer(nn.Layer):
    """The backbone: everything up to and including the final LayerNorm; returns the CLS feature."""

    def __init__(self, cfg: TimeSformerConfig):
        super().__init__()
        self.cfg = cfg
        D, P, T = cfg.width, cfg.patches_per_frame, cfg.frames
        self.patch_embed = PatchEmbed(cfg.patch_size, D)
        init = nn.initializer.TruncatedNormal(std=0.02)
        self.cls_token = self.create_parameter([1, 1, D], default_initializer=init)
        self.pos_embed = self.create_parameter([1, P + 1, D], default_initializer=init)
        self.time_embed = self.create_parameter([1, T, D], default_initializer=nn.initializer.Constant(0.0))
        self.blocks = nn.LayerList(
            [DividedSpaceTimeBlock(D, cfg.heads, cfg.mlp_ratio, T, P) for _ in range(cfg.depth)]
        )
        self.norm = nn.LayerNorm(D, epsilon=LAYER_NORM_EPS)

    def forward(self, video):  # [B, 3, T, H, W]
        cfg = self.cfg
        T, P, D, S = cfg.frames, cfg.patches_per_frame, cfg.width, cfg.image_size
        frames = video.transpose([0, 2, 1, 3, 4]).reshape([-1, 3, S, S])
        tokens = self.patch_embed(frames) + self.pos_embed[:, 1:, :]  # [B*T, P, D]

        # Regroup per patch over time and add the time embedding.
        tokens = tokens.reshape([-1, T, P, D]).transpose([0, 2, 1, 3])  # [B, P, T, D]
        tokens = (tokens + self.time_embed.unsqueeze(1)).reshape([-1, P * T, D])

        # One CLS per sample. Broadcasting by addition instead of expand_as: paddle2onnx turns
        # expand_as against a dynamic batch into a fixed-shape Expand that ONNX Runtime refuses
        # (docs/toolchain.md, the `expand_as` trap).
        cls = self.cls_token + self.pos_embed[:, :1, :] + paddle.zeros_like(tokens[:, :1, :])
        x = paddle.concat([cls, tokens], axis=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0, :]


class Head(nn.Layer):
    """Two parallel linear layers on the CLS feature: class logits and per-class event times."""

    def __init__(self, width: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(width, num_classes)
        self.fc_event_times = nn.Linear(width, num_classes)

    def forward(self, features):
        return self.fc(features), F.sigmoid(self.fc_event_times(features))


class PPTimeSformer(nn.Layer):
    """`forward(video [B, 3, T, 224, 224] in [0, 1]) -> (features, logits, event_times)`."""

    def __init__(self, cfg: TimeSformerConfig | None = None):
        super().__init__()
        self.cfg = cfg or TimeSformerConfig()
        self.backbone = VisionTransformer(self.cfg)
        self.head = Head(self.cfg.width, self.cfg.num_classes)

    def forward(self, video):
        features = self.backbone(video)
        logits, event_times = self.head(features)
        return features, logits, event_times
