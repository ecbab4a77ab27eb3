"""int8 quantization (PTQ and QAT) and ONNX export of a tiny trained DSMN."""
import pytest
import torch

from soundcl.ondevice import quantize
from soundcl.models.dsmn import DSMN
from soundcl.models.encoders import Classifier

N_MELS, N_FRAMES, N_CLASSES = 24, 40, 4


def _batch(n, generator):
    """Class c = energy in mel band c (plus noise): learnable in a few steps."""
    targets = torch.randint(0, N_CLASSES, (n,), generator=generator)
    feats = 0.5 * torch.randn(n, N_FRAMES, N_MELS, generator=generator)
    for i, c in enumerate(targets.tolist()):
        feats[i, :, 6 * c: 6 * c + 6] += 2.0
    return feats, torch.ones(n), targets


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = quantize.SceneClassifier(DSMN(N_MELS, channels=(8, 16, 16), n_pooled=2, emb_dim=32), Classifier(32, N_CLASSES))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(60):
        feats, lens, targets = _batch(32, generator)
        loss = torch.nn.functional.cross_entropy(model(feats, lens), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    test = [_batch(32, generator) for _ in range(3)]
    calibration = [_batch(32, generator)[:2] for _ in range(3)]
    return model, calibration, test


def _accuracy(model, test):
    predicted = quantize.predict(model, [(f, l) for f, l, _ in test])
    return float((predicted == torch.cat([t for _, _, t in test])).float().mean()), predicted


def test_post_training_int8_agrees_with_float32(trained):
    model, calibration, test = trained
    int8 = quantize.post_training_quantize(model, calibration)
    fp32_acc, fp32_pred = _accuracy(model, test)
    int8_acc, int8_pred = _accuracy(int8, test)
    assert fp32_acc >= 0.9, fp32_acc  # the model did learn
    assert (fp32_pred == int8_pred).float().mean() >= 0.9
    assert int8_acc >= fp32_acc - 0.1
    # Really quantized: int8 conv weights, not float ones.
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in int8.modules())
    # The float model is left untouched.
    assert not any(type(m).__module__.startswith("torch.ao.nn.quantized.modules.conv") for m in model.modules())


def test_int8_weights_take_less_space_on_a_45k_model(tmp_path):
    model = quantize.SceneClassifier(DSMN(128), Classifier(100, 10)).eval()
    int8 = quantize.post_training_quantize(model, [(torch.randn(2, 101, 128), torch.ones(2))])
    fp32_size = quantize.saved_size_bytes(model, tmp_path / "fp32.pt")
    int8_size = quantize.saved_size_bytes(int8, tmp_path / "int8.pt")
    # Per-module quantization parameters and pickling overhead dominate at this size.
    assert int8_size < fp32_size, (int8_size, fp32_size)


def test_quantization_aware_training_converts(trained):
    model, _, test = trained
    generator = torch.Generator().manual_seed(1)
    qat = quantize.prepare_qat(model)
    optimizer = torch.optim.Adam(qat.parameters(), lr=0.001)
    for _ in range(5):
        feats, lens, targets = _batch(32, generator)
        loss = torch.nn.functional.cross_entropy(qat(feats, lens), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    int8 = quantize.convert_qat(qat)
    acc, _ = _accuracy(int8, test)
    assert acc >= 0.8, acc


def test_onnx_round_trip_within_tolerance(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    model, _, test = trained
    path = str(tmp_path / "model.onnx")
    quantize.export_onnx(model, path, test[0][0])
    # Other batch size and clip length than the example: dynamic axes.
    error = quantize.onnx_max_error(path, model, [test[1][0][:5], test[2][0][:3, :32]])
    assert error < 1e-4, error


def test_encoder_without_fuse_model_is_refused():
    from soundcl.models.encoders import CNNEncoder

    model = quantize.SceneClassifier(CNNEncoder(24, (8,), 16), Classifier(16, 2))
    with pytest.raises(TypeError, match="fuse_model"):
        quantize.post_training_quantize(model, [(torch.randn(2, 10, 24), None)])
