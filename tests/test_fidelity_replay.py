"""The replay recipe reproduces ASC-CL (github.com/swagshaw/ASC-CL) by default:
noisytune's location and scale, the shift schedule, the model's size, the task orders,
the default hyperparameters, ASC-CL's BWT and its best-test-epoch number
(docs/fidelity.md)."""
import csv
import os
import random

import numpy as np
import pytest
import ruamel.yaml
import torch
import torch.nn as nn

from soundcl.memory.perturbations import (
    FeatureMapNoise,
    PitchShift,
    TimeShift,
    make_perturbation,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPLAY_DATASETS = ("tau19", "esc50", "us8k", "vgg", "cochl", "tau22")


def _raw_yaml(dataset):
    with open(os.path.join(REPO_ROOT, "hparams", dataset, "replay_train.yaml"), encoding="utf-8") as fin:
        return ruamel.yaml.YAML(typ="rt").load(fin)


# ----------------------------------------------------------------- noisytune
def test_noisytune_noise_is_uniform_scaled_by_the_std_of_the_whole_batch_map():
    fmap = torch.randn(4, 6, 5, 3, generator=torch.Generator().manual_seed(0))
    fmap[0] *= 10  # one loud clip raises the std of the whole batch, hence everyone's noise
    std = fmap.std()
    noise = FeatureMapNoise(0.2)(fmap, torch.Generator().manual_seed(1)) - fmap
    bound = 0.1 * std  # U(-1/2, 1/2) * 0.2 * std
    assert noise.abs().max() <= bound * (1 + 1e-5)
    assert noise.abs().max() > 0.95 * bound
    # Uniform noise: std = bound * 2 / sqrt(12); the quiet clips get the batch's scale.
    assert float(noise[1:].std()) == pytest.approx(float(bound) * 2 / 12 ** 0.5, rel=0.1)


class _MapEncoder(nn.Module):
    """An encoder with a feature map; counts the calls of each part."""

    def __init__(self):
        super().__init__()
        self.calls = {"feature_map": 0, "pool": 0, "forward": 0}
        self.proj = nn.Linear(4, 4)

    def feature_map(self, feats, lens=None):
        self.calls["feature_map"] += 1
        return self.proj(feats).transpose(1, 2).unsqueeze(-1)  # [B, C=4, T, 1]

    def pool(self, fmap, lens=None):
        self.calls["pool"] += 1
        return fmap.mean(dim=(2, 3))

    def forward(self, feats, lens=None):
        self.calls["forward"] += 1
        return self.pool(self.feature_map(feats, lens), lens)


def test_noisytune_perturbs_the_map_before_pooling_with_k_independent_draws():
    """Location: the encoder's map is computed once per batch, then k times noise + pooling + head.
    Independence: the j-th draw is clean map + one noise (ASC-CL's in-place += would make
    the j-th draw carry j noises)."""
    import speechbrain as sb

    from soundcl.memory.scores import perturbed_predictions
    from soundcl.core.task_loop import MemoryContext

    class Brain:
        device = torch.device("cpu")
        modules = nn.ModuleDict({"embedding_model": _MapEncoder(), "classifier": nn.Linear(4, 3)})

        def compute_feats(self, wavs, lens, stage):
            return wavs.reshape(wavs.shape[0], -1, 4)

    def make_dataset(rows, train):
        data = {r["ID"]: {"sig": torch.randn(32, generator=torch.Generator().manual_seed(i)), "class_idx": 0}
                for i, r in enumerate(rows)}
        dataset = sb.dataio.dataset.DynamicItemDataset(data)
        sb.dataio.dataset.set_output_keys([dataset], ["id", "sig", "class_idx"])
        return dataset

    rows = [{"ID": f"c{i}", "class_idx": 0} for i in range(10)]
    brain = Brain()
    context = MemoryContext(1, brain, {r["ID"]: r for r in rows}, [0, 1, 2], make_dataset, {"batch_size": 5},
                            np.random.RandomState(0))
    seen = []
    noise = FeatureMapNoise(0.2)
    original_call = FeatureMapNoise.__call__

    def spy(self, fmap, generator, lens=None):
        out = original_call(self, fmap, generator, lens)
        seen.append((fmap.clone(), out - fmap))
        return out

    FeatureMapNoise.__call__ = spy
    try:
        predictions = perturbed_predictions([r["ID"] for r in rows], context, make_perturbation("noisytune", 0.2), 6,
                                            torch.Generator().manual_seed(0))
    finally:
        FeatureMapNoise.__call__ = original_call
    assert predictions.shape == (10, 6)
    calls = brain.modules.embedding_model.calls
    assert calls == {"feature_map": 2, "pool": 12, "forward": 0}  # 2 batches, k = 6
    first_batch = seen[:6]
    assert all(torch.equal(fmap, first_batch[0][0]) for fmap, _ in first_batch)  # every draw from the clean map
    bound = 0.1 * first_batch[0][0].std()
    assert all(n.abs().max() <= bound * (1 + 1e-5) for _, n in first_batch)  # no accumulation
    assert isinstance(noise, FeatureMapNoise)


# ----------------------------------------------------------------- shift / noise
def test_shift_alternates_pitch_and_time_shifts_and_needs_an_even_k():
    schedule = make_perturbation("shift", sample_rate=48000)
    draws = schedule.schedule(6, torch.Generator())
    assert [type(d) for d in draws] == [PitchShift, TimeShift] * 3
    with pytest.raises(ValueError, match="metric_k=3"):
        schedule.schedule(3, torch.Generator())
    assert make_perturbation("noise").schedule(1, torch.Generator())[0].min_snr_db == 3.0


def test_pitch_shift_keeps_duration_and_moves_the_pitch():
    sr = 16000
    tone = torch.sin(2 * torch.pi * 1000 * torch.arange(sr) / sr)
    shifter = PitchShift(sr)
    for ratio in shifter.ratios:
        out = shifter.shift(tone, ratio)
        assert out.shape == tone.shape
        assert int(torch.fft.rfft(out).abs().argmax()) == round(1000 * float(ratio))
    # A batch: clips drawn the same ratio are shifted together; padding stays silent.
    batch = tone.repeat(5, 1)
    out = shifter(batch, torch.Generator().manual_seed(0), torch.tensor([1.0, 1.0, 1.0, 0.5, 1.0]))
    assert out.shape == batch.shape and out[3, sr // 2:].abs().max() == 0
    peaks = {int(torch.fft.rfft(row).abs().argmax()) for row in out}
    assert peaks == {round(1000 * float(r)) for r in shifter.ratios}


# ----------------------------------------------------------------- model
def test_asccl_bcresnet_has_the_published_size():
    from soundcl.models.ascl_bcresnet import ASCCLBCResNet
    from soundcl.models.encoders import Classifier
    from soundcl.models.frontend import MelBatchNorm

    encoder = ASCCLBCResNet(n_mels=64, channels=40)
    parts = (encoder, Classifier(encoder.emb_dim, 10), MelBatchNorm(64))
    n_params = sum(p.numel() for part in parts for p in part.parameters())
    assert encoder.emb_dim == 100
    assert abs(n_params - 85_800) / 85_800 < 0.02, n_params
    out = encoder(torch.randn(2, 101, 64))
    assert out.shape == (2, 100)


def test_replay_encoder_options():
    from soundcl.models.ascl_bcresnet import replay_encoder

    assert replay_encoder("ascl_bcresnet", n_mels=32, ascl_channels=8).emb_dim == 20
    assert replay_encoder("bcresnet", n_mels=32, bcresnet_c=1).emb_dim == 32
    with pytest.raises(ValueError, match="replay_encoder='kim'"):
        replay_encoder("kim")


# ----------------------------------------------------------------- defaults and task orders
@pytest.mark.parametrize("dataset", REPLAY_DATASETS)
def test_replay_yaml_defaults_are_asccl(dataset):
    raw = _raw_yaml(dataset)
    expected = {"seed": 3, "number_of_epochs": 30, "lr": 0.001, "weight_decay": 0.0, "augmentation": None,
                "memory_size": 500, "mem_manage": "prototype", "uncert_metric": "noisytune", "metric_k": 6,
                "noise_lambda": 0.2, "uncertainty_from_task": 1, "batch_size": 32, "replay_encoder": "ascl_bcresnet",
                "ascl_channels": 40, "report_best_test_epoch": True, "patience": 7, "mel_bn_momentum": 0.1,
                "eval_batch_size": 128, "normalize": False, "pad_short_crops": "dataset"}
    assert {key: raw[key] for key in expected} == expected
    assert str(raw["lr_final"]) == "<lr>"  # no LR schedule
    assert "torch.optim.Adam" in raw["opt_class"].tag.value


def test_task_orders_are_asccl():
    assert _raw_yaml("tau19")["task_classes"] == [[1, 3], [2, 0], [4, 8], [5, 6], [9, 7]]
    # ASC-CL's TAU list shuffled with random.seed(3), as indices of the sorted scene labels.
    scenes = ["airport", "bus", "shopping_mall", "street_pedestrian", "street_traffic", "metro_station", "metro",
              "public_square", "tram", "park"]
    random.seed(3)
    random.shuffle(scenes)
    order = [sorted(scenes).index(s) for s in scenes]
    assert [order[i:i + 2] for i in range(0, 10, 2)] == [[1, 3], [2, 0], [4, 8], [5, 6], [9, 7]]


def test_esc50_order_is_the_sorted_categories_shuffled_with_seed_3(shared_data_dir):
    with open(os.path.join(shared_data_dir, "ESC-50-master", "meta", "esc50.csv"), newline="", encoding="utf-8") as f:
        target = {row["category"]: int(row["target"]) for row in csv.DictReader(f)}
    categories = sorted(target)
    random.seed(3)
    random.shuffle(categories)
    order = [target[c] for c in categories]
    assert _raw_yaml("esc50")["task_classes"] == [order[i:i + 10] for i in range(0, 50, 10)]


# ----------------------------------------------------------------- metrics
def test_asccl_bwt_is_the_mean_of_the_average_slopes():
    from soundcl.results.metrics import backward_transfer_ascl, cl_summary

    acc = [0.9, 0.7, 0.6, 0.5]
    # ASC-CL: at each t, mean of the successive differences A_{i+1} - A_i (i < t), then the mean over t.
    steps = [np.mean([acc[i + 1] - acc[i] for i in range(t)]) for t in range(1, 4)]
    assert backward_transfer_ascl(acc) == pytest.approx(np.mean(steps))
    assert backward_transfer_ascl(acc) == pytest.approx(np.mean([(-0.2) / 1, (-0.3) / 2, (-0.4) / 3]))
    assert np.isnan(backward_transfer_ascl([0.9]))
    matrix = [[0.9, np.nan], [0.5, 0.9]]
    summary = cl_summary(matrix)
    assert summary["BWT_ascl"] == pytest.approx(0.7 - 0.9) and summary["BWT"] == pytest.approx(0.5 - 0.9)


def test_best_test_epoch_follows_asccl_patience():
    from soundcl.methods.supervised.replay import EpochTestAccuracy

    record = EpochTestAccuracy()
    accs = [0.5, 0.6, 0.6, 0.55, 0.58, 0.59, 0.6, 0.6, 0.6, 0.9]  # 7 epochs without a strict gain after epoch 2
    for epoch, acc in enumerate(accs, start=1):
        record.record(epoch, acc)
    best = record.best(patience=7)
    assert best["acc"] == 0.6 and best["epoch"] == 2 and best["acc_per_epoch"] == accs
    assert record.best(patience=10)["acc"] == 0.9


def test_test_accuracy_record_survives_a_checkpoint(tmp_path):
    from soundcl.methods.supervised.replay import EpochTestAccuracy

    record = EpochTestAccuracy()
    record.record(1, 0.25)
    record.record(2, 0.5)
    record._save(tmp_path / "record.json")
    restored = EpochTestAccuracy()
    restored._load(tmp_path / "record.json")
    restored.record(3, 0.75)  # a resumed task goes on from its earlier epochs
    assert restored.best()["acc_per_epoch"] == [0.25, 0.5, 0.75]
