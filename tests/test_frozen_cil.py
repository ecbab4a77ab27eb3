"""Class-incremental baselines on one frozen encoder: NCM (SimpleCIL) and RanPAC (recipes/frozen_cil.py).

The closed-form heads on numbers (RanPAC's task-by-task update is one joint ridge solve; NCM's
prototypes are class means), then the recipe end to end on the synthetic data (each clip encoded
once, resume, one-line errors). Every data set's miniature runs both YAMLs in
tests/test_hparams_matrix.py (cells ``<dataset>-ncm_eval`` / ``<dataset>-ranpac_eval``).
"""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO_ROOT, recipe_argv, run_recipe
from soundcl.methods.evaluation.frozen_cil import CurrentTaskOnly
from soundcl.methods.evaluation.frozen_heads import RIDGE_GRID, NCMHead, RanPACHead, select_ridge
from soundcl.methods.evaluation.linear_eval import LinearEvalBrain

NCM = "hparams/synth/ncm_eval.yaml"
RANPAC = "hparams/synth/ranpac_eval.yaml"
TWO_TASKS = "--task_classes=[[0,1],[2,3]]"
#: Options of the tiny overrides that the training-free recipe does not have.
NOT_FROZEN = ("--number_of_epochs", "--lr", "--lr_final")


def _tasks(n_tasks=3, per_class=40, dim=16, seed=0):
    """Embeddings of ``n_tasks`` tasks of 2 classes each: a list of (emb [n, dim] float64, labels [n])."""
    gen = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(2 * n_tasks, dim, generator=gen, dtype=torch.float64)
    tasks = []
    for k in range(n_tasks):
        labels = torch.tensor([2 * k + c for c in range(2) for _ in range(per_class)])
        tasks.append((centres[labels] + torch.randn(len(labels), dim, generator=gen, dtype=torch.float64), labels))
    return tasks


# ------------------------------------------------------------------ RanPAC
def test_ranpac_task_by_task_update_equals_one_joint_ridge_solve():
    tasks, n_classes, ridge = _tasks(), 6, 0.5
    head = RanPACHead(16, 200, n_classes, seed=3)
    for k, (emb, labels) in enumerate(tasks):
        head.update(emb, labels, chunk=7)  # chunks change nothing
        solved = head.solve(ridge)
        # The same after task k as one solve over the embeddings of tasks 0..k.
        emb_all = torch.cat([e for e, _ in tasks[:k + 1]])
        labels_all = torch.cat([y for _, y in tasks[:k + 1]])
        h = torch.relu(emb_all @ head.W_rand)
        y = F.one_hot(labels_all, n_classes).double()
        joint = torch.linalg.solve(h.t() @ h + ridge * torch.eye(200, dtype=torch.float64), h.t() @ y)
        torch.testing.assert_close(solved, joint, rtol=1e-9, atol=1e-11)
    # ... and the ridge regression itself, by another route: least squares on [H; sqrt(lambda) I] W = [Y; 0].
    augmented = np.vstack([h.numpy(), np.sqrt(ridge) * np.eye(200)])
    targets = np.vstack([y.numpy(), np.zeros((200, n_classes))])
    np.testing.assert_allclose(head.W_out.numpy(), np.linalg.lstsq(augmented, targets, rcond=None)[0],
                               rtol=1e-7, atol=1e-9)
    # Scores are relu(emb @ W_rand) @ W_out and separate these clusters.
    assert (head.scores(emb_all).argmax(1) == labels_all).float().mean() > 0.95


def _original_optimise_ridge_parameter(features, y):
    """RanPAC/RanPAC RanPAC.py ``optimise_ridge_parameter`` (features and y in its loader's order)."""
    ridges = 10.0 ** np.arange(-8, 9)
    num_val_samples = int(features.shape[0] * 0.8)
    losses = []
    q_val = features[0:num_val_samples, :].T @ y[0:num_val_samples, :]
    g_val = features[0:num_val_samples, :].T @ features[0:num_val_samples, :]
    for ridge in ridges:
        wo = torch.linalg.solve(g_val + ridge * torch.eye(g_val.size(dim=0), dtype=g_val.dtype), q_val).T
        y_pred = features[num_val_samples::, :] @ wo.T
        losses.append(F.mse_loss(y_pred, y[num_val_samples::, :]))
    return ridges[np.argmin(np.array(losses))]


def test_ridge_choice_is_the_originals_on_the_same_split():
    emb, labels = _tasks(n_tasks=1, per_class=30)[0]
    head = RanPACHead(16, 300, 2, seed=1)  # M > clips: the ridge matters
    ridge, losses = select_ridge(head, emb, labels, seed=11)
    assert len(losses) == len(RIDGE_GRID) == 17 and ridge in RIDGE_GRID
    order = torch.as_tensor(np.random.RandomState(11).permutation(len(labels)))  # the split select_ridge draws
    expected = _original_optimise_ridge_parameter(head.features(emb[order]), head.targets(labels[order]))
    assert ridge == pytest.approx(float(expected))


# --------------------------------------------------------------------- NCM
def test_ncm_prototypes_are_class_means_and_separate_clusters_fully():
    tasks = _tasks(n_tasks=3)
    head = NCMHead(6, 16)
    for emb, labels in tasks:
        head.update(emb[: len(labels) // 2], labels[: len(labels) // 2])  # a task's clips in two batches
        head.update(emb[len(labels) // 2:], labels[len(labels) // 2:])
    emb_all, labels_all = torch.cat([e for e, _ in tasks]), torch.cat([y for _, y in tasks])
    for c in range(6):
        torch.testing.assert_close(head.prototypes()[c], emb_all[labels_all == c].mean(0), rtol=1e-12, atol=1e-12)
    scores = head.scores(emb_all)
    expected = F.normalize(emb_all, dim=1) @ F.normalize(head.prototypes(), dim=1).t()
    torch.testing.assert_close(scores, expected.float())
    assert torch.equal(scores.argmax(1), labels_all)  # 100 % on well-separated clusters
    # A class not met scores 0, never a prototype at the origin's direction.
    unmet = NCMHead(6, 16)
    unmet.update(*tasks[0])
    assert torch.all(unmet.scores(emb_all)[:, 2:] == 0)


def test_current_task_only_trains_on_the_task_and_tests_on_the_seen_tasks():
    rows = {split: [[{"ID": f"{split}{k}-{i}", "class_idx": str(k)} for i in range(3)] for k in range(3)]
            for split in ("train", "valid", "test")}
    data = CurrentTaskOnly().select(2, ["train0-0"], rows, seed=1)
    assert [r["ID"] for r in data.train] == ["train2-0", "train2-1", "train2-2"]  # no replay, memory ignored
    assert data.valid == [] and data.test_tasks == [0, 1, 2]
    assert [[r["ID"] for r in rows_j] for rows_j in data.earlier_train] == [[f"train{j}-{i}" for i in range(3)]
                                                                           for j in range(2)]


# -------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def encoder(tmp_path_factory, synth_data_folder):
    """A tiny supervised encoder (2 tasks, fine-tuning) from the foundation's recipe."""
    base = tmp_path_factory.mktemp("frozen")
    run_recipe("sup_train", recipe_argv("hparams/synth/sup_train.yaml", str(base), synth_data_folder,
                                        "--experiment_name=enc", TWO_TASKS))
    return base, str(base / "enc" / "1986" / "save")


def _argv(hparams, encoder, data_folder, name, *extra):
    base, ckpts = encoder
    argv = recipe_argv(hparams, str(base), data_folder, f"--ssl_checkpoints_dir={ckpts}", f"--experiment_name={name}",
                       TWO_TASKS, *extra)
    return [a for a in argv if a.split("=", 1)[0] not in NOT_FROZEN]


def _matrix(results):
    return np.array([[np.nan if v is None else v for v in row] for row in results["accuracy_matrix"]])


@pytest.mark.parametrize("hparams,extra", [(NCM, ()), (RANPAC, ("--ranpac_M=256",))], ids=["ncm", "ranpac"])
def test_recipe_encodes_each_clip_once_and_resumes_to_the_same_matrix(hparams, extra, encoder, synth_data_folder,
                                                                      monkeypatch):
    encoded = []
    original = LinearEvalBrain.embed_rows
    monkeypatch.setattr(LinearEvalBrain, "embed_rows", lambda self, rows: encoded.extend(rows) or original(self, rows))
    name = hparams.split("/")[-1][:-5]
    results = run_recipe("frozen_cil", _argv(hparams, encoder, synth_data_folder, name, *extra))
    matrix = _matrix(results)
    assert not results["partial"] and matrix.shape == (2, 2), matrix
    assert results["acc_per_task"][0] >= 0.9 and results["A_last"] >= 0.6, matrix  # chance: 1/2, then 1/4
    assert results["task_data_policy"] == "CurrentTaskOnly()" and results["memory_policy"] == "NoMemory()"
    assert [t["n_train"] for t in results["per_task"]] == [128, 128]  # 2 classes x 8 clips x 8 folds, no replay
    if "ranpac" in hparams:
        assert all(t["ridge_chosen"] and t["ridge_lambda"] in RIDGE_GRID for t in results["per_task"])

    # Each training and test clip of both tasks encoded exactly once, in one cache for the run.
    out = encoder[0] / name / "1986"
    ids = [row["ID"] for row in encoded]
    assert len(ids) == len(set(ids)) == 2 * 128 + 2 * 2 * 8, len(ids)  # + 8 test clips per class
    cache = torch.load(out / "save" / "embeddings.pt", weights_only=True)
    assert sorted(cache["ids"]) == sorted(ids)
    assert not (out / "save" / "task1" / "embeddings.pt").exists()
    assert json.loads((out / "save" / "task1" / "test_stats.json").read_text())["tasks"] == [0, 1]

    # Task 1 unfinished: the head is rebuilt from task 0's cached embeddings, nothing is encoded again.
    encoded.clear()
    (out / "save" / "task1" / "task_state.json").unlink()
    resumed = run_recipe("frozen_cil", _argv(hparams, encoder, synth_data_folder, name, *extra))
    assert encoded == []
    np.testing.assert_array_equal(_matrix(resumed), matrix)
    assert resumed["per_task"][1].get("ridge_lambda") == results["per_task"][1].get("ridge_lambda")
    # soundcl.inference does not serve it (the head is not checkpointed): one clear error.
    from soundcl.inference import ContinualClassifier, RunNotReady

    with pytest.raises(RunNotReady, match="tests with its own class statistics"):
        ContinualClassifier.from_hparams(source=str(out))


def test_fixed_ridge_lambda_and_encoder_task_options(encoder, synth_data_folder):
    results = run_recipe("frozen_cil", _argv(RANPAC, encoder, synth_data_folder, "fixed", "--ranpac_M=128",
                                             "--ridge_lambda=10.0", "--encoder_task=last"))
    assert [t["ridge_lambda"] for t in results["per_task"]] == [10.0, 10.0]
    assert not any(t["ridge_chosen"] for t in results["per_task"])
    with open(encoder[0] / "fixed" / "1986" / "log.txt", encoding="utf-8") as fin:
        assert "task1/CKPT+" in fin.read()  # encoder_task=last: the run's last task's encoder


def test_bad_keys_and_values_fail_in_one_line(encoder, synth_data_folder, tmp_path):
    with pytest.raises(SystemExit, match=r"unknown hparam 'ridge_lamda'.*did you mean ridge_lambda"):
        run_recipe("frozen_cil", _argv(RANPAC, encoder, synth_data_folder, "bad", "--ridge_lamda=1.0"))
    with pytest.raises(SystemExit, match=r"frozen_head='ncn' is not valid"):
        run_recipe("frozen_cil", _argv(NCM, encoder, synth_data_folder, "bad", "--frozen_head=ncn"))
    with pytest.raises(SystemExit, match=r"encoder_task='first' is not valid"):
        run_recipe("frozen_cil", _argv(NCM, encoder, synth_data_folder, "bad", "--encoder_task=first"))
    lacking = tmp_path / "ranpac_eval.yaml"
    text = (REPO_ROOT and open(f"{REPO_ROOT}/{RANPAC}", encoding="utf-8").read())
    lacking.write_text("\n".join(line for line in text.split("\n") if not line.startswith("ridge_lambda:")))
    argv = _argv(RANPAC, encoder, synth_data_folder, "bad")
    with pytest.raises(SystemExit, match=r"lacks the key 'ridge_lambda' that RanPACBrain needs"):
        run_recipe("frozen_cil", [str(lacking), *argv[1:]])


def test_frozen_passt_from_a_local_checkpoint_needs_no_encoder_run(tmp_path):
    """frozen_passt.yaml: encoder_task pretrained, ssl_checkpoints_dir null, the PaSST weights from a local
    file (a tiny PaSST's, saved here); the embedding cache is keyed by that file."""
    pytest.importorskip("hear21passt")
    from soundcl.models.passt import PaSST
    from soundcl.testing import miniatures

    tiny = dict(depth=1, embed_dim=32, num_heads=2, n_mels=32)
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny_passt.pt"
    torch.save(PaSST(**tiny).net.state_dict(), checkpoint)
    data = miniatures.make_tau22(str(tmp_path / "tau22"), miniatures.default_shared_data_dir())
    argv = [f"{REPO_ROOT}/hparams/tau22/frozen_passt.yaml", f"--data_folder={data}", f"--output_base={tmp_path}",
            f"--audio_cache={tmp_path}/audio_cache", f"--passt_pretrained_path={checkpoint}", "--passt_depth=1",
            "--passt_embed_dim=32", "--passt_heads=2", "--n_mels=32", "--task_classes=[[0,1],[2,3]]",
            "--frozen_head=ranpac", "--ranpac_M=64", "--batch_size=4", "--noprogressbar",
            "--train_dataloader_opts={batch_size: 4, num_workers: 0}",
            "--eval_dataloader_opts={batch_size: 4, num_workers: 0}"]
    results = run_recipe("frozen_cil", argv)
    assert not results["partial"] and len(results["accuracy_matrix"]) == 2
    cache = torch.load(tmp_path / "passt_ranpac" / "1986" / "save" / "embeddings.pt", weights_only=True)
    assert any(str(checkpoint) in stamp for stamp in cache["key"]["checkpoint"])
