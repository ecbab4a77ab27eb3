"""Linear and kNN evaluation of task-wise encoder checkpoints (recipes/linclf_train.py, knn_eval.py)."""
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import recipe_argv, run_recipe
from soundcl.methods.evaluation.knn_eval import KnnEvalBrain
from soundcl.methods.evaluation.linear_eval import LinearEvalBrain, LinearEvalSets

LINCLF = "hparams/synth/linclf_train.yaml"
KNN = "hparams/synth/knn_eval.yaml"
#: 2 tasks keep the end-to-end runs short (the selection tests use 3).
TWO_TASKS = "--task_classes=[[0,1],[2,3]]"
#: A linear classifier learns in few epochs at this rate.
LINEAR = ("--number_of_epochs=2", "--lr=0.02", "--lr_final=0.005")
#: Options of the tiny overrides that the training-free kNN recipe does not have.
NOT_KNN = ("--number_of_epochs", "--lr", "--lr_final")


def _matrix(results):
    return np.array([[np.nan if v is None else v for v in row] for row in results["accuracy_matrix"]])


# ------------------------------------------------------------- selection
def _fake_loop(seed=7):
    """3 tasks x 2 classes, 6 training clips per class; ids name task, class and clip."""
    rows = {split: [] for split in ("train", "valid", "test")}
    for task in range(3):
        for split, n in (("train", 6), ("valid", 2), ("test", 2)):
            rows[split].append(
                [{"ID": f"{split}-t{task}-c{2 * task + c}-{i}", "class_idx": str(2 * task + c)} for c in range(2) for i in range(n)]
            )
    return SimpleNamespace(task_rows=rows, seed=seed, n_tasks=3)


def _ids(rows):
    return sorted(r["ID"] for r in rows)


def _policy_args(loop):
    return loop.task_rows, loop.seed


def _task_ids(loop, split, tasks):
    return sorted(r["ID"] for j in tasks for r in loop.task_rows[split][j])


def test_seen_and_full_select_exactly_the_expected_clips():
    loop = _fake_loop()
    for k in range(3):
        seen = LinearEvalSets("seen", "all").select(k, [], *_policy_args(loop))
        assert _ids(seen.train) == _task_ids(loop, "train", range(k + 1))
        assert _ids(seen.valid) == _task_ids(loop, "valid", range(k + 1))
        assert seen.test_tasks == list(range(k + 1))
        assert {j: _ids(rows) for j, rows in seen.test.items()} == {j: _task_ids(loop, "test", [j]) for j in range(k + 1)}

        full = LinearEvalSets("full", "all").select(k, [], *_policy_args(loop))
        assert _ids(full.train) == _task_ids(loop, "train", range(3))  # future tasks too
        assert full.test_tasks == [0, 1, 2]
    # subset / buffer keeping everything are the seen protocol.
    assert _ids(LinearEvalSets("subset", "all").select(2, [], *_policy_args(loop)).train) == _task_ids(loop, "train", range(3))
    assert _ids(LinearEvalSets("buffer", "all").select(1, [], *_policy_args(loop)).train) == _task_ids(loop, "train", range(2))


def test_subset_and_buffer_keep_the_same_class_balanced_clips_of_each_task():
    loop = _fake_loop()
    subset = LinearEvalSets("subset", num_keep=4, selection="class_balanced")
    per_task = {}
    for k in range(3):
        train = _ids(subset.select(k, [], *_policy_args(loop)).train)
        assert len(train) == 4 * (k + 1)
        for j in range(k + 1):
            kept = [i for i in train if i.startswith(f"train-t{j}-")]
            # 2 of each class of the task, and the same clips at every later task.
            assert sorted(i.split("-")[2] for i in kept) == [f"c{2 * j}"] * 2 + [f"c{2 * j + 1}"] * 2
            assert per_task.setdefault(j, kept) == kept
    # The buffer: every clip of the current task, the subset clips of the earlier ones.
    for k in range(3):
        buffer = _ids(LinearEvalSets("buffer", num_keep=4, selection="class_balanced").select(k, [], *_policy_args(loop)).train)
        expected = _task_ids(loop, "train", [k]) + [i for j in range(k) for i in per_task[j]]
        assert buffer == sorted(expected)
    # A pure function of (seed, task): another seed keeps other clips.
    assert _ids(subset.select(0, [], *_policy_args(_fake_loop(seed=8))).train) != per_task[0]
    # An odd budget: quotas differ by one; a budget over a class's size takes it all.
    odd = _ids(LinearEvalSets("subset", num_keep=3, selection="class_balanced").select(0, [], *_policy_args(loop)).train)
    assert sorted(sum(i.split("-")[2] == c for i in odd) for c in ("c0", "c1")) == [1, 2]
    assert len(_ids(LinearEvalSets("subset", num_keep=11, selection="class_balanced").select(0, [], *_policy_args(loop)).train)) == 11
    with pytest.raises(ValueError, match="linclf_train_type"):
        LinearEvalSets("seen_and_more", "all")


# -------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def encoder(tmp_path_factory, synth_data_folder):
    """A tiny supervised encoder (3 tasks, fine-tuning) from the foundation's recipe."""
    base = tmp_path_factory.mktemp("lineval")
    run_recipe("sup_train", recipe_argv("hparams/synth/sup_train.yaml", str(base), synth_data_folder, "--experiment_name=enc", TWO_TASKS))
    return base, str(base / "enc" / "1986" / "save")


def _eval(brain_class, hparams, encoder, data_folder, name, *extra):
    base, ckpts = encoder
    defaults = () if brain_class is KnnEvalBrain else LINEAR
    argv = recipe_argv(hparams, str(base), data_folder, f"--ssl_checkpoints_dir={ckpts}", f"--experiment_name={name}",
                       TWO_TASKS, *defaults, *extra)
    if brain_class is KnnEvalBrain:
        argv = [a for a in argv if a.split("=", 1)[0] not in NOT_KNN]
    return run_recipe("knn_eval" if brain_class is KnnEvalBrain else "linclf_train", argv)


@pytest.fixture(scope="module")
def cached_run(encoder, synth_data_folder):
    return _eval(LinearEvalBrain, LINCLF, encoder, synth_data_folder, "seen_cached")


def test_linear_eval_of_a_supervised_encoder_is_well_above_chance(cached_run, encoder):
    matrix = _matrix(cached_run)
    # Chance is 1/2 then 1/4.
    assert cached_run["acc_per_task"][0] >= 0.9, matrix
    assert cached_run["A_last"] >= 0.6, matrix
    out = encoder[0] / "seen_cached" / "1986"
    for k in range(2):
        task = out / "save" / f"task{k}"
        assert (task / "embeddings.pt").exists() and (task / "CKPT+final" / "classifier.ckpt").exists()
        assert json.loads((task / "test_stats.json").read_text())["tasks"] == list(range(k + 1))
    assert (out / "results.csv").exists() and (out / "accuracy_matrix.png").exists()


def test_cached_and_reencoding_paths_give_the_same_embeddings_and_matrix(cached_run, encoder, synth_data_folder, monkeypatch):
    seen = {}
    original = LinearEvalBrain.batch_embeddings

    def recording(self, batch):
        emb = original(self, batch)
        assert not hasattr(batch, "emb")  # really re-encoded
        for clip_id, e in zip(batch.id, emb):
            seen[(self.task_id, clip_id)] = e.detach().cpu()
        return emb

    monkeypatch.setattr(LinearEvalBrain, "batch_embeddings", recording)
    reencoded = _eval(LinearEvalBrain, LINCLF, encoder, synth_data_folder, "seen_reencoded", "--cache_embeddings=False")
    np.testing.assert_allclose(_matrix(reencoded), _matrix(cached_run), atol=1e-9)
    save = encoder[0] / "seen_cached" / "1986" / "save"
    n_compared = 0
    for k in range(2):
        cache = torch.load(save / f"task{k}" / "embeddings.pt", weights_only=True)
        for i, clip_id in enumerate(cache["ids"]):
            if (k, clip_id) in seen:
                torch.testing.assert_close(seen[(k, clip_id)], cache["embeddings"][i], atol=1e-5, rtol=1e-4)
                n_compared += 1
    assert n_compared == len(seen) > 200
    assert not (encoder[0] / "seen_reencoded" / "1986" / "save" / "task0" / "embeddings.pt").exists()


def test_rerun_reuses_cached_embeddings_and_finished_tasks(cached_run, encoder, synth_data_folder, monkeypatch):
    encoded = []
    original = LinearEvalBrain.embed_rows
    monkeypatch.setattr(LinearEvalBrain, "embed_rows", lambda self, rows: encoded.extend(rows) or original(self, rows))
    # Everything finished: nothing is encoded or trained.
    again = _eval(LinearEvalBrain, LINCLF, encoder, synth_data_folder, "seen_cached")
    assert encoded == [] and again["per_task"] == cached_run["per_task"]
    # Task 1 unfinished (its classifier lost): retrained on the cached embeddings alone.
    task1 = encoder[0] / "seen_cached" / "1986" / "save" / "task1"
    (task1 / "task_state.json").unlink()
    shutil.rmtree(task1 / "CKPT+final")
    resumed = _eval(LinearEvalBrain, LINCLF, encoder, synth_data_folder, "seen_cached")
    assert encoded == []
    np.testing.assert_array_equal(_matrix(resumed), _matrix(cached_run))
    # A cache made by another encoder is not trusted.
    (task1 / "task_state.json").unlink()
    shutil.rmtree(task1 / "CKPT+final")
    cache = torch.load(task1 / "embeddings.pt", weights_only=True)
    cache["probe"] = cache["probe"] + 1.0
    torch.save(cache, task1 / "embeddings.pt")
    _eval(LinearEvalBrain, LINCLF, encoder, synth_data_folder, "seen_cached")
    assert len(encoded) == len(cache["ids"])


def test_knn_full_fills_the_whole_matrix_above_chance(encoder, synth_data_folder):
    results = _eval(KnnEvalBrain, KNN, encoder, synth_data_folder, "knn_full", "--linclf_train_type=full", "--knn_k=5")
    matrix = _matrix(results)
    assert not np.isnan(matrix).any(), matrix  # future tasks tested too
    # The bank holds all 4 classes (chance 1/4).
    assert matrix.mean() >= 0.6, matrix


def test_buffer_and_subset_run_and_train_on_the_expected_number_of_clips(encoder, synth_data_folder):
    buffer = _eval(LinearEvalBrain, LINCLF, encoder, synth_data_folder, "buffer", "--linclf_train_type=buffer",
                   "--replay_num_keep=4", "--number_of_epochs=1")
    n_task = len(buffer["per_task"][0]["classes"]) * 64  # 8 clips x 8 training folds per class
    # Task 1: all clips of task 1 + 4 of task 0.
    assert [t["n_train"] for t in buffer["per_task"]] == [n_task, n_task + 4]
    assert buffer["A_last"] > 0.5, _matrix(buffer)


def test_missing_task_checkpoints_and_shape_mismatch_give_clear_errors(encoder, synth_data_folder, tmp_path):
    base, ckpts = encoder
    partial = tmp_path / "save"
    shutil.copytree(f"{ckpts}/task0", partial / "task0")
    argv = recipe_argv(LINCLF, str(base), synth_data_folder, f"--ssl_checkpoints_dir={partial}", "--experiment_name=missing", TWO_TASKS)
    with pytest.raises(FileNotFoundError, match=r"task1.*tasks found in .*\[0\]"):
        run_recipe("linclf_train", argv)
    with pytest.raises(ValueError, match=r"shape \(32, 16\) in the checkpoint but \(24, 16\) with the hparams"):
        _eval(LinearEvalBrain, LINCLF, encoder, synth_data_folder, "mismatch", "--emb_dim=24")
