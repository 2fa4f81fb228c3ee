"""The ppTimeSformer as an ONNX graph, written from docs/reference.md §1 with `onnx.helper`.

The runtime's tests need model bundles, and the runtime never needs Paddle, so neither do they:
this builds the graph straight from a reference-layout state (tests/reference/pdparams.py) in the
ONNX ops of the bundle contract (opset 17; input `video`, outputs `features`, `logits`,
`event_times`; any batch size). It is a second, independent writing of the model, beside the
float64 NumPy forward (numpy_timesformer.py) that the runtime's outputs are checked against;
tsf-export's own ONNX (from Paddle through paddle2onnx) is tested against Paddle in test_export.py.
"""
from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
LAYER_NORM_EPS = 1e-6


class _Graph:
    """Nodes and initializers, with unique names."""

    def __init__(self):
        self.nodes, self.initializers = [], []
        self._names = itertools.count()

    def name(self, hint: str) -> str:
        return f"{hint}_{next(self._names)}"

    def const(self, value, hint: str = "c") -> str:
        name = self.name(hint)
        array = np.asarray(value)
        array = array.astype(np.float32) if array.dtype.kind == "f" else array.astype(np.int64)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, **attributes) -> str:
        output = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attributes))
        return output

    def reshape(self, x: str, shape) -> str:
        return self.op("Reshape", x, self.const(shape, "shape"))

    def transpose(self, x: str, perm) -> str:
        return self.op("Transpose", x, perm=list(perm))

    def linear(self, x: str, weight, bias=None) -> str:
        y = self.op("MatMul", x, self.const(weight, "w"))  # reference layout: [in, out]
        return y if bias is None else self.op("Add", y, self.const(bias, "b"))

    def layer_norm(self, x: str, weight, bias) -> str:
        return self.op("LayerNormalization", x, self.const(weight, "ln_w"), self.const(bias, "ln_b"), axis=-1,
                       epsilon=LAYER_NORM_EPS)

    def gelu(self, x: str) -> str:  # the exact (erf) form
        inner = self.op("Erf", self.op("Div", x, self.const(np.sqrt(2.0), "sqrt2")))
        return self.op("Mul", self.op("Mul", x, self.const(0.5, "half")), self.op("Add", inner, self.const(1.0, "one")))

    def slice(self, x: str, start: int, end: int, axis: int) -> str:
        return self.op("Slice", x, self.const([start], "s"), self.const([end], "e"), self.const([axis], "a"))

    def attention(self, x: str, state, prefix: str, length: int, width: int, heads: int) -> str:
        """Multi-head self-attention over axis 1 of x [N, L, D]; qkv without bias."""
        head_dim = width // heads
        qkv = self.reshape(self.linear(x, state[prefix + ".qkv.weight"]), [-1, length, 3, heads, head_dim])
        qkv = self.transpose(qkv, (2, 0, 3, 1, 4))  # 3, N, H, L, d
        q, k, v = (self.op("Squeeze", self.slice(qkv, i, i + 1, 0), self.const([0], "axes")) for i in range(3))
        scores = self.op("Mul", self.op("MatMul", q, self.transpose(k, (0, 1, 3, 2))),
                         self.const(head_dim ** -0.5, "scale"))
        out = self.op("MatMul", self.op("Softmax", scores, axis=-1), v)  # N, H, L, d
        out = self.reshape(self.transpose(out, (0, 2, 1, 3)), [-1, length, width])
        return self.linear(out, state[prefix + ".proj.weight"], state[prefix + ".proj.bias"])


def timesformer_onnx(state: dict, frames: int, heads: int, image_size: int = 224) -> onnx.ModelProto:
    """The reference model with `state`'s weights as an ONNX model (docs/reference.md §1)."""
    g = _Graph()
    proj = state["backbone.patch_embed.proj.weight"]
    width, patch = proj.shape[0], proj.shape[2]
    grid = image_size // patch
    patches = grid * grid
    depth = len({k.split(".")[2] for k in state if k.startswith("backbone.blocks.")})
    classes = state["head.fc.bias"].shape[0]
    pos_embed = state["backbone.pos_embed"][0]

    # 1. patches of every frame: B, T, P, D, + the spatial position of each patch slot
    x = g.reshape(g.transpose("video", (0, 2, 1, 3, 4)), [-1, 3, image_size, image_size])
    x = g.op("Conv", x, g.const(proj, "conv_w"), g.const(state["backbone.patch_embed.proj.bias"], "conv_b"),
             kernel_shape=[patch, patch], strides=[patch, patch])
    x = g.transpose(g.reshape(x, [-1, width, patches]), (0, 2, 1))  # B*T, P, D
    x = g.op("Add", g.reshape(x, [-1, frames, patches, width]), g.const(pos_embed[1:], "pos"))
    # 2. per patch over time, + time embedding, space-major / time-minor; one CLS per clip in front
    x = g.op("Add", g.transpose(x, (0, 2, 1, 3)), g.const(state["backbone.time_embed"][0], "time"))
    x = g.reshape(x, [-1, patches * frames, width])
    batch = g.slice(g.op("Shape", x), 0, 1, 0)
    cls_shape = g.op("Concat", batch, g.const([1, width], "cls_shape"), axis=0)
    cls = g.const((state["backbone.cls_token"][0, 0] + pos_embed[0])[None, None], "cls")
    x = g.op("Concat", g.op("Expand", cls, cls_shape), x, axis=1)
    # 3. blocks
    for i in range(depth):
        b = f"backbone.blocks.{i}."
        cls_in, tokens = g.slice(x, 0, 1, 1), g.slice(x, 1, 1 + patches * frames, 1)
        xt = g.layer_norm(g.reshape(tokens, [-1, frames, width]), state[b + "temporal_norm1.weight"],
                          state[b + "temporal_norm1.bias"])
        xt = g.attention(xt, state, b + "temporal_attn", frames, width, heads)
        xt = g.linear(g.reshape(xt, [-1, patches * frames, width]), state[b + "temporal_fc.weight"],
                      state[b + "temporal_fc.bias"])
        tokens = g.op("Add", tokens, xt)
        per_frame = g.transpose(g.reshape(tokens, [-1, patches, frames, width]), (0, 2, 1, 3))  # B, T, P, D
        frame_shape = g.op("Concat", batch, g.const([frames, 1, width], "frame_shape"), axis=0)
        cls_per_frame = g.op("Expand", g.op("Unsqueeze", cls_in, g.const([1], "axes")), frame_shape)
        xs = g.reshape(g.op("Concat", cls_per_frame, per_frame, axis=2), [-1, 1 + patches, width])
        xs = g.layer_norm(xs, state[b + "norm1.weight"], state[b + "norm1.bias"])
        xs = g.reshape(g.attention(xs, state, b + "attn", 1 + patches, width, heads), [-1, frames, 1 + patches, width])
        cls_out = g.op("ReduceMean", g.slice(xs, 0, 1, 2), axes=[1], keepdims=0)  # B, 1, D
        spatial = g.reshape(g.transpose(g.slice(xs, 1, 1 + patches, 2), (0, 2, 1, 3)), [-1, patches * frames, width])
        x = g.op("Add", g.op("Concat", cls_in, tokens, axis=1), g.op("Concat", cls_out, spatial, axis=1))
        h = g.layer_norm(x, state[b + "norm2.weight"], state[b + "norm2.bias"])
        h = g.gelu(g.linear(h, state[b + "mlp.fc1.weight"], state[b + "mlp.fc1.bias"]))
        x = g.op("Add", x, g.linear(h, state[b + "mlp.fc2.weight"], state[b + "mlp.fc2.bias"]))
    # 4. final norm, the CLS feature; 5. heads
    features = g.reshape(g.layer_norm(g.slice(x, 0, 1, 1), state["backbone.norm.weight"], state["backbone.norm.bias"]),
                         [-1, width])
    g.nodes.append(helper.make_node("Identity", [features], ["features"]))
    g.nodes.append(helper.make_node("Identity", [g.linear(features, state["head.fc.weight"], state["head.fc.bias"])],
                                    ["logits"]))
    event = g.linear(features, state["head.fc_event_times.weight"], state["head.fc_event_times.bias"])
    g.nodes.append(helper.make_node("Sigmoid", [event], ["event_times"]))

    graph = helper.make_graph(
        g.nodes, "timesformer",
        [helper.make_tensor_value_info("video", TensorProto.FLOAT, ["batch", 3, frames, image_size, image_size])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", size])
         for name, size in (("features", width), ("logits", classes), ("event_times", classes))],
        g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # what ONNX Runtime and OpenVINO of the cpu extra read
    onnx.checker.check_model(model)
    return model
