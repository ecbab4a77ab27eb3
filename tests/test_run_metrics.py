"""What the task loop measures beside the matrix (soundcl.core.run_metrics), with a scripted Brain.

Each test clip carries the class scores the model gives it before training (``init``) and after
(``scores``); the expected accuracies are counted by hand in the comments.
"""
import json
import math
import types

import numpy as np
import pytest
import torch

from soundcl.core.run_metrics import REFERENCE_FILE, RunMetrics
from soundcl.core.task_data import TaskData
from soundcl.results import metrics

UNSEEN = -1e4


def clip(cls, scores, init):
    return {"ID": f"c{cls}-{scores}", "class_idx": cls, "scores": scores, "init": init, "duration": 1.0}


TEST = [
    # task 0: classes 0, 1; right after training, both wrong before (init predicts 1 and 1: one right)
    [clip(0, [1, 0, 0, 0], [0, 1, 0, 0]), clip(1, [0, 1, 0, 0], [0, 1, 0, 0])],
    # task 1: classes 2, 3. After task 0, over classes 0..3: clip 2 -> 0 (wrong), clip 3 -> 3 (right);
    # within {2, 3}: 2 and 3 (both right). Init: 3 and 3 (one right in both).
    [clip(2, [5, 0, 1, 0], [0, 0, 0, 1]), clip(3, [0, 0, 1, 2], [0, 0, 0, 1])],
]


class ScriptedBrain:
    """Scores clips as a masked classifier would (unseen classes at UNSEEN), recording task-IL predictions."""

    future_eval_unsupported = None
    records_scores = True

    def __init__(self):
        self.seen_classes, self.eval_task_classes, self.til_predictions = [], None, []
        self.trained, self.modules, self.task_begun = False, {}, []
        self.hparams = types.SimpleNamespace(audio=types.SimpleNamespace(sample_rate=10))

    def begin_task(self, task_id, seen):
        self.task_begun.append((task_id, list(seen)))

    def make_task_dataset(self, rows, train):
        return rows

    def evaluate_accuracy(self, rows, loader_kwargs):
        scores = torch.tensor([r["scores" if self.trained else "init"] for r in rows], dtype=torch.float)
        mask = torch.zeros(4, dtype=torch.bool)
        mask[self.seen_classes] = True
        scores = scores.masked_fill(~mask, UNSEEN)
        self.targets = [r["class_idx"] for r in rows]
        predictions = scores.argmax(-1).tolist()
        if self.records_scores:
            self.til_predictions = metrics.task_il_predictions(scores, self.eval_task_classes).tolist()
        acc = float(np.mean([p == t for p, t in zip(predictions, self.targets)]))
        return acc, np.zeros((4, 4))

    def task_il_accuracy(self):
        if len(self.til_predictions) != len(self.targets):
            return None
        return float(np.mean([p == t for p, t in zip(self.til_predictions, self.targets)]))


def make_loop(tmp_path, brain):
    return types.SimpleNamespace(brain=brain, n_tasks=2, task_classes=[[0, 1], [2, 3]], save_folder=str(tmp_path),
                                 task_rows={"test": TEST, "train": [[], []]}, eval_loader_kwargs={},
                                 rows_by_id={r["ID"]: r for rows in TEST for r in rows})


def run_two_tasks(tmp_path, brain):
    run = RunMetrics(make_loop(tmp_path, brain))
    run.measure_reference(task0_finished=False)
    brain.trained = True
    matrix = np.full((2, 2), np.nan)
    for k in range(2):
        brain.seen_classes = sorted(c for j in range(k + 1) for c in [[0, 1], [2, 3]][j])
        for j in range(k + 1):
            matrix[k, j], run.til[k, j], _ = run.score(TEST[j], [[0, 1], [2, 3]][j])
        run.score_future_task(k, TaskData([], [], list(range(k + 1)), {}))
    return run, matrix


def test_task_il_future_task_and_reference_hand_counted(tmp_path):
    brain = ScriptedBrain()
    run, matrix = run_two_tasks(tmp_path, brain)
    assert brain.task_begun == [(0, [0, 1])]  # the Brain's task-0 state before the reference
    np.testing.assert_allclose(matrix, [[1.0, np.nan], [1.0, 0.5]])
    np.testing.assert_allclose(run.til, [[1.0, np.nan], [1.0, 1.0]])
    # R[0, 1] over classes 0..3 (the mask opened to task 1's classes): 1 of 2; within {2, 3}: 2 of 2
    assert run.before[1] == pytest.approx(0.5) and run.before_til[1] == pytest.approx(1.0)
    assert brain.seen_classes == [0, 1, 2, 3]  # restored after each extra test
    reference = json.loads((tmp_path / REFERENCE_FILE).read_text())
    assert reference["accuracy"] == [0.5, 0.5] and reference["task_il_accuracy"] == [0.5, 0.5]
    out = run.results(matrix, 2, [{}, {}])
    assert out["FWT"] == pytest.approx(0.0)  # 0.5 - b_1 0.5
    assert out["task_il"]["FWT"] == pytest.approx(0.5)  # 1.0 - 0.5
    assert out["plasticity"] == [1.0, 0.5] and out["task_il"]["A_last"] == pytest.approx(1.0)
    # a resumed run reads the reference back, whatever its model is now
    again = RunMetrics(make_loop(tmp_path, ScriptedBrain()))
    again.measure_reference(task0_finished=True)
    assert again.reference == reference


def test_resources_of_a_task(tmp_path):
    run = RunMetrics(make_loop(tmp_path, ScriptedBrain()))
    run.start_task()
    stats = {"train_time_s": 2.0, "memory_update_s": 0.5}
    run.end_task(stats, [TEST[0][0]["ID"], TEST[1][0]["ID"]])
    resources = stats["resources"]
    assert resources["memory_bytes"] == 4 * 2 * 10  # two 1 s clips of float32 at 10 Hz
    assert resources["update_time_s"] == pytest.approx(2.5) and resources["peak_rss_bytes"] > 0


def test_unsupported_brains_get_null_with_the_reason(tmp_path):
    brain = ScriptedBrain()
    brain.future_eval_unsupported = "kNN bank of the seen tasks"
    brain.records_scores = False
    run, matrix = run_two_tasks(tmp_path, brain)
    assert not (tmp_path / REFERENCE_FILE).exists() and math.isnan(run.before[1])
    out = run.results(matrix, 2, [{}, {}])
    assert math.isnan(out["FWT"]) and out["FWT_unavailable"] == "kNN bank of the seen tasks"
    assert "records no class scores" in out["task_il"]["unavailable"]
    # task 0 finished before the reference existed: never measured on a trained model
    late = RunMetrics(make_loop(tmp_path / "late", ScriptedBrain()))
    late.measure_reference(task0_finished=True)
    assert "the initial model is gone" in late.reference["unavailable"]
