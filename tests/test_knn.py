"""The one kNN rule (soundcl.methods.evaluation.knn.knn_scores) of the SSL scoring and of the kNN evaluation."""
import types

import pytest
import torch
import torch.nn.functional as F

from soundcl.methods.evaluation import knn, knn_eval
from soundcl.methods.evaluation.knn_eval import KnnEvalBrain
from soundcl.methods.ssl.base import knn_classify


def _original_knn_predict(feature, feature_bank, label_bank, n_classes, knn_k, knn_t):
    """zhepeiw/cssl_sound knn_eval.py ``knn_predict`` (feature [B, D] and feature_bank [D, N] L2-normalised)."""
    sim_matrix = torch.mm(feature, feature_bank)
    sim_weight, sim_indices = sim_matrix.topk(k=knn_k, dim=-1)
    sim_labels = torch.gather(label_bank.expand(feature.shape[0], -1), dim=-1, index=sim_indices)
    sim_weight = (sim_weight / knn_t).exp()
    one_hot_label = F.one_hot(sim_labels, num_classes=n_classes)
    return torch.sum(one_hot_label * sim_weight.unsqueeze(-1), dim=1)


def test_default_rule_is_the_original_one():
    gen = torch.Generator().manual_seed(0)
    bank, labels = torch.randn(300, 16, generator=gen), torch.randint(0, 7, (300,), generator=gen)
    queries = torch.randn(50, 16, generator=gen)
    ours = knn.knn_scores(queries, bank, labels, 7, k=200, temperature=0.1)
    original = _original_knn_predict(F.normalize(queries, dim=1), F.normalize(bank, dim=1).t(), labels, 7, 200, 0.1)
    assert torch.equal(ours.argmax(1), original.argmax(1))
    # Same scores up to one positive factor per query.
    torch.testing.assert_close(ours / ours.sum(1, keepdim=True), original / original.sum(1, keepdim=True))


def _near_one_far_two():
    """Query [1, 0]: one near clip of class 0, two farther clips of class 1."""
    bank = torch.tensor([[1.0, 0.02], [0.6, 0.8], [0.6, -0.8]])
    return torch.tensor([[1.0, 0.0]]), bank, torch.tensor([0, 1, 1])


def test_the_rules_differ_where_one_near_neighbour_is_outvoted():
    queries, bank, labels = _near_one_far_two()
    assert knn.knn_scores(queries, bank, labels, 2, k=3, temperature=0.1).argmax(1).tolist() == [0]
    assert knn.knn_scores(queries, bank, labels, 2, k=3, rule="vote").argmax(1).tolist() == [1]
    # vote: neighbour counts, a tie goes to the larger summed similarity
    tie_bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    scores = knn.knn_scores(torch.tensor([[1.0, 0.2]]), tie_bank, torch.tensor([0, 1, 0, 1]), 2, k=4, rule="vote")
    assert scores.argmax(1).tolist() == [0] and scores.floor().tolist() == [[2.0, 2.0]]


def test_small_temperatures_stay_finite_and_k_is_capped_by_the_bank():
    queries, bank, labels = _near_one_far_two()
    scores = knn.knn_scores(queries, bank, labels, 2, k=50, temperature=1e-3)
    assert torch.isfinite(scores).all() and scores.argmax(1).tolist() == [0]
    with pytest.raises(ValueError, match="empty"):
        knn.knn_scores(queries, bank[:0], labels[:0], 2)
    with pytest.raises(ValueError, match="unknown kNN rule"):
        knn.knn_scores(queries, bank, labels, 2, rule="majority")


def test_ssl_scoring_and_knn_evaluation_use_the_one_rule(monkeypatch):
    queries, bank, labels = _near_one_far_two()
    calls = []
    real = knn.knn_scores

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(knn, "knn_scores", spy)
    monkeypatch.setattr(knn_eval, "knn_scores", spy)
    assert knn_classify(queries, bank, labels, n_classes=2, k=3).tolist() == [0]

    class Batch:
        def to(self, device):
            return self

    brain = types.SimpleNamespace(
        device="cpu", bank=F.normalize(bank, dim=1), bank_labels=labels,
        hparams=types.SimpleNamespace(n_classes=2, knn_k=3, knn_rule="exp", knn_temperature=0.1),
        batch_embeddings=lambda batch: queries,
    )
    assert KnnEvalBrain.compute_forward(brain, Batch(), None).argmax(1).tolist() == [0]
    brain.hparams.knn_rule = "vote"
    assert KnnEvalBrain.compute_forward(brain, Batch(), None).argmax(1).tolist() == [1]
    assert [c.get("rule", "exp") for c in calls] == ["exp", "exp", "vote"]


def _fit_bank(balance, train_type, labels, seed=1986, task_id=4):
    """KnnEvalBrain.fit on a stand-in Brain whose loader yields batches of (embedding, label)."""
    class Batch:
        def __init__(self, emb, cls):
            self.emb, self.class_idx = emb, cls

        def to(self, device):
            return self

    embeddings = torch.randn(len(labels), 8, generator=torch.Generator().manual_seed(0))
    batches = [Batch(embeddings[i:i + 32], labels[i:i + 32].tolist()) for i in range(0, len(labels), 32)]
    brain = types.SimpleNamespace(
        device="cpu", task_id=task_id, make_dataloader=lambda *args, **kwargs: batches,
        batch_embeddings=lambda batch: batch.emb,
        hparams=types.SimpleNamespace(seed=seed, knn_bank_balance=balance, linclf_train_type=train_type),
    )
    KnnEvalBrain.fit(brain, None, None)
    return brain.bank, brain.bank_labels


def test_knn_bank_is_a_class_balanced_resample_in_buffer_as_cssl_sound():
    """buffer at the last task: 2 current classes of 90 clips, 4 earlier ones of 10 (the buffer):
    the original's bank holds as many entries, about n / 6 of each class (US8K: ~130 each, not ~450 / ~50)."""
    labels = torch.tensor([4] * 90 + [5] * 90 + [0] * 10 + [1] * 10 + [2] * 10 + [3] * 10)
    bank, bank_labels = _fit_bank("resample", "buffer", labels)
    counts = torch.bincount(bank_labels, minlength=6)
    assert bank.shape[0] == len(labels) and counts.sum() == len(labels)
    assert counts.min() >= 20 and counts.max() <= 55, counts  # expected 36.7 each
    assert (counts[:4] > 10).all() and (counts[4:] < 90).all()
    # Entries are bank clips (with replacement: old clips repeat), drawn again identically.
    again, again_labels = _fit_bank("resample", "buffer", labels)
    assert torch.equal(bank, again) and torch.equal(bank_labels, again_labels)
    assert len({tuple(row.tolist()) for row in bank[bank_labels == 0]}) <= 10
    # none: every clip once; seen / full are never resampled (the original's dataio_prep).
    for balance, train_type in (("none", "buffer"), ("resample", "seen"), ("resample", "full")):
        kept, kept_labels = _fit_bank(balance, train_type, labels)
        assert torch.equal(kept_labels, labels)
    with pytest.raises(ValueError, match="knn_bank_balance"):
        _fit_bank("balanced", "buffer", labels)
    from soundcl.core import config

    assert config.CHOICES["knn_bank_balance"] == knn_eval.KNN_BANK_BALANCES  # checked at start
