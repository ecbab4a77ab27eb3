"""On-device work: model complexity, int8 quantization, export, knowledge distillation.

:mod:`~soundcl.ondevice.complexity` (parameters, memory, MACs; ``python -m
soundcl.complexity``), :mod:`~soundcl.ondevice.quantize` (post-training int8),
:mod:`~soundcl.ondevice.export` (float32 vs int8 comparison and ONNX
export of a trained recipe), :mod:`~soundcl.ondevice.qdq` (a converted int8 model as a QDQ
ONNX graph with its own weights and scales), :mod:`~soundcl.ondevice.waveform` (waveform in,
probabilities out: the front end in the graph) and :mod:`~soundcl.ondevice.distill` (teacher logits
for a small student). Imports the folders below :mod:`soundcl.methods` (base, models,
data, results, memory, core); methods may use it, not the reverse.
"""
