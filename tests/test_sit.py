"""SIT: parameter groups, head re-initialisation, backbone kept, backbone checkpoint, end to end."""
import os

import pytest
import torch

from conftest import REPO_ROOT
from soundcl.methods.scene.brains import SITBrain, device_of, load_backbone_checkpoint


class _Hparams(dict):
    __getattr__ = dict.__getitem__


def _brain(**overrides):
    from soundcl.models.dsmn import DSMN
    from soundcl.models.encoders import Classifier

    torch.manual_seed(0)
    hparams = dict(n_classes=5, stage_n_classes=[3, 2], lr=0.01, backbone_lr=0.001, head_lr=0.02,
                   slow_learner_from_stage=1, backbone_checkpoint=None, seed=0, scene_groups=None, mix_rate=1.0)
    hparams.update(overrides)
    modules = {"embedding_model": DSMN(16, channels=(4, 8), n_pooled=1, emb_dim=8), "classifier": Classifier(8, 5)}
    return SITBrain(modules=modules, opt_class=lambda groups: torch.optim.SGD(groups, lr=hparams["lr"]),
                    hparams=hparams, run_opts={"device": "cpu"}, checkpointer=None)


def _lrs(brain):
    return {g["name"]: g["lr"] for g in brain.optimizer.param_groups}


def test_stage_change_reinitialises_the_head_keeps_the_backbone_and_splits_learning_rates():
    brain = _brain()
    brain.begin_task(0, [0, 1, 2])
    brain.init_optimizers()
    assert _lrs(brain) == {"backbone": 0.01, "head": 0.01}
    assert brain.seen_classes == [0, 1, 2]
    # Pretend stage 0 trained: change every weight.
    with torch.no_grad():
        for p in brain.modules.parameters():
            p.add_(0.5)
    backbone = {k: v.clone() for k, v in brain.modules.embedding_model.state_dict().items()}
    head = {k: v.clone() for k, v in brain.modules.classifier.state_dict().items()}

    brain.begin_task(1, [0, 1, 2, 3, 4])
    brain.init_optimizers()
    for k, v in brain.modules.embedding_model.state_dict().items():
        assert torch.equal(v, backbone[k]), k
    for k, v in brain.modules.classifier.state_dict().items():
        assert not torch.equal(v, head[k]), k
    assert brain.seen_classes == [3, 4]  # stage 1 predicts among its own label set
    assert _lrs(brain) == {"backbone": 0.001, "head": 0.02}
    n_backbone = sum(p.numel() for p in brain.optimizer.param_groups[0]["params"])
    assert n_backbone == sum(p.numel() for p in brain.modules.embedding_model.parameters())
    # Annealing keeps the ratio between the groups.
    brain.set_learning_rate(0.005)
    assert _lrs(brain) == pytest.approx({"backbone": 0.0005, "head": 0.01})


def test_seq_ft_baseline_is_one_learning_rate():
    brain = _brain(backbone_lr=0.02)
    brain.begin_task(1, [3, 4])
    brain.init_optimizers()
    assert _lrs(brain) == {"backbone": 0.02, "head": 0.02}


def test_backbone_checkpoint_is_loaded_and_missing_files_fail(tmp_path):
    source = _brain().modules.embedding_model
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    path = tmp_path / "backbone.pt"
    torch.save({"model": {"module." + k: v for k, v in source.state_dict().items()}}, path)
    brain = _brain(backbone_checkpoint=str(path))
    for k, v in source.state_dict().items():
        assert torch.equal(brain.modules.embedding_model.state_dict()[k], v), k
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_backbone_checkpoint(source, str(tmp_path / "absent.pt"))
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="does not match"):
        load_backbone_checkpoint(source, str(tmp_path / "wrong.pt"))


def test_device_parsing():
    assert device_of("airport-lisbon-1000-40000-0-s3") == "s3"
    assert device_of("audio/bus-milan-1-2-3-a.wav") == "a"
    assert device_of("Bus_user0001_14000_000") is None


def _relative_change(before, after):
    """||after - before|| / ||before|| over the trained tensors of two state dicts (BN running statistics left out)."""
    keys = [k for k, v in before.items() if v.is_floating_point() and "running_" not in k]
    diff = sum(float((after[k] - before[k]).pow(2).sum()) for k in keys)
    return (diff / sum(float(before[k].pow(2).sum()) for k in keys)) ** 0.5


def test_sit_recipe_carries_the_backbone_over_and_reinitialises_the_head(tmp_path):
    """CochlScene -> TAU 2022 miniatures: stage 1 starts from stage 0's backbone (slow learner) and a new head."""
    import sys

    sys.path.insert(0, os.path.join(REPO_ROOT, "recipes"))
    import sit_train

    results = sit_train.main([
        os.path.join(REPO_ROOT, "hparams", "synth", "sit_train.yaml"), f"--output_base={tmp_path}",
        "--number_of_epochs=1", "--clips_per_class=2", "--dsmn_channels=[8, 8, 8]", "--noprogressbar",
    ])
    out = tmp_path / "sit_subset100_blr0.0003" / "1986"

    def final(stage, part):
        return torch.load(out / "save" / f"stage{stage}" / "CKPT+final" / f"{part}.ckpt", map_location="cpu")

    # Backbone: stage 1 ends a few slow-learner steps (lr 3e-4) away from stage 0's weights;
    # a backbone started afresh would be ~100 % away.
    backbone_change = _relative_change(final(0, "embedding_model"), final(1, "embedding_model"))
    assert 0 < backbone_change < 0.02, backbone_change
    # Head: re-initialised at stage 1, so far from stage 0's (measured: 140 %; without the re-initialisation, 10 %).
    head_change = _relative_change(final(0, "classifier"), final(1, "classifier"))
    assert head_change > 0.5, head_change
    # Stage 1 predicts among its own (TAU 2022) label set: no CochlScene test clip can be right.
    assert results["accuracy_matrix"][1][0] == 0.0
    # Device-wise accuracy for exactly the devices of the TAU 2022 test clips.
    test_csv = tmp_path / "miniatures" / "TAU-urban-acoustic-scenes-2022-mobile-development" / "split_setup" / "test.csv"
    names = [line.split("\t")[0] for line in test_csv.read_text().splitlines()[1:]]
    assert set(results["sit"]["device_accuracy"]) == {name.rsplit("-", 1)[-1][: -len(".wav")] for name in names}
