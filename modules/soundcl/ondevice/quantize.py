"""int8 quantization (post-training static and quantization-aware) and ONNX export.

Everything here works on the *classifier part* of a recipe: normalised
filterbanks [batch, time, n_mels] in, scene logits [batch, n_classes] out. The
filterbank front end (``compute_features`` + ``mean_var_norm``) stays in
float32 and is excluded from the quantized and exported models, as in the
DCASE complexity rules.

Eager-mode ``torch.ao.quantization``: the encoder must provide
``fuse_model(qat=False)`` and use ``FloatFunctional`` for tensor arithmetic
(:class:`soundcl.models.dsmn.DSMN` does).

    model = SceneClassifier(embedding_model, classifier)
    int8 = post_training_quantize(model, calibration_feats, backend="x86")
    export_onnx(model, "model.onnx", example_feats); max_err = onnx_max_error("model.onnx", model, feats)
    # int8 ONNX of a converted model (its own weights and scales): soundcl.ondevice.qdq
"""
import copy
import io
import logging
import os

import torch
import torch.nn as nn
from torch.ao import quantization as tq

logger = logging.getLogger(__name__)


def default_backend():
    """``x86`` where available (fbgemm/onednn kernels), else ``qnnpack`` (ARM)."""
    engines = torch.backends.quantized.supported_engines
    return "x86" if "x86" in engines else "qnnpack"


class SceneClassifier(nn.Module):
    """encoder + linear head as one module: feats [batch, time, n_mels], lens [batch] -> logits [batch, n_classes].

    The head gets its own quant/dequant stubs; the encoder quantizes its input itself.
    """

    def __init__(self, encoder, classifier):
        super().__init__()
        self.encoder = encoder
        self.quant_head = tq.QuantStub()
        self.classifier = classifier
        self.dequant_head = tq.DeQuantStub()

    def forward(self, feats, lens=None):
        emb = self.encoder(feats, lens)
        return self.dequant_head(self.classifier(self.quant_head(emb)))

    def fuse_model(self, qat=False):
        if not hasattr(self.encoder, "fuse_model"):
            raise TypeError(f"{type(self.encoder).__name__} has no fuse_model(): it is not prepared for eager-mode quantization")
        self.encoder.fuse_model(qat=qat)
        return self


def _set_backend(backend):
    backend = backend or default_backend()
    if backend not in torch.backends.quantized.supported_engines:
        raise ValueError(f"quantization backend {backend!r} not available here: {torch.backends.quantized.supported_engines}")
    torch.backends.quantized.engine = backend
    return backend


def post_training_quantize(model, calibration_batches, backend=None, qconfig=None):
    """Static int8 quantization of a copy of ``model`` (left unchanged).

    Arguments
    ---------
    model : SceneClassifier (or any module with ``fuse_model``), float32
    calibration_batches : iterable of (feats [batch, time, n_mels], lens [batch])
        Training clips whose activations calibrate the observers.
    backend : ``x86``, ``fbgemm``, ``qnnpack`` or None (:func:`default_backend`)
    qconfig : None (the backend's default) or a ``torch.ao.quantization.QConfig``

    Returns
    -------
    The converted int8 model (CPU, eval mode).
    """
    backend = _set_backend(backend)
    qmodel = copy.deepcopy(model).cpu().eval()
    qmodel.fuse_model(qat=False)
    qmodel.qconfig = tq.get_default_qconfig(backend) if qconfig is None else qconfig
    tq.prepare(qmodel, inplace=True)
    n_batches = 0
    with torch.no_grad():
        for feats, lens in calibration_batches:
            qmodel(feats.cpu(), None if lens is None else lens.cpu())
            n_batches += 1
    if n_batches == 0:
        raise ValueError("post_training_quantize needs at least one calibration batch")
    return tq.convert(qmodel, inplace=True)


def prepare_qat(model, backend=None):
    """Copy of ``model`` with fake-quantization for quantization-aware training (train mode, CPU).

    Train it like the float model, then :func:`convert_qat`.
    """
    backend = _set_backend(backend)
    qat_model = copy.deepcopy(model).cpu().train()
    qat_model.fuse_model(qat=True)
    qat_model.qconfig = tq.get_default_qat_qconfig(backend)
    return tq.prepare_qat(qat_model, inplace=True)


def convert_qat(qat_model):
    """int8 model from a QAT-trained model (eval mode, CPU)."""
    return tq.convert(copy.deepcopy(qat_model).cpu().eval(), inplace=True)


def saved_size_bytes(model, path=None):
    """Size of ``model``'s state dict as saved by torch.save (to ``path`` if given, else in memory)."""
    if path is not None:
        torch.save(model.state_dict(), path)
        return os.path.getsize(path)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


@torch.no_grad()
def predict(model, batches):
    """Concatenated argmax predictions [n] of ``model`` over (feats, lens) batches (CPU)."""
    model.eval()
    return torch.cat([model(feats.cpu(), None if lens is None else lens.cpu()).argmax(-1) for feats, lens in batches])


def export_onnx(model, path, example_feats, opset_version=17):
    """Write ``model`` (float32, feats [batch, time, n_mels] -> logits) to ONNX at ``path``.

    Batch and time axes are dynamic; the model runs with ``lens=None`` (full
    clips, as in deployment on fixed-length 1 s scenes).
    """
    model = copy.deepcopy(model).cpu().eval()

    class _FeatsOnly(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, feats):
            return self.inner(feats, None)

    torch.onnx.export(
        _FeatsOnly(model),
        (example_feats.cpu(),),
        path,
        input_names=["feats"],
        output_names=["logits"],
        dynamic_axes={"feats": {0: "batch", 1: "time"}, "logits": {0: "batch"}},
        opset_version=opset_version,
        dynamo=False,
    )
    return path


def onnx_max_error(path, model, feats):
    """Max absolute difference between onnxruntime's and PyTorch's logits.

    ``feats``: a tensor [batch, time, n_mels] or a list of them (clips of different lengths).
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    model = copy.deepcopy(model).cpu().eval()
    error = 0.0
    for x in [feats] if torch.is_tensor(feats) else feats:
        (onnx_logits,) = session.run(["logits"], {"feats": x.cpu().numpy()})
        with torch.no_grad():
            torch_logits = model(x.cpu(), None).numpy()
        error = max(error, float(abs(onnx_logits - torch_logits).max()))
    return error


def onnx_predict(path, feats):
    """argmax predictions [n] of the ONNX model at ``path`` over a list of feats [batch, time, n_mels]."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the recipe's cpu_threads, not every core
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return torch.cat([torch.as_tensor(session.run(["logits"], {"feats": x.cpu().numpy()})[0]).argmax(-1)
                      for x in feats])


def onnx_weight_bytes(path):
    """{element type name: bytes} of the initializers (weights, scales, zero points) of an ONNX model."""
    import onnx
    from onnx import numpy_helper

    sizes = {}
    for init in onnx.load(path).graph.initializer:
        array = numpy_helper.to_array(init)
        name = onnx.TensorProto.DataType.Name(init.data_type).lower()
        sizes[name] = sizes.get(name, 0) + int(array.nbytes)
    return sizes
