"""DSMN: size, shapes, padding invariance, grouped heads."""
import pytest
import torch

from soundcl.complexity import count_params
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
    """The published TAU 2022 recipe (sizes shrunk) trains, quantizes and exports on a miniature."""
    import json
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
    quantized = json.loads((out / "quantized.json").read_text())
    assert quantized == results["quantized"]
    assert 0.0 <= quantized["int8_accuracy"] <= 1.0 and quantized["n_test_clips"] > 0
    devices = json.loads((out / "save" / "task0" / "device_accuracy.json").read_text())[0]
    assert devices and set(devices) <= {"a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"}

    check = export.main([str(out)])
    assert check["ok"] and check["max_abs_error"] < 1e-4
    labels = (out / "labels.txt").read_text().split()
    assert labels[0] == "airport" and len(labels) == 10
