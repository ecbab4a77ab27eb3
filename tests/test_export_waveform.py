"""Shipping a run: the int8 ONNX of a QAT run is its QAT model, and the waveform-to-probabilities
ONNX models (float32, int8) give the PyTorch path's outputs (recipes/export.py)."""
import json

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, run_recipe

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from soundcl.ondevice import waveform  # noqa: E402

#: Float32: largest |onnxruntime - ContinualClassifier.classify_batch| probability (measured ~1e-6).
FLOAT_TOLERANCE = 1e-4
#: int8: least top-1 agreement of onnxruntime's int8 with PyTorch's int8 model (measured 100 %,
#: 80 / 80 clips on the demo run; the runtimes' int8 kernels may round one clip differently).
INT8_FLOOR = 0.95


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory, synth_data_folder):
    """A tiny DSMN run of 4 classes with QAT (5 float epochs + 1 QAT epoch), on the shared synthetic data."""
    base = tmp_path_factory.mktemp("ship")
    run_recipe("dsmn_train", [
        f"{REPO_ROOT}/hparams/synth/dsmn_train.yaml", f"--output_base={base}", f"--data_folder={synth_data_folder}",
        f"--audio_cache={base}/audio_cache", "--clips_per_class_per_fold=8", "--task_classes=[[0,1,2,3]]",
        "--train_folds=[1,2,3,4]", "--test_folds=[10]", "--number_of_epochs=5", "--qat=True", "--qat_epochs=1",
        "--dsmn_channels=[8,16,16]", "--emb_dim=32", "--calibration_batches=2", "--noprogressbar",
    ])
    return str(base / "dsmn_train" / "1986")


def _export(run, *flags):
    import os
    import sys

    sys.path.insert(0, os.path.join(REPO_ROOT, "recipes"))
    import export

    return export.main([run, *flags])


def test_int8_onnx_is_the_qat_model_and_agrees(qat_run):
    from soundcl.inference import ContinualClassifier
    from soundcl.ondevice import quantize
    from soundcl.ondevice.export import run_int8_model

    result = _export(qat_run, "--format=onnx_int8")
    assert result["int8_model"] == "qat (model_int8_qat.pt)"
    assert result["onnx_int8_torch_int8_agreement"] >= INT8_FLOOR, result
    assert result["waveform"]["top1_agreement"] >= INT8_FLOOR and result["waveform"]["n_clips"] == 32
    # The artefact holds the QAT model's own int8 weights and scales, not a re-quantization.
    clf = ContinualClassifier.from_hparams(source=qat_run)
    int8, _ = run_int8_model(clf.brain, qat_run, torch.zeros(1, 50, 40))
    stem = int8.encoder.stem[0].weight()
    graph = onnx.load(f"{qat_run}/waveform_int8.onnx").graph
    ints = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    stem_q = [v for v in ints.values() if v.shape == tuple(stem.shape)]
    assert any(np.array_equal(v, stem.int_repr().numpy()) for v in stem_q)
    floats = [onnx.numpy_helper.to_array(i) for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    assert any(v.shape == (stem.shape[0],) and np.allclose(v, stem.q_per_channel_scales().numpy()) for v in floats)
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in int8.modules())
    # And the int8 graph runs integer kernels (QDQ fused by onnxruntime), on any batch and length.
    session = waveform.onnx_session(f"{qat_run}/waveform_int8.onnx")
    (probs,) = session.run(None, {waveform.INPUT: np.random.default_rng(0).standard_normal((3, 12345), np.float32)})
    assert probs.shape == (3, 4) and np.allclose(probs.sum(-1), 1, atol=1e-5)
    assert quantize.onnx_weight_bytes(f"{qat_run}/model_int8.onnx").get("int8", 0) > 0


def test_float32_waveform_onnx_equals_the_pytorch_path(qat_run):
    from soundcl.inference import ContinualClassifier

    result = _export(qat_run)
    check = result["waveform"]
    assert check["ok"] and check["max_abs_prob_diff"] <= FLOAT_TOLERANCE and check["top1_agreement"] == 1.0
    path = f"{qat_run}/waveform.onnx"
    meta = waveform.onnx_metadata(path)
    clf = ContinualClassifier.from_hparams(source=qat_run)
    assert json.loads(meta["classes"]) == clf.classes and int(meta["sample_rate"]) == 16000
    beside = json.loads(open(f"{qat_run}/waveform.json", encoding="utf-8").read())
    assert beside["front_end"]["n_mels"] == 40 and len(beside["front_end"]["normalization"]["mean"]) == 40
    # A batch of two clips of one length, not peak-normalised: the graph normalises as the pipeline.
    rng = torch.Generator().manual_seed(0)
    wavs = 0.3 * torch.randn(2, 16000, generator=rng)
    (probs,) = waveform.onnx_session(path).run(None, {waveform.INPUT: wavs.numpy()})
    expected = clf.classify_batch(wavs / wavs.abs().amax(dim=1, keepdim=True)).probs
    assert np.abs(probs - expected.numpy()).max() <= FLOAT_TOLERANCE


def test_conv_fbank_equals_speechbrain_fbank():
    from speechbrain.lobes.features import Fbank

    fbank = Fbank(sample_rate=16000, n_mels=40)
    wavs = torch.randn(3, 8000, generator=torch.Generator().manual_seed(1)) * torch.tensor([[1.0], [0.01], [1e-4]])
    expected = fbank(wavs)
    got = waveform.ConvFbank(fbank)(wavs)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 2e-3  # dB; the DFT as a float32 convolution vs torch.stft


def test_unknown_front_end_is_refused():
    with pytest.raises(NotImplementedError, match="Identity"):
        waveform.export_front_end(torch.nn.Identity(), torch.nn.Identity())
