"""A converted eager-mode int8 model (PTQ or QAT) as an ONNX QDQ graph with *its own* weights and scales.

The TorchScript ONNX exporter of torch 2.11 cannot export the converted model itself
(no quantized ``Slice`` / ``Reshape``: DSMN halves and shuffles quantized feature maps),
and quantizing the float model afresh with onnxruntime would throw the trained int8
model away (other scales; for a QAT run, other weights). So :func:`qdq_twin` builds a
float twin of the int8 model that runs the same Python forward with fake quantization
exactly where the int8 model quantizes, with the int8 model's weights (dequantized
exactly), scales and zero points; ``torch.onnx`` exports each ``fake_quantize_*`` as a
QuantizeLinear / DequantizeLinear pair, and :func:`fold_weight_quantization` then stores
weights as int8 and biases as int32 initializers (the QDQ layout onnxruntime fuses into
QLinearConv / QGemm kernels).

    int8 = quantize.convert_qat(qat_model)        # or quantize.post_training_quantize(...)
    twin = qdq_twin(int8, example_feats)          # float module, same predictions as int8
    torch.onnx.export(twin, ...); fold_weight_quantization(path)

Activations are quint8 over 0..255 as in PyTorch's int8 tensors (the x86 qconfig's
``reduce_range`` only narrows the range the *scales* were computed for).
"""
import copy

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.nn import quantized as nnq
from torch.ao.nn.intrinsic import quantized as nniq


def fake_quant(x, qparams):
    """x rounded to the quint8 grid ``(scale, zero_point)`` (0..255), in float: [any] -> same shape."""
    scale, zero_point = qparams
    return torch.fake_quantize_per_tensor_affine(x, float(scale), int(zero_point), 0, 255)


class FakeQuant(nn.Module):
    """Quantize + dequantize with fixed quint8 parameters (a QuantStub / an op's output)."""

    def __init__(self, qparams):
        super().__init__()
        self.qparams = (float(qparams[0]), int(qparams[1]))

    def forward(self, x):
        return fake_quant(x, self.qparams)


class QDQLayer(nn.Module):
    """Float twin of a quantized conv / linear (optionally fused with ReLU).

    forward: x (on the input grid) -> layer(x, dequant(int8 weight)) (+ ReLU) on the output grid.
    """

    def __init__(self, qmodule, in_qparams):
        super().__init__()
        qweight = qmodule.weight()
        if qweight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            self.register_buffer("w_scale", qweight.q_per_channel_scales().float())
            self.register_buffer("w_zero", qweight.q_per_channel_zero_points().int())
            self.axis = int(qweight.q_per_channel_axis())
        else:
            self.register_buffer("w_scale", torch.tensor([qweight.q_scale()], dtype=torch.float))
            self.register_buffer("w_zero", torch.tensor([qweight.q_zero_point()], dtype=torch.int))
            self.axis = 0
        if self.w_scale.numel() == 1:  # per-tensor as a one-channel per-channel: one export path
            self.w_scale = self.w_scale.expand(qweight.shape[0]).contiguous()
            self.w_zero = self.w_zero.expand(qweight.shape[0]).contiguous()
        self.weight = nn.Parameter(qweight.dequantize(), requires_grad=False)
        bias = qmodule.bias()
        self.bias = None if bias is None else nn.Parameter(bias.detach().float(), requires_grad=False)
        self.in_qparams = in_qparams
        self.out_qparams = (float(qmodule.scale), int(qmodule.zero_point))
        self.relu = isinstance(qmodule, (nniq.ConvReLU1d, nniq.ConvReLU2d, nniq.LinearReLU))
        if isinstance(qmodule, nnq.Linear):
            self.kind, self.conv_args = "linear", {}
        else:
            self.kind = "conv1d" if qweight.dim() == 3 else "conv2d"
            self.conv_args = {"stride": qmodule.stride, "padding": qmodule.padding,
                              "dilation": qmodule.dilation, "groups": qmodule.groups}
            if qmodule.padding_mode != "zeros":
                raise NotImplementedError(f"padding_mode={qmodule.padding_mode!r}: only zero padding is exported")

    def forward(self, x):
        x = fake_quant(x, self.in_qparams)
        w = torch.fake_quantize_per_channel_affine(self.weight, self.w_scale, self.w_zero, self.axis, -128, 127)
        if self.kind == "linear":
            y = F.linear(x, w, self.bias)
        else:
            y = (F.conv1d if self.kind == "conv1d" else F.conv2d)(x, w, self.bias, **self.conv_args)
        return fake_quant(F.relu(y) if self.relu else y, self.out_qparams)


class QDQBatchNorm(nn.Module):
    """Float twin of a quantized (unfused) BatchNorm: input grid -> float BN (eval) -> output grid."""

    def __init__(self, qmodule, in_qparams):
        super().__init__()
        self.norm = nn.BatchNorm2d(qmodule.num_features, eps=qmodule.eps)
        self.norm.load_state_dict({k: v for k, v in qmodule.state_dict().items() if k not in ("scale", "zero_point")})
        self.norm.eval()
        self.in_qparams, self.out_qparams = in_qparams, (float(qmodule.scale), int(qmodule.zero_point))

    def forward(self, x):
        return fake_quant(self.norm(fake_quant(x, self.in_qparams)), self.out_qparams)


class QDQFunctional(nn.Module):
    """Float twin of ``QFunctional`` (the converted ``FloatFunctional``): the op, then its output grid."""

    def __init__(self, qmodule):
        super().__init__()
        self.out_qparams = (float(qmodule.scale), int(qmodule.zero_point))

    def add(self, a, b):
        return fake_quant(a + b, self.out_qparams)

    def add_relu(self, a, b):
        return fake_quant(F.relu(a + b), self.out_qparams)

    def mul(self, a, b):
        return fake_quant(a * b, self.out_qparams)

    def cat(self, tensors, dim=0):
        return fake_quant(torch.cat(tensors, dim=dim), self.out_qparams)

    def add_scalar(self, a, b):
        return a + b  # PyTorch keeps the input grid, shifted: exact in float

    def mul_scalar(self, a, b):
        return a * b

    def forward(self, x):
        raise RuntimeError("QDQFunctional is called through its ops (add, mul, cat ...), as FloatFunctional")


class OutputGrid(nn.Module):
    """A float op (sigmoid, average pooling ...) followed by the grid its quantized output had."""

    def __init__(self, module, out_qparams):
        super().__init__()
        self.module, self.out_qparams = module, out_qparams

    def forward(self, *args):
        return fake_quant(self.module(*args), self.out_qparams)


_LAYERS = (nnq.Conv1d, nnq.Conv2d, nnq.Linear)  # fused ConvReLU / LinearReLU are subclasses
#: Ops whose quantized output keeps its input's values exactly: no rounding to mimic.
_EXACT = (nn.ReLU, nn.Identity, nn.Dropout, nn.Flatten)


def _is_leaf(module):
    """A leaf, or a quantized linear (whose packed weights are a child module)."""
    return isinstance(module, _LAYERS) or not any(True for _ in module.children())


def _qparams(t):
    if torch.is_tensor(t) and t.is_quantized and t.qscheme() == torch.per_tensor_affine:
        if t.dtype != torch.quint8:
            raise NotImplementedError(f"activation dtype {t.dtype}: only quint8 activations are exported")
        return float(t.q_scale()), int(t.q_zero_point())
    return None


@torch.no_grad()
def record_qparams(int8_model, example_args):
    """{module name: (input qparams or None, output qparams or None)} of the leaf modules of a
    converted int8 model, seen on one forward of ``example_args`` (activation grids are static)."""
    seen, hooks = {}, []
    for name, module in int8_model.named_modules():
        if _is_leaf(module):
            def hook(mod, args, out, name=name):
                seen[name] = (_qparams(args[0]) if args else None, _qparams(out))
            hooks.append(module.register_forward_hook(hook))
    try:
        int8_model.eval()(*example_args)
    finally:
        for h in hooks:
            h.remove()
    return seen


@torch.no_grad()
def qdq_twin(int8_model, example_args):
    """Float module computing what the converted int8 ``int8_model`` computes (its forward code,
    its int8 weights dequantized, fake quantization on its activation grids); ONNX-exportable.

    ``example_args``: a tuple of inputs of one forward (e.g. ``(feats [batch, time, n_mels], None)``),
    on which the activation grids are read. A leaf module that the forward never reached is refused.
    """
    seen = record_qparams(int8_model, example_args)
    twin = copy.deepcopy(int8_model).eval()
    replacements = {}
    for name, module in twin.named_modules():
        if isinstance(module, nnq.QFunctional):
            replacements[name] = QDQFunctional(module)
            continue
        if not name or not _is_leaf(module):
            continue
        if name not in seen:
            if type(module) in (nnq.Quantize, nnq.DeQuantize) or isinstance(module, _LAYERS):
                raise ValueError(f"module {name} ({type(module).__name__}) is not reached by the example forward: "
                                 "its activation grid is unknown")
            continue
        in_q, out_q = seen[name]
        if isinstance(module, _EXACT):
            continue
        if isinstance(module, nnq.Quantize):
            replacements[name] = FakeQuant((float(module.scale), int(module.zero_point)))
        elif isinstance(module, nnq.DeQuantize):
            # The grid of what it dequantizes: mimics the rounding of a preceding float-coded op (avg pooling).
            replacements[name] = FakeQuant(in_q) if in_q is not None else nn.Identity()
        elif isinstance(module, _LAYERS):
            replacements[name] = QDQLayer(module, in_q)
        elif isinstance(module, nnq.BatchNorm2d):
            replacements[name] = QDQBatchNorm(module, in_q)
        elif type(module).__module__.startswith("torch.ao.nn.quantized"):
            raise NotImplementedError(f"quantized module {name} ({type(module).__name__}) has no QDQ twin yet")
        elif out_q is not None:
            replacements[name] = OutputGrid(module, out_q)
    for name, new in replacements.items():
        parent_name, _, attr = name.rpartition(".")
        setattr(twin.get_submodule(parent_name) if parent_name else twin, attr, new)
    return twin.eval()


# ---------------------------------------------------------------- ONNX post-processing
def fold_weight_quantization(path):
    """Rewrite the QDQ ONNX model at ``path`` in place: QuantizeLinear of a constant weight becomes an
    int8 initializer (DequantizeLinear kept), and the float bias of a Conv / Gemm between dequantized
    input and weight becomes int32 (scale input_scale * weight_scale) behind a DequantizeLinear, the
    layout onnxruntime fuses into integer kernels. Returns the number of weights folded."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    graph = model.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # topological order: a Cast of a constant is known when reached
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Cast" and node.input[0] in consts:
            to = onnx.helper.tensor_dtype_to_np_dtype(node.attribute[0].i)
            consts[node.output[0]] = consts[node.input[0]].astype(to)
        elif node.op_type == "Identity" and node.input[0] in consts:  # the exporter's shared constants
            consts[node.output[0]] = consts[node.input[0]]
    producer = {out: node for node in graph.node for out in node.output}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def axis_of(node):
        return next((a.i for a in node.attribute if a.name == "axis"), 1)

    def expand(v, ndim, axis):
        v = np.asarray(v)
        return v.reshape([-1 if i == axis else 1 for i in range(ndim)]) if v.ndim == 1 and v.size > 1 else v

    new_inits, removed, before, folded = [], set(), {}, 0
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] not in consts:
            continue
        w, scale, zero = consts[node.input[0]], consts[node.input[1]], consts[node.input[2]]
        ax = axis_of(node) % w.ndim
        info = np.iinfo(zero.dtype)
        q = np.clip(np.rint(w / expand(scale, w.ndim, ax)) + expand(zero, w.ndim, ax), info.min, info.max)
        name = node.output[0]  # the DequantizeLinear reads it as before, now an initializer
        new_inits.append(numpy_helper.from_array(q.astype(zero.dtype), name))
        removed.add(id(node))
        folded += 1
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in consts:
            continue
        x_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
        if not (x_dq is not None and w_dq is not None and x_dq.op_type == w_dq.op_type == "DequantizeLinear"):
            continue
        if x_dq.input[1] not in consts or w_dq.input[1] not in consts or len(consumers[node.input[2]]) != 1:
            continue
        bias_scale = (consts[x_dq.input[1]] * consts[w_dq.input[1]]).astype(np.float32).reshape(-1)
        bias = consts[node.input[2]].reshape(-1)
        bias_scale = np.broadcast_to(bias_scale, bias.shape).copy()
        q_name, s_name, z_name, out = (f"{node.input[2]}_{s}" for s in ("int32", "scale", "zero", "dq"))
        new_inits += [numpy_helper.from_array(np.rint(bias / bias_scale).astype(np.int32), q_name),
                      numpy_helper.from_array(bias_scale, s_name),
                      numpy_helper.from_array(np.zeros_like(bias, dtype=np.int32), z_name)]
        before[id(node)] = onnx.helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [out], axis=0,
                                                 name=f"{node.name}_bias_dq")
        node.input[2] = out
    kept = [m for n in graph.node if id(n) not in removed for m in ([before[id(n)]] if id(n) in before else []) + [n]]
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for n in graph.node for name in n.input}
    kept_inits = [i for i in graph.initializer if i.name in used] + new_inits
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    onnx.save(model, path)
    onnx.checker.check_model(path)
    return folded
