"""On-device work: model complexity, int8 quantization, export, knowledge distillation.

:mod:`~soundcl.ondevice.complexity` (parameters, memory, MACs; ``python -m
soundcl.complexity``), :mod:`~soundcl.ondevice.quantize` (post-training int8),
:mod:`~soundcl.ondevice.export` (float32 vs int8 comparison and ONNX / TorchScript
export of a trained recipe) and :mod:`~soundcl.ondevice.distill` (teacher logits
for a small student). Imports the folders below :mod:`soundcl.methods` (base, models,
data, results, memory, core); methods may use it, not the reverse.
"""
