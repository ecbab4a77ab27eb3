"""Fidelity to the continual-SSL research code (zhepeiw/cssl_sound): what its
published YAMLs and scripts do is what soundcl's recipes of the same name do by
default (docs/fidelity.md, "Continual SSL and linear evaluation").

The expected values below were read from cssl_sound's ``hparams/{us8k,tau19,vgg}/*.yaml``,
``*_train.py``, ``models/pann.py`` and ``models/modules.py``.
"""
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from conftest import REPO_ROOT
from soundcl.core import config

# ----------------------------------------------------------------- YAML defaults
#: Every YAML of these recipes: cssl_sound's features and CNN14.
FEATURES = {
    "n_mels": 80, "win_length": 25, "hop_length": 10, "sample_rate": 16000,
    "emb_dim": 2048, "emb_norm_type": "bn", "embedding_head": "pool",
    "encoder_channels": [64, 128, 256, 512, 1024],
}
AUGMENT = {"augment_before_norm": True, "use_mixup": False, "mixup_alpha": 0.4}
#: Training YAMLs: a clip shorter than train_duration stays whole and is padded by the batch.
CROPS = {"pad_short_crops": "batch"}
SSL = {
    **FEATURES, **AUGMENT, **CROPS, "batch_size": 32, "base_lr": 0.00375, "momentum": 0.9, "weight_decay": 0.0005,
    "final_lr": 0.0, "replay_num_keep": 0, "two_view_forward": "separate", "constant_predictor_lr": True,
}
SIMCLR = {**SSL, "tau": 0.5, "use_predictor": True}
SUPCLR = {**SIMCLR, "sup_weight": 1.0, "ssl_weight": 0.0, "mask_unseen_classes": False, "sup_loss_views": "first"}
SUP = {
    **FEATURES, **AUGMENT, **CROPS, "batch_size": 32, "lr": 0.00375, "lr_final": 0.0, "momentum": 0.9,
    "weight_decay": 0.0, "replay_num_keep": 0, "valid_replay": "count", "mask_unseen_classes": False, "keep_last_checkpoint": True,
}
LINCLF = {
    **FEATURES, "linclf_train_type": "buffer", "replay_num_keep": 100, "subset_selection": "random", "batch_size": 32,
    "lr": 0.00375, "lr_final": 0.0, "warmup_epochs": 0, "momentum": 0.9, "weight_decay": 0.0,
    "mask_unseen_classes": False, "encoder_checkpoint": "last", "reinit_classifier": True,
}
KNN = {**FEATURES, "linclf_train_type": "buffer", "replay_num_keep": 100, "subset_selection": "random",
       "knn_k": 200, "knn_temperature": 0.1, "knn_rule": "exp", "encoder_checkpoint": "last",
       "knn_bank_balance": "resample"}
TAU19_ORDER = {"task_classes": [[3, 8], [9, 4], [1, 7], [5, 2], [6, 0]], "valid_split": "location"}

#: (hparams file, expected values): the YAMLs cssl_sound publishes, with its values.
PUBLISHED = [
    ("us8k/simclr_train", {**SIMCLR, "number_of_epochs": 50, "warmup_epochs": 5, "train_duration": 2.0}),
    ("us8k/simsiam_train", {**SSL, "number_of_epochs": 50, "warmup_epochs": 5, "train_duration": 2.0}),
    ("us8k/supclr_train", {**SUPCLR, "number_of_epochs": 50, "warmup_epochs": 5, "train_duration": 2.0,
                           "task_classes": [[3, 8], [9, 4], [1, 7], [5, 2], [6, 0]]}),
    ("us8k/sup_train", {**SUP, "number_of_epochs": 50, "warmup_epochs": 5}),
    ("us8k/linclf_train", {**LINCLF, "number_of_epochs": 30}),
    ("us8k/knn_eval", KNN),
    ("tau19/supclr_train", {**SUPCLR, **TAU19_ORDER, "number_of_epochs": 100, "warmup_epochs": 10, "train_duration": 4.0}),
    ("tau19/sup_train", {**SUP, **TAU19_ORDER, "number_of_epochs": 200, "warmup_epochs": 10}),
    ("tau19/linclf_train", {**LINCLF, **TAU19_ORDER, "number_of_epochs": 100}),
    ("tau19/knn_eval", {**KNN, **TAU19_ORDER}),
    ("vgg/supclr_train", {**SUPCLR, "number_of_epochs": 50, "warmup_epochs": 10, "train_duration": 4.0}),
    ("vgg/sup_train", {**SUP, "number_of_epochs": 200, "warmup_epochs": 10}),
    ("vgg/linclf_train", {**LINCLF, "number_of_epochs": 100}),
]

#: SpecAugment-style masks of cssl_sound's TFAugmentation (frames at 100 per second, mel bins).
TF_AUGMENTATION = {"time_warp": True, "time_warp_window": 8, "n_freq_mask": 2, "freq_mask_width": [0, 10],
                   "n_time_mask": 2, "time_mask_width": [0, 10]}


def _preview(rel):
    path = os.path.join(REPO_ROOT, "hparams", f"{rel}.yaml")
    evaluation = rel.endswith(("linclf_train", "knn_eval"))
    return config.preview_hparams(path, "data_folder: /nowhere" + ("\nssl_checkpoints_dir: /nowhere" if evaluation else ""))


def _tag(node):
    return node.tag.value


@pytest.mark.parametrize("rel, expected", PUBLISHED, ids=[rel for rel, _ in PUBLISHED])
def test_published_yaml_defaults_are_the_originals(rel, expected):
    hp = _preview(rel)
    found = {key: hp[key] for key in expected}
    assert found == expected, {k: (found[k], v) for k, v in expected.items() if found[k] != v}
    # Features: SpeechBrain Fbank of 25 ms windows (n_fft = 400 at 16 kHz) and a sentence mean.
    fbank = hp["compute_features"]
    assert _tag(fbank) == "!new:speechbrain.lobes.features.Fbank"
    assert (fbank["n_mels"], fbank["n_fft"], fbank["win_length"], fbank["hop_length"], fbank["f_min"]) == (80, 400, 25, 10, 0)
    assert (hp["mean_var_norm"]["norm_type"], hp["mean_var_norm"]["std_norm"]) == ("sentence", False)
    recipe = rel.split("/")[1]
    encoder = hp["embedding_model"]
    if recipe in ("simclr_train", "simsiam_train", "linclf_train", "knn_eval"):
        # cssl_sound's simclr / simsiam YAMLs use ECAPA-TDNN; its evaluation YAMLs CNN14.
        kind = "ecapa" if recipe in ("simclr_train", "simsiam_train") else "cnn14"
        assert _tag(encoder) == "!apply:soundcl.models.encoders.build_encoder" and hp["encoder"] == kind
        assert hp["ecapa_channels"] == [1024, 1024, 1024, 1024, 3072]
        assert (encoder["embedding_head"], encoder["emb_norm_type"]) == ("pool", "bn")
    else:
        assert (encoder["embedding_head"], encoder["block_norm_type"]) == ("pool", "bn")
    if recipe in ("linclf_train", "knn_eval"):
        return
    assert {k: hp["augmentation"][k] for k in TF_AUGMENTATION} == TF_AUGMENTATION
    assert _tag(hp["opt_class"]) == "!name:torch.optim.SGD"
    scheduler = hp["lr_scheduler"] if "lr_scheduler" in hp else hp["lr_annealing"]
    assert _tag(scheduler) == "!new:soundcl.core.schedulers.WarmupCosineLR"
    if recipe in ("simclr_train", "simsiam_train", "supclr_train"):
        projector = hp["projector"]
        assert projector["output_norm"] is True and projector["n_layers"] == 2
        assert hp["predictor"]["bottleneck_dim"] == 2048 // 4
        assert "predictor" in hp["modules"] and "predictor" in hp["checkpoint_recoverables"]


def test_linear_eval_yaml_uses_sgd_with_a_per_batch_cosine():
    hp = _preview("us8k/linclf_train")
    assert _tag(hp["opt_class"]) == "!name:torch.optim.SGD"
    assert _tag(hp["lr_annealing"]) == "!new:soundcl.core.schedulers.WarmupCosineLR"
    assert hp["train_dataloader_opts"]["drop_last"] is True


# -------------------------------------------------------------------- models
def test_cnn14_embedding_is_the_pooled_last_block_with_the_originals_parameters():
    from soundcl.models.encoders import CNNEncoder, Cnn14

    model = Cnn14(80, 2048, embedding_head="pool")
    # cssl_sound's models.pann.Cnn14(80, 2048, 'bn') has 75,477,472 parameters: no linear layer.
    assert sum(p.numel() for p in model.parameters()) == 75_477_472
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert model.blocks[-1].conv2.out_channels == 2048
    for norm_type, norm_class in (("in", nn.InstanceNorm2d), ("ln", nn.GroupNorm)):
        other = CNNEncoder(16, (4,), 8, embedding_head="pool", block_norm_type=norm_type)
        assert isinstance(other.input_bn, norm_class) and isinstance(other.blocks[0].bn1, norm_class)


def test_tiny_pool_encoder_embedding_is_max_plus_mean_of_the_last_block():
    from soundcl.models.encoders import CNNEncoder

    torch.manual_seed(0)
    model = CNNEncoder(16, (4, 8), 12, embedding_head="pool").eval()
    feats = torch.randn(3, 40, 16)
    x = model.input_bn(feats.unsqueeze(1).transpose(1, 3)).transpose(1, 3)
    for block in model.blocks:
        x = block(x)
    x = x.mean(dim=3)  # [B, 12, T']
    expected = x.max(dim=2).values + x.mean(dim=2)
    torch.testing.assert_close(model(feats), expected)
    with pytest.raises(ValueError, match="embedding_head"):
        CNNEncoder(16, (4, 8), 12, embedding_head="linear")


def _yaml_modules(rel, output_base):
    from hyperpyyaml import load_hyperpyyaml

    overrides = {"data_folder": "/nowhere", "output_base": str(output_base),
                 "encoder_channels": [4, 8], "emb_dim": 16, "n_mels": 16}
    if not rel.endswith("supclr_train"):
        overrides["ecapa_channels"] = [8, 8, 8, 8, 24]
    with open(os.path.join(REPO_ROOT, "hparams", f"{rel}.yaml"), encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, overrides)


@pytest.mark.parametrize("rel", ["us8k/simclr_train", "us8k/supclr_train", "us8k/simsiam_train"])
def test_ssl_heads_are_projector_ending_in_batchnorm_then_predictor(rel, tmp_path):
    from soundcl.models.encoders import EcapaEncoder

    hp = _yaml_modules(rel, tmp_path)
    projector, predictor = hp["modules"]["projector"], hp["modules"]["predictor"]
    assert isinstance(projector.net[-1], nn.BatchNorm1d)
    assert [type(m) for m in projector.net] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert [type(m) for m in predictor.net] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert predictor.net[0].out_features == 16 // 4 and predictor.net[0].bias is None
    encoder = hp["modules"]["embedding_model"]
    if rel.endswith("supclr_train"):  # CNN14: the embedding is the pooled output of its last conv block
        assert encoder.embedding_head == "pool" and encoder.blocks[-1].conv2.out_channels == 16
    else:  # ECAPA-TDNN, as cssl_sound's simclr / simsiam YAMLs
        assert isinstance(encoder, EcapaEncoder) and encoder.emb_dim == 16


def _fake_brain(two_view_forward="separate", use_predictor=True, **modules):
    hparams = SimpleNamespace(two_view_forward=two_view_forward, use_predictor=use_predictor)
    brain = SimpleNamespace(hparams=hparams, modules=SimpleNamespace(**modules))
    from soundcl.methods.ssl.base import SSLBrain

    brain.per_view = lambda module, x: SSLBrain.per_view(brain, module, x)
    return brain


def test_simclr_loss_inputs_are_predictor_of_projector_per_view():
    from soundcl.models.heads import cssl_predictor, cssl_projector
    from soundcl.methods.ssl.base import SimCLR

    torch.manual_seed(0)
    projector, predictor = cssl_projector(8, 8, 8), cssl_predictor(8)
    emb = torch.randn(12, 8)
    brain = _fake_brain(projector=projector, predictor=predictor)
    out = SimCLR.heads(brain, emb)
    expected = torch.cat([predictor(projector(emb[:6])), predictor(projector(emb[6:]))])
    torch.testing.assert_close(torch.cat([out["z1"], out["z2"]]), expected)
    # use_predictor False: NT-Xent on the projections.
    out = SimCLR.heads(_fake_brain(use_predictor=False, projector=projector, predictor=predictor), emb)
    torch.testing.assert_close(torch.cat([out["z1"], out["z2"]]), torch.cat([projector(emb[:6]), projector(emb[6:])]))


def test_views_are_separate_batchnorm_batches_by_default():
    from soundcl.methods.ssl.base import SSLBrain

    norm = nn.BatchNorm1d(1, affine=False).train()
    x = torch.cat([torch.zeros(4, 1), torch.ones(4, 1)]) + 0.1 * torch.randn(8, 1)
    separate = SSLBrain.per_view(_fake_brain("separate"), norm, x)
    joint = SSLBrain.per_view(_fake_brain("joint"), norm, x)
    # Separately, each view is normalised by its own statistics: both halves centred.
    assert abs(float(separate[:4].mean())) < 1e-5 and abs(float(separate[4:].mean())) < 1e-5
    assert float(joint[:4].mean()) < -0.5 < 0.5 < float(joint[4:].mean())


# -------------------------------------------------------------- linear evaluation
def test_linear_eval_argmax_runs_over_all_classes_by_default():
    from soundcl.methods.evaluation.linear_eval import LinearEvalBrain

    classifier = nn.Linear(2, 4)
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.bias.copy_(torch.tensor([0.0, 1.0, 5.0, 0.0]))  # class 2: never trained on, highest logit
    seen = torch.tensor([True, True, False, False])

    def forward(mask):
        brain = SimpleNamespace(
            device="cpu", modules=SimpleNamespace(classifier=classifier),
            hparams=SimpleNamespace(mask_unseen_classes=mask),
            batch_embeddings=lambda batch: torch.zeros(3, 2), seen_mask=lambda device: seen,
        )
        batch = SimpleNamespace(to=lambda device: batch)
        return LinearEvalBrain.compute_forward(brain, batch, None)[0].argmax(dim=1).tolist()

    assert forward(False) == [2, 2, 2]  # cssl_sound: no masking
    assert forward(True) == [1, 1, 1]


class _Weight(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))


def _encoder_run(folder, accs, keep_last):
    """A task folder with one checkpoint per epoch (weight = epoch), then the loop's final step."""
    from soundcl.base.checkpoints import SafeCheckpointer
    from soundcl.core.task_loop import TaskLoop

    model = _Weight()
    checkpointer = SafeCheckpointer(str(folder), recoverables={"embedding_model": model})
    for epoch, acc in enumerate(accs, start=1):
        with torch.no_grad():
            model.w.fill_(epoch)
        checkpointer.save_checkpoint(meta={"epoch": epoch, "acc": acc})
    loop = SimpleNamespace(brain=SimpleNamespace(best_key=("acc", "max")), keep_last_checkpoint=keep_last)
    meta = TaskLoop._keep_best_as_final(loop, checkpointer)
    assert "last" not in meta  # per-task stats carry no flag
    return model


@pytest.mark.parametrize("keep_last", [True, False])
def test_encoder_of_a_task_is_its_most_recent_checkpoint(tmp_path, keep_last):
    from soundcl.methods.evaluation.encoder_checkpoints import load_encoder

    # Best validation at epoch 2 of 3: the final checkpoint is epoch 2's, the newest epoch 3's.
    model = _encoder_run(tmp_path / "save" / "task0", [0.5, 0.9, 0.7], keep_last)
    assert float(model.w.detach()) == 2.0  # the loop goes on with the best weights
    target = _Weight()
    load_encoder(str(tmp_path / "save"), 0, {"embedding_model": target}, which="final")
    assert float(target.w.detach()) == 2.0
    if keep_last:
        load_encoder(str(tmp_path / "save"), 0, {"embedding_model": target}, which="last")
        assert float(target.w.detach()) == 3.0  # cssl_sound's linclf_train.py: the newest checkpoint
    else:
        with pytest.raises(FileNotFoundError, match="keep_last_checkpoint"):
            load_encoder(str(tmp_path / "save"), 0, {"embedding_model": target}, which="last")
    # When the last epoch is the best (every SSL run: best_key is the epoch), CKPT+final is it.
    _encoder_run(tmp_path / "ssl" / "task0", [0.5, 0.6, 0.7], keep_last=False)
    load_encoder(str(tmp_path / "ssl"), 0, {"embedding_model": target}, which="last")
    assert float(target.w.detach()) == 3.0
    assert sorted(p.name for p in (tmp_path / "ssl" / "task0").iterdir()) == ["CKPT+final"]


def test_random_subset_selection_is_uniform_and_fixed_per_task():
    from soundcl.methods.evaluation.linear_eval import LinearEvalSets

    # One task, 3 clips of class 0 and 30 of class 1: uniform draws follow the proportions.
    rows = [{"ID": f"a{i}", "class_idx": "0"} for i in range(3)] + [{"ID": f"b{i:02d}", "class_idx": "1"} for i in range(30)]
    task_rows = {"train": [rows], "valid": [[]], "test": [[]]}
    kept = [LinearEvalSets("subset", 11, selection="random").select(0, [], task_rows, seed).train for seed in range(20)]
    n_class0 = [sum(r["class_idx"] == "0" for r in train) for train in kept]
    assert all(len(train) == 11 for train in kept) and sum(n_class0) / 20 < 2.5  # class-balanced would keep 3
    again = LinearEvalSets("subset", 11, selection="random").select(0, [], task_rows, 3).train
    assert [r["ID"] for r in again] == [r["ID"] for r in kept[3]]


def test_validation_replay_keeps_an_absolute_count():
    from soundcl.core.task_data import CurrentTaskWithMemory

    rows = {split: [[{"ID": f"{split}{t}-{i}", "class_idx": str(t)} for i in range(n)] for t in range(2)]
            for split, n in (("train", 50), ("valid", 20), ("test", 5))}
    memory = [f"train0-{i}" for i in range(10)]  # 10 of task 0's 50 training clips
    count = CurrentTaskWithMemory("count").select(1, memory, rows, 0).valid
    fraction = CurrentTaskWithMemory("fraction").select(1, memory, rows, 0).valid
    assert sum(r["ID"].startswith("valid0") for r in count) == 10  # replay_num_keep clips (cssl_sound)
    assert sum(r["ID"].startswith("valid0") for r in fraction) == 4  # 10/50 of 20
    with pytest.raises(ValueError, match="valid_replay"):
        CurrentTaskWithMemory("all")
