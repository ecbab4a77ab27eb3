"""Continual-learning statistics against a hand-computed accuracy matrix."""
import csv
import json
import math

import numpy as np
import pytest

from soundcl.results import metrics

NAN = float("nan")
# R[k, j]: accuracy on task j after training task k.
MATRIX = np.array(
    [
        [0.90, NAN, NAN],
        [0.60, 0.80, NAN],
        [0.30, 0.70, 0.95],
    ]
)


def test_average_accuracy_per_task():
    # A_0 = 0.9, A_1 = (0.6 + 0.8) / 2, A_2 = (0.3 + 0.7 + 0.95) / 3
    np.testing.assert_allclose(metrics.average_accuracy_per_task(MATRIX), [0.9, 0.7, 0.65])


def test_summary_hand_computed():
    summary = metrics.cl_summary(MATRIX)
    assert summary["A_last"] == pytest.approx(0.65)
    assert summary["A_avg"] == pytest.approx((0.9 + 0.7 + 0.65) / 3)
    # BWT = ((0.3 - 0.9) + (0.7 - 0.8)) / 2
    assert summary["BWT"] == pytest.approx(-0.35)
    # forgetting: task 0 best before last 0.9 -> 0.3 (0.6); task 1 best 0.8 -> 0.7 (0.1)
    assert summary["forgetting"] == pytest.approx(0.35)


def test_forgetting_uses_best_earlier_accuracy_not_first():
    matrix = np.array([[0.5, NAN, NAN], [0.9, 0.8, NAN], [0.4, 0.8, 0.7]])
    # task 0 peaked at 0.9 (after task 1), not at R[0, 0]
    assert metrics.forgetting(matrix) == pytest.approx(((0.9 - 0.4) + (0.8 - 0.8)) / 2)
    assert metrics.backward_transfer(matrix) == pytest.approx(((0.4 - 0.5) + (0.8 - 0.8)) / 2)


def test_single_task_has_undefined_transfer():
    summary = metrics.cl_summary(np.array([[0.8]]))
    assert summary["A_last"] == pytest.approx(0.8)
    assert math.isnan(summary["BWT"]) and math.isnan(summary["forgetting"])


def test_confusion_matrix():
    conf = metrics.confusion_matrix([0, 0, 1, 2], [0, 1, 1, 0], n_classes=3)
    assert conf.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert conf.dtype == np.int64
    assert metrics.confusion_matrix([], [], n_classes=2).tolist() == [[0, 0], [0, 0]]


def test_confusion_matrix_matches_a_count_on_random_labels():
    rng = np.random.default_rng(0)
    targets, predictions = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    expected = np.zeros((7, 7), dtype=np.int64)
    np.add.at(expected, (targets, predictions), 1)
    np.testing.assert_array_equal(metrics.confusion_matrix(targets.tolist(), predictions.tolist(), 7), expected)


def test_one_task_run_reports_undefined_metrics_as_na_and_null(tmp_path):
    """A one-task run: BWT and forgetting are undefined: ``n/a`` printed, ``null`` in results.json and results.csv."""
    matrix = np.array([[0.8]])
    table = metrics.format_matrix_table(matrix, metrics.cl_summary(matrix))
    assert "nan" not in table.lower()
    assert table.splitlines()[-1] == "A_last=80.0%  A_avg=80.0%  BWT=n/a  forgetting=n/a"

    results = metrics.write_results(str(tmp_path), matrix, extra={"note": [NAN, 1.0]}, plot=False)
    text = (tmp_path / "results.json").read_text()
    assert "NaN" not in text
    on_disk = json.loads(text)
    assert on_disk == results
    assert on_disk["BWT"] is None and on_disk["forgetting"] is None and on_disk["A_last"] == pytest.approx(0.8)
    assert on_disk["note"] == [None, 1.0]
    rows = list(csv.reader((tmp_path / "results.csv").read_text().splitlines()))
    assert ["BWT", "null"] in rows and ["forgetting", "null"] in rows and ["A_last", "0.800000"] in rows


def test_undefined_cells_and_task_averages_are_null_and_na(tmp_path):
    """A task not scored (NaN on the diagonal): its A_k is undefined too, never printed as nan."""
    matrix = np.array([[0.9, NAN], [NAN, 0.5]])
    table = metrics.format_matrix_table(matrix, metrics.cl_summary(matrix))
    assert "nan" not in table.lower()
    assert table.splitlines()[2].split()[-1] == "n/a"
    metrics.write_results(str(tmp_path), matrix, plot=False)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["accuracy_matrix"] == [[0.9, None], [None, 0.5]]
    assert on_disk["acc_per_task"] == [pytest.approx(0.9), None]
    rows = list(csv.reader((tmp_path / "results.csv").read_text().splitlines()))
    assert rows[2] == ["1", "null", "0.500000", "null"]


def test_write_results_files(tmp_path):
    results = metrics.write_results(str(tmp_path), MATRIX, extra={"time_spent_s": 1.5})
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == results
    assert on_disk["accuracy_matrix"][0] == [0.9, None, None]
    assert on_disk["BWT"] == pytest.approx(-0.35)
    assert on_disk["time_spent_s"] == 1.5
    csv_text = (tmp_path / "results.csv").read_text()
    assert csv_text.splitlines()[0] == "after_task,test_task0,test_task1,test_task2,A_k"
    assert "A_last,0.650000" in csv_text
    png = (tmp_path / "accuracy_matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    table = metrics.format_matrix_table(MATRIX, metrics.cl_summary(MATRIX))
    assert "BWT=-35.0%" in table and "A_last=65.0%" in table


# ------------------------------------------- task-IL, forward transfer, intransigence, plasticity
# The same matrix with the cells just above the diagonal: R[0, 1] = 0.4, R[1, 2] = 0.3.
FULL = np.array(
    [
        [0.90, 0.40, NAN],
        [0.60, 0.80, 0.30],
        [0.30, 0.70, 0.95],
    ]
)
# b_j: the model before task 0 on each task's test set.
REFERENCE = [0.5, 0.2, 0.25]


def test_plasticity_is_the_diagonal():
    np.testing.assert_allclose(metrics.plasticity(MATRIX), [0.9, 0.8, 0.95])


def test_forward_transfer_hand_computed():
    # R[0, 1] - b_1 = 0.4 - 0.2 = 0.2; R[1, 2] - b_2 = 0.3 - 0.25 = 0.05; FWT = 0.125
    np.testing.assert_allclose(metrics.forward_transfer_per_task(FULL, REFERENCE), [NAN, 0.2, 0.05])
    assert metrics.forward_transfer(FULL, REFERENCE) == pytest.approx(0.125)


def test_forward_transfer_is_undefined_for_one_task_or_a_missing_cell():
    assert math.isnan(metrics.forward_transfer([[0.9]], [0.5]))
    # the lower-triangular matrix lacks R[j-1, j]: NaN, never a mean over fewer tasks
    assert math.isnan(metrics.forward_transfer(MATRIX, REFERENCE))
    partly = FULL.copy()
    partly[1, 2] = NAN
    assert math.isnan(metrics.forward_transfer(partly, REFERENCE))


def test_future_matrix_fills_only_missing_cells_above_the_diagonal():
    before = [NAN, 0.4, 0.3]  # before[j] = R[j-1, j] measured apart
    full = metrics.future_matrix(MATRIX, before)
    np.testing.assert_allclose(full, FULL)
    # a cell the policy already tested (linear evaluation "full") is kept
    tested = FULL.copy()
    tested[0, 1] = 0.45
    assert metrics.future_matrix(tested, before)[0, 1] == pytest.approx(0.45)


def test_transfer_summary_hand_computed():
    summary = metrics.transfer_summary(FULL, REFERENCE)
    assert summary["plasticity"] == pytest.approx([0.9, 0.8, 0.95])
    assert summary["plasticity_mean"] == pytest.approx(2.65 / 3)
    assert summary["accuracy_before_training"][1:] == pytest.approx([0.4, 0.3])
    assert math.isnan(summary["accuracy_before_training"][0]) and math.isnan(summary["FWT_per_task"][0])
    assert summary["FWT"] == pytest.approx(0.125)


def test_intransigence_hand_computed():
    joint = [0.95, 0.90, 0.97]  # a*_k: trained jointly on tasks 0..k (joint_incremental's diagonal)
    # 0.95 - 0.9, 0.9 - 0.8, 0.97 - 0.95
    np.testing.assert_allclose(metrics.intransigence_per_task(MATRIX, joint), [0.05, 0.10, 0.02], atol=1e-12)
    assert metrics.intransigence(MATRIX, joint) == pytest.approx(0.17 / 3)
    with pytest.raises(ValueError, match="2 tasks"):
        metrics.intransigence(MATRIX, joint[:2])


def test_task_il_predictions_argmax_within_the_task_classes():
    import torch

    scores = torch.tensor([[5.0, 1.0, 2.0, 3.0],   # class-IL 0; within {2, 3}: 3
                           [0.0, 9.0, 4.0, 1.0],   # class-IL 1; within {2, 3}: 2
                           [-1e4, -1e4, -1e4, -1e4 + 1]])
    assert metrics.task_il_predictions(scores, [3, 2]).tolist() == [3, 2, 3]
    assert metrics.task_il_predictions(scores, [0, 1]).tolist() == [0, 1, 0]


def test_resources_audio_bytes_and_summary():
    from soundcl.results import resources

    rows = {"a": {"duration": "1.0"}, "b": {"duration": 0.5}}
    assert resources.audio_nbytes(["a", "b"], rows, 16000) == 4 * 24000  # float32 samples
    per_task = [{"resources": {"peak_rss_bytes": 100, "peak_rss_scope": "task", "peak_gpu_bytes": None,
                               "memory_bytes": 0, "update_time_s": 1.5, "memory_stored_as": "audio"}},
                {"resources": {"peak_rss_bytes": 300, "peak_rss_scope": "task", "peak_gpu_bytes": None,
                               "memory_bytes": 64, "update_time_s": 2.0, "memory_stored_as": "audio"}},
                {}]  # a task finished before resources were recorded
    summary = resources.resources_summary(per_task)
    assert summary["peak_rss_bytes"] == [100, 300, None] and summary["peak_rss_bytes_max"] == 300
    assert summary["peak_gpu_bytes_max"] is None and summary["memory_bytes_max"] == 64
    assert summary["update_time_s"] == [1.5, 2.0, None] and summary["peak_rss_scope"] == "task"


def test_peak_meter_sees_a_task_allocation():
    from soundcl.results import resources

    meter = resources.PeakMeter().start()
    block = np.ones(64 * 2 ** 20 // 8)  # 64 MiB touched
    measured = meter.stop()
    del block
    assert measured["peak_rss_bytes"] > 64 * 2 ** 20 and measured["peak_gpu_bytes"] is None
    assert measured["peak_rss_scope"] in ("task", "process") and measured["wall_s"] >= 0


def test_peak_meter_resets_and_reads_the_gpu_peak_on_cuda(monkeypatch):
    """The CUDA branch without a GPU: torch.cuda's peak counters stand-ins."""
    import torch

    from soundcl.results import resources

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append(("reset", device)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 12345)
    measured = resources.PeakMeter("cuda:0").start().stop()
    assert calls == [("reset", "cuda:0")] and measured["peak_gpu_bytes"] == 12345
    assert resources.PeakMeter("cpu").start().stop()["peak_gpu_bytes"] is None
