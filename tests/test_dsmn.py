"""DSMN: size, shapes, padding invariance, grouped heads."""
import json

import pytest
import torch

from soundcl.ondevice.complexity import count_params
from soundcl.models.dsmn import DSMN, GROUP_NAMES, TAU22_SCENE_GROUPS
from soundcl.models.encoders import Classifier


def test_published_size_45k_parameters():
    encoder = DSMN(n_mels=128)
    total = count_params(encoder, Classifier(encoder.emb_dim, 10), Classifier(encoder.emb_dim, 3))
    assert abs(total - 45_100) <= 0.05 * 45_100, total


@pytest.mark.parametrize("n_mels", [40, 33, 128])
def test_embedding_shape_and_odd_sizes(n_mels):
    torch.manual_seed(0)
    encoder = DSMN(n_mels=n_mels).eval()
    emb = encoder(torch.randn(3, 37, n_mels), torch.tensor([1.0, 0.6, 0.3]))
    assert emb.shape == (3, 100) and torch.isfinite(emb).all()


def test_scene_groups_cover_the_tau22_scenes():
    assert len(TAU22_SCENE_GROUPS) == 10
    assert set(TAU22_SCENE_GROUPS.values()) == set(GROUP_NAMES)


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="n_pooled"):
        DSMN(channels=(8, 16), n_pooled=3)


def test_dsmn_recipe_and_export_on_a_tau22_miniature(tmp_path):
    """The published TAU 2022 recipe (sizes shrunk) trains, quantizes and exports on a miniature.

    Whether int8 predictions agree with float32 ones on a model that has learnt is
    tested in test_quantize.py (a few epochs here would not learn the miniature).
    """
    import csv
    import os
    import sys

    from conftest import REPO_ROOT
    from soundcl.testing.miniatures import make_tau22

    sys.path.insert(0, os.path.join(REPO_ROOT, "recipes"))
    import dsmn_train
    import export

    folder = make_tau22(str(tmp_path / "TAU22"), train_clips_per_class=4, test_clips_per_class=2, clip_seconds=1.0)
    results = dsmn_train.main([
        os.path.join(REPO_ROOT, "hparams", "tau22", "dsmn_train.yaml"), f"--data_folder={folder}",
        f"--output_base={tmp_path}", "--sample_rate=16000", "--n_mels=40", "--dsmn_channels=[8, 8, 8]", "--dsmn_pooled=2",
        "--number_of_epochs=1", "--batch_size=8", "--calibration_batches=2", "--noprogressbar",
        "--train_dataloader_opts={batch_size: 8, shuffle: True, num_workers: 0}",
        "--eval_dataloader_opts={batch_size: 8, num_workers: 0}",
        "--compute_features=!new:speechbrain.lobes.features.Fbank {n_mels: 40, sample_rate: 16000}",
    ])
    out = tmp_path / "dsmn_train" / "1986"
    with open(os.path.join(folder, "split_setup", "test.csv"), encoding="utf-8") as f:
        test_files = [row["filename"] for row in csv.DictReader(f, delimiter="\t")]
    quantized = results["quantized"]
    assert quantized["n_test_clips"] == len(test_files) == 20  # every test clip scored
    # The on-device float32 path (its own feature extraction and argmax) scores the test
    # set as the task loop did: same features, same model, same clips.
    assert quantized["fp32_accuracy"] == pytest.approx(results["accuracy_matrix"][0][0], abs=1e-6)
    # Really int8: the quantized state dict holds qint8 weights.
    int8_state = torch.load(out / "model_int8.pt", weights_only=False)
    assert any(torch.is_tensor(v) and v.dtype == torch.qint8 for v in int8_state.values())
    # Device-wise accuracy for exactly the devices of the test clips.
    devices = json.loads((out / "save" / "task0" / "device_accuracy.json").read_text())[0]
    assert set(devices) == {name.rsplit("-", 1)[-1][: -len(".wav")] for name in test_files}

    check = export.main([str(out)])
    assert check["ok"] and check["max_abs_error"] < 1e-4 and check["n_clips"] == 20
    labels = (out / "labels.txt").read_text().split()
    assert labels[0] == "airport" and len(labels) == 10
