"""Continual self-supervised recipes: two-view data, kNN scoring, end-to-end runs, resume."""
import json
import re

import numpy as np
import pytest
import torch

from conftest import recipe_argv, run_recipe
from soundcl.data.audio import AudioPipeline, make_dataset
from soundcl.data.manifest import read_manifest
from soundcl.methods.ssl.base import SimCLR, SimSiam, SupCLR, knn_classify

# Tiny SSL runs: 2 tasks, 2 epochs, short crops, a learning rate that moves in 8 updates.
SSL_TINY = [
    "--task_classes=[[0,1],[2,3]]",
    "--number_of_epochs=2",
    "--warmup_epochs=0",
    "--lr_per_256=0.5",
    "--train_duration=0.5",
    "--knn_k=5",
]


def _run(brain_class, method, output_base, data_folder, *extra):
    argv = recipe_argv(f"hparams/synth/{method}_train.yaml", str(output_base), data_folder, *SSL_TINY, *extra)
    # The supervised tiny options --lr/--lr_final have no counterpart here (lr_per_256 instead).
    argv = [a for a in argv if not a.startswith(("--lr=", "--lr_final="))]
    base = {"simclr": SimCLR, "simsiam": SimSiam, "supclr": SupCLR}[method]
    return run_recipe(f"{method}_train", argv, replace={base.__name__: brain_class})


def _train_ssl_per_epoch(log_path):
    """[(task, epoch, train ssl)] from a train_log.txt."""
    found = []
    for line in open(log_path, encoding="utf-8"):
        m = re.search(r"task: (\d+), epoch: (\d+), .*train ssl: ([-0-9.e+]+)", line)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), float(m.group(3))))
    return found


# ------------------------------------------------------------------ units
def test_two_view_datasets_give_independent_deterministic_crops(tmp_path, synth_data_folder):
    from soundcl.data import synthetic

    info = synthetic.prepare(synth_data_folder, str(tmp_path), [[0, 1]], [1], [2], [3], clips_per_class_per_fold=4, seed=1234)
    rows = read_manifest(info["manifests"]["train"][0])
    audio = AudioPipeline(train_duration=0.5)
    audio.set_crop_seed(7)
    two = make_dataset(rows, audio, train=True, n_views=2)
    one = make_dataset(rows, audio, train=True)
    item = two[0]
    assert set(item) == {"id", "sig", "sig_view1", "class_idx"}
    assert item["sig"].shape == item["sig_view1"].shape == (audio.train_samples,)
    assert not torch.equal(item["sig"], item["sig_view1"])
    # View 0 is the single-view crop; both views are a pure function of the seed.
    assert torch.equal(one[0]["sig"], item["sig"])
    assert torch.equal(make_dataset(rows, audio, train=True, n_views=2)[0]["sig_view1"], item["sig_view1"])
    audio.set_crop_seed(8)
    assert not torch.equal(two[0]["sig_view1"], item["sig_view1"])
    # Evaluation sets are full clips, one view.
    assert set(make_dataset(rows, audio, train=False, n_views=2)[0]) == {"id", "sig", "class_idx"}
    with pytest.raises(ValueError, match="n_views"):
        make_dataset(rows, audio, train=True, n_views=0)


def test_knn_classify_votes_by_cosine_similarity():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([3, 3, 5, 5])
    queries = torch.tensor([[2.0, 0.1], [0.0, 0.3], [1.0, 1.1]])
    assert knn_classify(queries, bank, labels, n_classes=6, k=2).tolist() == [3, 5, 5]
    # k larger than the bank uses the whole bank.
    assert knn_classify(queries, bank, labels, n_classes=6, k=50).tolist() == [3, 5, 5]


# ------------------------------------------------------------- end to end
class RecordingSimCLR(SimCLR):
    """SimCLR that records the learning rate of every update (class-level list)."""

    lrs = []
    interrupt_at = None  # (task, epoch): raise after that epoch's checkpoint

    def on_fit_batch_start(self, batch, should_step):
        super().on_fit_batch_start(batch, should_step)
        RecordingSimCLR.lrs.append((self.task_id, self.optimizer.param_groups[0]["lr"]))

    def on_stage_end(self, stage, stage_loss, epoch=None):
        super().on_stage_end(stage, stage_loss, epoch)
        if RecordingSimCLR.interrupt_at == (self.task_id, epoch) and stage.name == "VALID":
            raise KeyboardInterrupt("simulated kill")


@pytest.fixture(scope="module")
def ssl_runs(tmp_path_factory, synth_data_folder):
    base = tmp_path_factory.mktemp("ssl")
    RecordingSimCLR.lrs, RecordingSimCLR.interrupt_at = [], None
    runs = {"simclr": _run(RecordingSimCLR, "simclr", base, synth_data_folder)}
    runs["simclr_lrs"] = list(RecordingSimCLR.lrs)
    runs["simsiam"] = _run(SimSiam, "simsiam", base, synth_data_folder)
    # ssl_weight 1: the published default (0) trains the classifier only; here both losses run.
    runs["supclr"] = _run(SupCLR, "supclr", base, synth_data_folder, "--use_mixup=True", "--ssl_weight=1.0")
    return base, runs


@pytest.mark.parametrize(
    "method, parts",
    [
        ("simclr", ["projector"]),
        ("simsiam", ["projector", "predictor"]),
        ("supclr", ["projector", "classifier"]),
    ],
)
def test_recipe_runs_two_tasks_and_writes_task_checkpoints(ssl_runs, method, parts):
    base, runs = ssl_runs
    results = runs[method]
    out = base / f"{method}_train_replay0" / "1986"
    matrix = np.array([[np.nan if v is None else v for v in row] for row in results["accuracy_matrix"]])
    assert matrix.shape == (2, 2) and not results["partial"]
    # kNN accuracies of 2-class tasks: real numbers, clearly above chance on the synthetic classes.
    assert np.all((matrix[np.tril_indices(2)] >= 0) & (matrix[np.tril_indices(2)] <= 1))
    assert matrix[0, 0] >= 0.6 and matrix[1, 1] >= 0.6, matrix
    for k in range(2):
        final = out / "save" / f"task{k}" / "CKPT+final"
        for name in ["embedding_model", "normalizer", *parts]:
            assert (final / f"{name}.ckpt").exists(), (method, k, name)
        assert (final / "lr_scheduler.ckpt").exists()
        meta = results["per_task"][k]["best_valid"]
        assert meta["epoch"] == 2  # the last epoch is the task's final checkpoint
        assert meta["train_spread"] > 0.01  # not collapsed
        # Wang and Isola's alignment (0..4) and uniformity (above -4t n/(n-1) for n clips, below 0) of the embeddings.
        assert 0.0 <= meta["train_align_emb"] <= 4.0 and -4.5 <= meta["train_uniform_emb"] <= 0.0, meta
    log = (out / "train_log.txt").read_text()
    assert "train ssl" in log and "train spread" in log and "train align_emb" in log and "train uniform_emb" in log
    if method == "supclr":
        assert "train sup" in log


@pytest.mark.parametrize("method", ["simclr", "simsiam", "supclr"])
def test_ssl_loss_decreases(ssl_runs, method):
    base, _ = ssl_runs
    epochs = _train_ssl_per_epoch(base / f"{method}_train_replay0" / "1986" / "train_log.txt")
    assert len(epochs) == 4, epochs
    first, last = epochs[0][2], epochs[-1][2]
    assert last < first, epochs


def test_resume_mid_task_continues_the_lr_schedule(ssl_runs, synth_data_folder):
    base, runs = ssl_runs
    full = runs["simclr_lrs"]
    per_epoch = len(full) // 4
    assert per_epoch >= 2 and len(full) == 4 * per_epoch
    # Task 1 restarts the schedule: its first update has the first LR of task 0.
    task0 = [lr for t, lr in full if t == 0]
    task1 = [lr for t, lr in full if t == 1]
    assert task1 == task0 and task0[0] > task0[-1]

    RecordingSimCLR.lrs, RecordingSimCLR.interrupt_at = [], (1, 1)
    with pytest.raises(KeyboardInterrupt):
        _run(RecordingSimCLR, "simclr", base, synth_data_folder, "--experiment_name=resumed")
    before = list(RecordingSimCLR.lrs)
    RecordingSimCLR.lrs, RecordingSimCLR.interrupt_at = [], None
    _run(RecordingSimCLR, "simclr", base, synth_data_folder, "--experiment_name=resumed")
    after = list(RecordingSimCLR.lrs)
    # The rerun does only task 1's second epoch, with the LRs the uninterrupted run used there.
    assert len(after) == per_epoch
    assert before + after == full
    state = json.loads((base / "resumed" / "1986" / "save" / "task1" / "task_state.json").read_text())
    assert state["finished"]
