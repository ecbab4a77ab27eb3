"""On-device evaluation of a trained recipe: float32 / PTQ int8 / QAT int8 accuracy, ONNX export.

Used by ``recipes/dsmn_train.py`` (after training) and ``recipes/export.py``
(``--format=onnx``: float32; ``--format=onnx_int8``: the run's own int8 model as a QDQ graph,
checked against PyTorch's int8 model; the waveform-in artefacts: :mod:`soundcl.ondevice.waveform`).
The filterbank front end of the Brain runs in float32; the quantized /
exported part is encoder + scene classifier (see :mod:`soundcl.ondevice.quantize`).
"""
import json
import logging
import os

import torch

import speechbrain as sb
from speechbrain.dataio.dataloader import make_dataloader

from soundcl.ondevice import quantize
from soundcl.data.audio import make_dataset
from soundcl.base.contract import REQUIRED

logger = logging.getLogger(__name__)

#: What the int8 evaluation after training reads (recipes/dsmn_train.py).
HPARAMS = {
    "quantize": REQUIRED,  # True: evaluate the final model quantized to int8 too
    "quantization_backend": REQUIRED,  # x86 (fbgemm/onednn) or qnnpack (ARM)
    "calibration_batches": REQUIRED,  # training batches that calibrate the observers
    # Quantization-aware training: after the float training, qat_epochs more epochs with
    # fake quantization (at qat_lr), then the int8 model, reported beside float32 and PTQ.
    "qat": False,
    "qat_epochs": 0,
    "qat_lr": 0.0,
}


def check_hparams(hparams):
    if hparams["qat"] and not hparams["quantize"]:
        raise ValueError("qat=True needs quantize=True (QAT runs with the int8 evaluation after training)")
    if hparams["qat"] and (int(hparams["qat_epochs"]) < 1 or float(hparams["qat_lr"]) <= 0):
        raise ValueError(f"qat=True needs qat_epochs >= 1 and qat_lr > 0 (got {hparams['qat_epochs']}, "
                         f"{hparams['qat_lr']})")


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


def quantization_aware_training(brain, train_rows, audio, loader_kwargs, epochs, lr, backend=None,
                                teacher_logits=None, kd_weight=0.0, kd_temperature=1.0, seed=0):
    """Fine-tune the brain's float model with fake quantization; returns the converted int8 model.

    ``epochs`` epochs over ``train_rows`` (training crops, the Brain's augmentation;
    its front end frozen, in float32) with Adam at ``lr``, scene cross-entropy
    (the scene-group head is not part of the deployed model), plus the
    distillation term with ``teacher_logits``. The brain is left unchanged.
    """
    import torch.nn.functional as F

    from soundcl.ondevice.distill import kd_loss

    torch.manual_seed(seed)
    qat_model = quantize.prepare_qat(scene_model(brain), backend)
    optimizer = torch.optim.Adam(qat_model.parameters(), lr=lr)
    brain.modules.eval()  # front end only: normaliser statistics kept
    for epoch in range(epochs):
        loader = make_dataloader(make_dataset(train_rows, audio, train=True), **dict(loader_kwargs))
        qat_model.train()
        total, n = 0.0, 0
        for batch in loader:
            batch = batch.to(brain.device)
            wavs, lens = batch.sig
            with torch.no_grad():
                feats = brain.compute_feats(wavs, lens, sb.Stage.TRAIN)
            logits = qat_model(feats.cpu(), lens.cpu())
            loss = F.cross_entropy(logits, torch.as_tensor(batch.class_idx, dtype=torch.long))
            if teacher_logits is not None:
                teacher = torch.stack([teacher_logits[i] for i in batch.id])
                loss = (1.0 - kd_weight) * loss + kd_weight * kd_loss(logits, teacher, kd_temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, n = total + float(loss.detach()), n + 1
        logger.info("QAT epoch %d/%d: train loss %.4f", epoch + 1, epochs, total / max(n, 1))
    return quantize.convert_qat(qat_model)


def evaluate_int8(brain, train_rows, test_rows, audio, loader_kwargs, output_folder,
                  backend=None, calibration_batches=20, qat_model=None, teacher_accuracy=None):
    """Post-training int8 quantization of the brain's model; float32 vs int8 (PTQ, and QAT when
    ``qat_model`` is given) test accuracy, with the teacher's when given.

    Writes ``quantized.json`` and ``model_int8.pt`` / ``model_fp32.pt`` (state
    dicts, for the sizes on disk; ``model_int8_qat.pt`` for QAT) into
    ``output_folder``; returns the dict.
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
    if qat_model is not None:
        qat_pred = quantize.predict(qat_model, batches)
        result.update({
            "qat_int8_accuracy": float((qat_pred == targets).float().mean()),
            "qat_int8_fp32_agreement": float((qat_pred == fp32_pred).float().mean()),
            "qat_int8_size_bytes": quantize.saved_size_bytes(qat_model, os.path.join(output_folder,
                                                                                    "model_int8_qat.pt")),
        })
    if teacher_accuracy is not None:
        result["teacher_accuracy"] = teacher_accuracy
    with open(os.path.join(output_folder, "quantized.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    logger.info(
        "test accuracy: float32 %.1f %%, PTQ int8 %.1f %% (agreement %.1f %%)%s%s; int8 model %.1f kB on disk",
        100 * result["fp32_accuracy"], 100 * result["int8_accuracy"], 100 * result["int8_fp32_agreement"],
        f", QAT int8 {100 * result['qat_int8_accuracy']:.1f} %" if qat_model is not None else "",
        f", teacher {100 * teacher_accuracy:.1f} %" if teacher_accuracy is not None else "",
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


def run_int8_model(brain, output_folder, example_feats, backend=None, calibration=None):
    """The run's own PyTorch int8 model and where it comes from: ``(model, source)``.

    ``model_int8_qat.pt`` (a QAT run: the converted QAT model the recipe trained and scored) when it
    is in ``output_folder``, else ``model_int8.pt`` (the recipe's post-training int8 model), else a
    post-training quantization now on ``calibration`` (a list of (feats, lens), x86 default qconfig
    as the recipe's). The module structure is rebuilt from the brain's float model (fused, prepared,
    converted), then the saved int8 state (weights, scales, zero points) is loaded into it.
    """
    model = scene_model(brain)
    probe = [(example_feats[:1], None)]
    for name, source in (("model_int8_qat.pt", "qat"), ("model_int8.pt", "ptq")):
        path = os.path.join(output_folder, name)
        if os.path.isfile(path):
            if source == "qat":
                int8 = quantize.convert_qat(quantize.prepare_qat(model, backend).eval())
            else:
                int8 = quantize.post_training_quantize(model, probe, backend)
            int8.load_state_dict(torch.load(path, weights_only=False))
            return int8.eval(), f"{source} ({name})"
    if not calibration:
        raise FileNotFoundError(f"{output_folder} holds no model_int8_qat.pt / model_int8.pt and no calibration "
                                "clips were given to quantize the float model")
    return quantize.post_training_quantize(model, calibration, backend), "ptq (calibrated at export)"


def export_int8(brain, train_rows, test_rows, audio, loader_kwargs, output_folder, labels,
                backend=None, calibration_batches=20, min_agreement=0.99):
    """Write ``model_int8.onnx`` (QDQ; feats -> logits, front end excluded): the run's own int8 model.

    The int8 model (:func:`run_int8_model`: the QAT model of a QAT run, else the recipe's PTQ one)
    is exported as a QDQ graph with its own int8 weights, scales and zero points
    (:mod:`soundcl.ondevice.qdq`), not quantized afresh. Top-1 agreement of onnxruntime with the
    PyTorch int8 model over the test clips (each at its own length) is reported; below
    ``min_agreement`` a warning says so (``ok: false``). Complexity (params, MACs per clip, file
    sizes) goes with the check into ``export_int8_check.json``. Returns that dict.
    """
    from soundcl.ondevice import complexity, qdq

    model = scene_model(brain)
    test = feature_batches(brain, test_rows, audio, loader_kwargs)
    if not test:
        raise ValueError("export_int8 needs test clips (the check)")
    calibration = None
    if not any(os.path.isfile(os.path.join(output_folder, n)) for n in ("model_int8_qat.pt", "model_int8.pt")):
        calibration = [(f, l) for f, l, _ in feature_batches(brain, train_rows, audio, loader_kwargs,
                                                               calibration_batches)]
    torch_int8, source = run_int8_model(brain, output_folder, test[0][0], backend, calibration)
    twin = qdq.qdq_twin(torch_int8, (test[0][0][:1], None))
    fp32_path = quantize.export_onnx(model, os.path.join(output_folder, "model.onnx"), test[0][0])
    int8_path = quantize.export_onnx(twin, os.path.join(output_folder, "model_int8.onnx"), test[0][0])
    qdq.fold_weight_quantization(int8_path)
    clips = [feat[None, : max(1, int(round(float(rel) * feats.shape[1])))]
             for feats, lens, _ in test for feat, rel in zip(feats, lens)]
    longest = max(clips, key=lambda c: c.shape[1])
    targets = torch.cat([t for _, _, t in test])
    onnx_pred = quantize.onnx_predict(int8_path, clips)
    torch_pred = quantize.predict(torch_int8, [(c, None) for c in clips])
    twin_pred = quantize.predict(twin, [(c, None) for c in clips])
    fp32_pred = quantize.predict(model, [(c, None) for c in clips])
    macs, _ = complexity.count_macs(model, longest, None)
    agreement = float((onnx_pred == torch_pred).float().mean())
    result = {
        "onnx_int8": int8_path,
        "int8_model": source,
        "n_clips": len(clips),
        "onnx_int8_torch_int8_agreement": agreement,
        "qdq_twin_torch_int8_agreement": float((twin_pred == torch_pred).float().mean()),
        "min_agreement": min_agreement,
        "ok": agreement >= min_agreement,
        "onnx_int8_accuracy": float((onnx_pred == targets).float().mean()),
        "torch_int8_accuracy": float((torch_pred == targets).float().mean()),
        "fp32_accuracy": float((fp32_pred == targets).float().mean()),
        "params": complexity.count_params(model),
        "macs_per_clip": int(macs),
        "macs_clip_frames": int(longest.shape[1]),  # the longest test clip
        "onnx_int8_size_bytes": os.path.getsize(int8_path),
        "onnx_fp32_size_bytes": os.path.getsize(fp32_path),
        # Initializer bytes by type: the int8 weights, against the float32 ones of model.onnx
        # (on small models the graph itself, names and QDQ nodes, dominates the file size).
        "onnx_int8_initializer_bytes": quantize.onnx_weight_bytes(int8_path),
        "onnx_fp32_initializer_bytes": quantize.onnx_weight_bytes(fp32_path),
        "backend": torch.backends.quantized.engine,
        "front_end": "excluded: input is normalised filterbanks [batch, time, n_mels] (waveform_int8.onnx has it)",
    }
    with open(os.path.join(output_folder, "labels.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(labels) + "\n")
    with open(os.path.join(output_folder, "export_int8_check.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    if not result["ok"]:
        # Not fatal: the artefact is the run's int8 model; the two runtimes' int8 kernels round
        # differently (requantization, fbgemm's 16-bit accumulation of u8 x s8 pairs above 127).
        logger.warning("int8 ONNX top-1 agrees with PyTorch's int8 model on %.1f %% of %d test clips, below "
                       "%.0f %% (the QDQ twin in PyTorch: %.1f %%); see export_int8_check.json", 100 * agreement,
                       len(clips), 100 * min_agreement, 100 * result["qdq_twin_torch_int8_agreement"])
    logger.info("exported %s (%s, %.1f kB); top-1 agreement with PyTorch int8 %.1f %% on %d clips; %d params, "
                "%.2f M MACs", int8_path, source, result["onnx_int8_size_bytes"] / 1024, 100 * agreement, len(clips),
                result["params"], macs / 1e6)
    return result, torch_int8
