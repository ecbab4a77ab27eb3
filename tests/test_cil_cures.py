"""The cures of small replay's recency bias in sup_train: BiC, WA, class-balanced replay batches (tiny)."""
import json

import numpy as np
import pytest
import torch

from test_strategies import _matrix, _resumes_identically, _run

NEW, OLD = [2, 3], [0, 1]


def test_bias_correction_is_the_identity_until_fitted():
    from soundcl.methods.supervised.bic import BiasCorrection

    layer = BiasCorrection([[0, 1], [2, 3]], n_classes=5)
    logits = torch.randn(7, 5)
    torch.testing.assert_close(layer(logits), logits, rtol=0, atol=0)
    layer.params.data[1] = torch.tensor([0.5, -2.0])
    corrected = layer(logits)
    torch.testing.assert_close(corrected[:, [0, 1, 4]], logits[:, [0, 1, 4]], rtol=0, atol=0)
    torch.testing.assert_close(corrected[:, NEW], 0.5 * logits[:, NEW] - 2.0)


def test_the_bias_fit_removes_a_known_offset_of_the_new_classes():
    from soundcl.methods.supervised.bic import fit_bias

    rng = np.random.RandomState(0)
    targets = torch.as_tensor(np.repeat([0, 1, 2, 3], 25))
    clean = torch.as_tensor(rng.randn(100, 4), dtype=torch.float32)
    clean[torch.arange(100), targets] += 3.0  # separable: the true class leads by ~3
    biased = clean.clone()
    biased[:, NEW] += 6.0  # the recency bias: every old clip goes to a new class
    assert float((biased.argmax(1)[:50] < 2).float().mean()) < 0.1
    alpha, beta = fit_bias(biased, targets, NEW, [0, 1, 2, 3]).tolist()
    corrected = biased.clone()
    corrected[:, NEW] = alpha * biased[:, NEW] + beta
    assert float((corrected.argmax(1) == targets).float().mean()) > 0.9
    assert beta < -3.0  # most of the +6 offset taken back


def test_bic_holds_out_a_balanced_slice_of_the_memory_and_nothing_at_task_0():
    from soundcl.methods.supervised.bic import BiCTaskData

    def rows(task, classes, n):
        return [{"ID": f"t{task}c{c}n{i}", "class_idx": c} for c in classes for i in range(n)]

    task_rows = {"train": [rows(0, OLD, 40), rows(1, NEW, 40)], "valid": [rows(0, OLD, 4), rows(1, NEW, 4)],
                 "test": [[], []]}
    memory = [f"t0c{c}n{i}" for c in OLD for i in range(10)]  # 10 clips per old class
    policy = BiCTaskData(holdout=0.2)
    first = policy.select(0, [], task_rows, seed=1)
    assert first.bias_rows == [] and len(first.train) == 80
    data = policy.select(1, memory, task_rows, seed=1)
    held = [int(r["class_idx"]) for r in data.bias_rows]
    assert {c: held.count(c) for c in range(4)} == {0: 2, 1: 2, 2: 2, 3: 2}
    assert not {r["ID"] for r in data.bias_rows} & {r["ID"] for r in data.train}
    assert len(data.train) == 80 + 20 - 8
    again = policy.select(1, memory, task_rows, seed=1)
    assert [r["ID"] for r in again.bias_rows] == [r["ID"] for r in data.bias_rows]  # seeded


def test_bic_is_the_identity_at_task_0_then_corrects_the_new_classes_and_resumes(tmp_path, synth_data_folder):
    from soundcl.methods.supervised.bic import BIC_FILE

    results = _resumes_identically(tmp_path, synth_data_folder, "bic", "--replay_num_keep=20", "--bic_holdout=0.2",
                                   "--number_of_epochs=2")
    save = tmp_path / "bic" / "1986" / "save"
    task0 = torch.load(save / "task0" / BIC_FILE)["params"]
    torch.testing.assert_close(task0, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), rtol=0, atol=0)
    task1 = torch.load(save / "task1" / BIC_FILE)["params"]
    torch.testing.assert_close(task1[0], torch.tensor([1.0, 0.0]), rtol=0, atol=0)  # task 0's layer stays
    assert not torch.equal(task1[1], torch.tensor([1.0, 0.0]))  # fitted on the held-out clips
    assert results["per_task"][0]["bic_holdout_clips"] == 0 and results["per_task"][1]["bic_holdout_clips"] > 0
    assert np.isfinite(_matrix(results)[1]).all()


def test_bic_output_equals_the_plain_logits_at_task_0(tmp_path, synth_data_folder, monkeypatch):
    import speechbrain as sb

    from test_strategies import _recording

    recording = _recording(monkeypatch, "bic", "task_id")
    _run(tmp_path, synth_data_folder, "bic", "--number_of_epochs=1", "--stop_after_task=0")
    brain = recording.instance
    brain.modules.eval()
    dataset = brain.make_task_dataset([r for r in brain.bias_rows] or _some_rows(brain), train=False)
    batch = sb.dataio.dataloader.make_dataloader(dataset, batch_size=4).__iter__().__next__().to(brain.device)
    with torch.no_grad():
        corrected = brain.compute_forward(batch, sb.Stage.TEST)[0]
        wavs, lens = batch.sig
        plain = brain.modules.classifier(brain.embed(wavs, lens, sb.Stage.TEST))
    plain = plain.masked_fill(~brain.seen_mask(plain.device), -1e4)
    torch.testing.assert_close(corrected, plain, rtol=0, atol=0)


def _some_rows(brain):
    return list(brain.train_dataset.data.values())[:4]


def test_weight_aligning_equalises_the_new_and_old_mean_norms():
    from soundcl.methods.supervised.wa import align_weights

    weight = torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0], [0.0, 12.0], [9.0, 9.0]])  # norms 5, 1 | 10, 12
    aligned, gamma = align_weights(weight, NEW, OLD)
    assert gamma == pytest.approx(3.0 / 11.0)
    norms = aligned.norm(dim=1)
    assert float(norms[NEW].mean()) == pytest.approx(float(norms[OLD].mean()))  # 3 == 3
    torch.testing.assert_close(aligned[[0, 1, 4]], weight[[0, 1, 4]], rtol=0, atol=0)
    torch.testing.assert_close(aligned[NEW], weight[NEW] * 3.0 / 11.0)
    again, gamma_again = align_weights(aligned, NEW, OLD)
    assert gamma_again == pytest.approx(1.0)  # aligning twice changes nothing
    with pytest.raises(ValueError, match="needs old and new classes"):
        align_weights(weight, NEW, [])


def test_wa_writes_the_aligned_head_into_the_final_checkpoint(tmp_path, synth_data_folder):
    results = _run(tmp_path, synth_data_folder, "wa", "--replay_num_keep=10", "--number_of_epochs=2")
    assert not results["partial"]
    final = next((tmp_path / "wa" / "1986" / "save" / "task1").glob("CKPT+final*"))
    weight = torch.load(final / "classifier.ckpt")["linear.weight"]
    norms = weight.norm(dim=1)
    assert float(norms[NEW].mean()) == pytest.approx(float(norms[OLD].mean()), rel=1e-5)


def test_class_balanced_batches_have_equal_class_shares():
    from soundcl.methods.supervised.balanced import ClassBalancedBatchSampler

    labels = [0] * 64 + [1] * 64 + [2] * 8 + [3] * 8  # two new classes, two small memory classes
    sampler = ClassBalancedBatchSampler(labels, batch_size=16, n_batches=9, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 9
    for batch in batches:
        assert np.bincount(np.asarray(labels)[batch], minlength=4).tolist() == [4, 4, 4, 4]
    memory_clips = [i for b in batches for i in b if labels[i] == 2]
    assert len(memory_clips) == 36 and set(memory_clips) == set(range(128, 136))  # the 8 clips, each 4-5 times
    odd = ClassBalancedBatchSampler([0] * 10 + [1] * 10 + [2] * 3, batch_size=16, n_batches=5, seed=3)
    for batch in odd:
        assert sorted(np.bincount(np.asarray([0] * 10 + [1] * 10 + [2] * 3)[batch])) == [5, 5, 6]
    sampler.set_epoch(2)
    assert list(sampler) != batches  # another epoch, other draws; the same epoch, the same draws
    sampler.set_epoch(0)
    assert list(sampler) == batches
    halves = [ClassBalancedBatchSampler(labels, 16, 9, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert [len(h) for h in halves] == [5, 4] and sorted(map(tuple, list(halves[0]) + list(halves[1]))) == \
        sorted(map(tuple, batches))


def test_replay_batches_class_balanced_trains_on_balanced_batches(tmp_path, synth_data_folder, monkeypatch):
    from test_strategies import _recording

    class Counting:
        records = []

        def fit_batch(self, batch):
            type(self).records.append((self.task_id, np.bincount(np.asarray(batch.class_idx), minlength=4)))
            return super().fit_batch(batch)

    from soundcl.methods.supervised import strategies

    spec = strategies.STRATEGIES["finetune_or_replay"]
    monkeypatch.setitem(strategies.STRATEGIES, "finetune_or_replay",
                        spec._replace(brain=type("CountingBrain", (Counting, spec.brain), {})))
    _run(tmp_path, synth_data_folder, "finetune_or_replay", "--replay_num_keep=8", "--number_of_epochs=1",
         "--replay_batches=class_balanced", name="balanced")
    task1 = [counts for task, counts in Counting.records if task == 1]
    assert task1 and all(counts.tolist() == [4, 4, 4, 4] for counts in task1)  # 16 = 4 classes x 4
    with pytest.raises(SystemExit, match="replay_batches"):
        _run(tmp_path, synth_data_folder, "finetune_or_replay", "--replay_batches=sorted", name="bad")
