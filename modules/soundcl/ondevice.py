"""On-device evaluation of a trained recipe: int8 vs float32 accuracy, ONNX export.

Used by ``recipes/dsmn_train.py`` (after training) and ``recipes/export.py``.
The filterbank front end of the Brain runs in float32; the quantized /
exported part is encoder + scene classifier (see :mod:`soundcl.quantize`).
"""
import json
import logging
import os

import torch

import speechbrain as sb
from speechbrain.dataio.dataloader import make_dataloader

from soundcl import quantize
from soundcl.audio import make_dataset
from soundcl.contract import REQUIRED

logger = logging.getLogger(__name__)

#: What the int8 evaluation after training reads (recipes/dsmn_train.py).
HPARAMS = {
    "quantize": REQUIRED,  # True: evaluate the final model quantized to int8 too
    "quantization_backend": REQUIRED,  # x86 (fbgemm/onednn) or qnnpack (ARM)
    "calibration_batches": REQUIRED,  # training batches that calibrate the observers
}


@torch.no_grad()
def feature_batches(brain, rows, audio, loader_kwargs, max_batches=None):
    """[(feats [batch, time, n_mels] CPU, lens [batch] CPU, targets [batch])] of full clips, no augmentation."""
    brain.modules.eval()
    loader = make_dataloader(make_dataset(rows, audio, train=False), **dict(loader_kwargs))
    batches = []
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batch = batch.to(brain.device)
        wavs, lens = batch.sig
        feats = brain.compute_feats(wavs, lens, sb.Stage.TEST)
        batches.append((feats.cpu(), lens.cpu(), torch.as_tensor(batch.class_idx, dtype=torch.long)))
    return batches


def scene_model(brain):
    """Float32 encoder + scene classifier of the brain as one CPU module."""
    import copy

    return quantize.SceneClassifier(
        copy.deepcopy(brain.modules.embedding_model).cpu(), copy.deepcopy(brain.modules.classifier).cpu()
    ).eval()


def evaluate_int8(brain, train_rows, test_rows, audio, loader_kwargs, output_folder,
                  backend=None, calibration_batches=20):
    """Post-training int8 quantization of the brain's model; float32 vs int8 test accuracy.

    Writes ``quantized.json`` and ``model_int8.pt`` / ``model_fp32.pt`` (state
    dicts, for the sizes on disk) into ``output_folder``; returns the dict.
    """
    model = scene_model(brain)
    calibration = feature_batches(brain, train_rows, audio, loader_kwargs, calibration_batches)
    test = feature_batches(brain, test_rows, audio, loader_kwargs)
    int8_model = quantize.post_training_quantize(model, [(f, l) for f, l, _ in calibration], backend)
    targets = torch.cat([t for _, _, t in test])
    batches = [(f, l) for f, l, _ in test]
    fp32_pred, int8_pred = quantize.predict(model, batches), quantize.predict(int8_model, batches)
    result = {
        "backend": torch.backends.quantized.engine,
        "n_test_clips": int(targets.numel()),
        "fp32_accuracy": float((fp32_pred == targets).float().mean()),
        "int8_accuracy": float((int8_pred == targets).float().mean()),
        "int8_fp32_agreement": float((fp32_pred == int8_pred).float().mean()),
        "fp32_size_bytes": quantize.saved_size_bytes(model, os.path.join(output_folder, "model_fp32.pt")),
        "int8_size_bytes": quantize.saved_size_bytes(int8_model, os.path.join(output_folder, "model_int8.pt")),
        "front_end": "excluded (filterbank + normalisation run in float32)",
    }
    with open(os.path.join(output_folder, "quantized.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    logger.info(
        "float32 %.1f %% vs int8 %.1f %% test accuracy (agreement %.1f %%), int8 model %.1f kB on disk",
        100 * result["fp32_accuracy"], 100 * result["int8_accuracy"], 100 * result["int8_fp32_agreement"],
        result["int8_size_bytes"] / 1024,
    )
    return result


def export(brain, test_rows, audio, loader_kwargs, output_folder, labels, tolerance=1e-4):
    """Write ``model.onnx`` (feats -> logits, front end excluded) and ``labels.txt``;
    check onnxruntime against PyTorch on the test clips. Returns the check dict (``export_check.json``)."""
    model = scene_model(brain)
    test = feature_batches(brain, test_rows, audio, loader_kwargs)
    if not test:
        raise ValueError("export needs at least one test clip to check the ONNX model on")
    path = os.path.join(output_folder, "model.onnx")
    quantize.export_onnx(model, path, test[0][0])
    # Checked clip by clip at their own lengths (lens=None: the exported model sees whole clips).
    clips = [
        feat[None, : max(1, int(round(float(rel) * feats.shape[1])))]
        for feats, lens, _ in test for feat, rel in zip(feats, lens)
    ]
    max_error = quantize.onnx_max_error(path, model, clips)
    with open(os.path.join(output_folder, "labels.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(labels) + "\n")
    result = {"onnx": path, "max_abs_error": max_error, "tolerance": tolerance, "ok": max_error <= tolerance,
              "n_clips": sum(len(f) for f, _, _ in test), "front_end": "excluded: input is normalised filterbanks [batch, time, n_mels]"}
    with open(os.path.join(output_folder, "export_check.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    if not result["ok"]:
        raise RuntimeError(f"ONNX outputs differ from PyTorch's by {max_error:.3g} > {tolerance}")
    logger.info("exported %s; onnxruntime vs PyTorch max abs error %.2e on %d clips", path, max_error, result["n_clips"])
    return result
