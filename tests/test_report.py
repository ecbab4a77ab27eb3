"""Multi-seed report (soundcl.results.report), learning curves, seeds runner, TensorBoard scalars.

Most tests write run folders by hand (run_config.json + results.json, as the
recipes do); one runs a tiny recipe with ``--use_tensorboard=True``.
"""
import csv
import json
import math
import os
import sys

import numpy as np
import pytest

from conftest import recipe_argv, run_recipe
from soundcl import seeds
from soundcl.results import curves, metrics, report

NAN = float("nan")
PNG = b"\x89PNG\r\n\x1a\n"


def write_run(base, name, seed, matrix, partial=False, **config):
    """A run folder ``<base>/<name>/<seed>`` as a recipe leaves it; returns the folder."""
    folder = os.path.join(str(base), name, str(seed))
    os.makedirs(folder, exist_ok=True)
    hparams = {"seed": seed, "__set_seed": [seed], "experiment_name": name, "output_base": str(base),
               "output_folder": folder, "save_folder": f"{folder}/save", "train_log": f"{folder}/train_log.txt",
               "lr": 0.002, "replay_num_keep": 0, **config}
    run_config = {key: json.dumps(value, sort_keys=True) for key, value in hparams.items()}
    run_config["world_size"] = "1"
    with open(os.path.join(folder, "run_config.json"), "w", encoding="utf-8") as fout:
        json.dump(run_config, fout)
    if matrix is not None:
        n = len(matrix)
        per_task = [{"task": k, "train_time_s": 10.0 + seed, "memory_update_s": 0.5} for k in range(n)]
        metrics.write_results(folder, np.array(matrix, dtype=float), plot=False, extra={
            "partial": partial, "finished_tasks": n, "per_task": per_task,
            "memory_update_s": [0.5] * n})
    return folder


def matrix_with_last_row(last):
    """A 2-task matrix: R = [[0.9, -], [last[0], last[1]]]."""
    return [[0.9, NAN], list(last)]


# A_last: seed 1 (0.5 + 0.7) / 2 = 0.6, seed 2 (0.7 + 0.9) / 2 = 0.8 -> 0.7 ± 0.1414 (sample std)
SEED1 = matrix_with_last_row([0.5, 0.7])
SEED2 = matrix_with_last_row([0.7, 0.9])


def test_seed_only_difference_is_one_experiment_with_sample_std(tmp_path):
    write_run(tmp_path, "exp", 1, SEED1)
    write_run(tmp_path, "exp", 2, SEED2)
    experiments, no_config = report.group_runs(report.find_runs([str(tmp_path)]))
    assert len(experiments) == 1 and not no_config
    summary = experiments[0].summary()
    mean, std, n = summary["A_last"]
    assert n == 2 and mean == pytest.approx(0.7) and std == pytest.approx(math.sqrt(0.02))  # ddof=1
    # BWT (last row) = R[1,0] - R[0,0]: -0.4 and -0.2; BWT_all (every row) is the same with 2 tasks
    assert summary["BWT"][:2] == (pytest.approx(-0.3), pytest.approx(math.sqrt(0.02)))
    assert summary["train_time_s"][0] == pytest.approx((22.0 + 24.0) / 2)  # 2 tasks x (10 + seed)
    assert summary["memory_update_s"][0] == pytest.approx(1.0)
    np.testing.assert_allclose(summary["acc_per_task"][0], [0.9, 0.7])
    np.testing.assert_allclose(summary["acc_per_task"][1], [0.0, math.sqrt(0.02)])


def test_std_undefined_for_one_seed_and_nan_values_skipped():
    assert report.mean_std([0.5]) == (0.5, pytest.approx(NAN, nan_ok=True), 1)
    mean, std, n = report.mean_std([0.2, NAN, 0.4, None, 0.9])
    assert n == 3 and mean == pytest.approx(0.5) and std == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))
    assert report.mean_std([])[2] == 0


def test_runs_differing_in_more_than_the_seed_are_never_averaged(tmp_path):
    write_run(tmp_path / "a", "exp", 1, SEED1)
    write_run(tmp_path / "a", "exp", 2, SEED2)
    write_run(tmp_path / "b", "exp", 1, SEED2, lr=0.01)  # same name and seed range, other lr
    write_run(tmp_path / "a", "other", 1, SEED2, replay_num_keep=20)
    out = tmp_path / "report"
    report.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)])
    experiments, _ = report.group_runs(report.find_runs([str(tmp_path)]))
    assert sorted(e.label for e in experiments) == ["exp#1", "exp#2", "other"]
    assert sorted(len(e.finished) for e in experiments) == [1, 1, 2]
    text = (out / "report.md").read_text()
    # the output folders differ too (a/ vs b/): every differing key is named
    assert ("runs named `exp` differ in more than the seed (lr, output_base, output_folder, save_folder, train_log)"
            in text)
    assert "`lr=0.01`" in text and "`replay_num_keep=20`" in text
    rows = {r["experiment"]: r for r in csv.DictReader((out / "report.csv").open())}
    assert rows["exp#1"]["n_seeds"] == "2" and float(rows["exp#1"]["A_last_mean"]) == pytest.approx(0.7)
    assert rows["exp#2"]["A_last_std"] == "null"
    assert json.loads(rows["exp#2"]["differing_hparams"])["lr"] == 0.01


def test_partial_and_started_runs_are_listed_and_left_out(tmp_path):
    write_run(tmp_path, "exp", 1, SEED1)
    write_run(tmp_path, "exp", 2, SEED2)
    write_run(tmp_path, "exp", 3, [[0.1]], partial=True)  # stopped after task 0
    write_run(tmp_path, "exp", 4, None)  # started, no task finished
    out = tmp_path / "report"
    experiments, _ = report.write_report([str(tmp_path / "exp" / "*")], str(out))
    assert len(experiments) == 1
    assert [r.seed for r in experiments[0].finished] == [1, 2]
    assert experiments[0].summary()["A_last"][0] == pytest.approx(0.7)
    text = (out / "report.md").read_text()
    first_table = text.split("## Task-incremental")[0]  # the second table has a row per experiment too
    table = [line for line in first_table.splitlines() if line.startswith("| exp |")]
    assert table == [table[0]] and "| exp | 2 | 1, 2 | 70.0 ± 14.1 |" in table[0]
    unfinished = text.split("## Unfinished")[1]
    assert f"| {os.path.join(str(tmp_path), 'exp', '3')} | exp | 3 | partial | 1 |" in unfinished
    assert f"| {os.path.join(str(tmp_path), 'exp', '4')} | exp | 4 | started | 0 |" in unfinished
    for png in ("acc_per_task.png", "accuracy_matrices.png"):
        assert (out / png).read_bytes()[:8] == PNG
    assert not (out / "protocols.png").exists()


def test_protocol_comparison_for_linear_and_knn_runs(tmp_path):
    for protocol in ("seen", "buffer"):
        write_run(tmp_path, f"linclf_{protocol}", 1, SEED1, linclf_train_type=protocol)
        write_run(tmp_path, f"knn_{protocol}", 1, SEED2, linclf_train_type=protocol, knn_k=5)
    report.write_report([str(tmp_path)], str(tmp_path / "out"))
    assert (tmp_path / "out" / "protocols.png").read_bytes()[:8] == PNG


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="no results.json"):
        report.write_report([str(tmp_path)], str(tmp_path / "out"))
    with pytest.raises(SystemExit, match="matches no file"):
        report.write_report([str(tmp_path / "nothing*")], str(tmp_path / "out"))


def test_bwt_both_definitions():
    matrix = np.array([[0.9, NAN, NAN], [0.6, 0.8, NAN], [0.3, 0.7, 0.95]])
    assert metrics.backward_transfer(matrix) == pytest.approx(((0.3 - 0.9) + (0.7 - 0.8)) / 2)
    # every pair k > j: (0.6-0.9) + (0.3-0.9) + (0.7-0.8), over 3 pairs
    assert metrics.backward_transfer_all_steps(matrix) == pytest.approx(-1.0 / 3)
    assert math.isnan(metrics.backward_transfer_all_steps(np.array([[0.5]])))


def test_curves_from_train_log_with_a_repeated_epoch(tmp_path):
    log = tmp_path / "train_log.txt"
    log.write_text(
        "task: 0, epoch: 1, lr: 2.00e-03 - train loss: 1.50 - valid loss: 1.20, valid acc: 5.00e-01\n"
        "task: 0, epoch: 2, lr: 1.00e-03 - train loss: 9.00e-01 - valid loss: 8.00e-01, valid acc: 7.00e-01\n"
        "task: 0, epoch: 2, lr: 1.00e-03 - train loss: 8.00e-01 - valid loss: 8.00e-01, valid acc: 7.50e-01\n"
        "task: 1, epoch: 1, lr: 2.00e-03 - train loss: 2.10 - valid loss: 1.90, valid acc: 4.00e-01\n"
    )
    records = curves.plot_curves(str(log), str(tmp_path / "curves.png"))
    assert [(r["task"], r["epoch"]) for r in records] == [(0, 1), (0, 2), (1, 1)]
    assert records[1]["train loss"] == pytest.approx(0.8) and records[1]["valid acc"] == pytest.approx(0.75)
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG


def test_seeds_runner_runs_the_recipe_once_per_seed(tmp_path, monkeypatch):
    script = tmp_path / "fake_recipe.py"
    script.write_text("import sys\nopen(sys.argv[-1].split('=')[1] + '.txt', 'w').write(' '.join(sys.argv[1:]))\n")
    monkeypatch.chdir(tmp_path)
    assert seeds.main([str(script), "h.yaml", "--seeds=[1,2]", "--lr=0.1"]) == 0
    assert (tmp_path / "1.txt").read_text() == "h.yaml --lr=0.1 --seed=1"
    assert (tmp_path / "2.txt").read_text() == "h.yaml --lr=0.1 --seed=2"
    assert seeds.commands(["r.py", "h.yaml", "--seeds=3,4"]) == [
        [sys.executable, "r.py", "h.yaml", "--seed=3"], [sys.executable, "r.py", "h.yaml", "--seed=4"]]
    for bad in (["r.py", "h.yaml"], ["r.py", "h.yaml", "--seeds=[1,1]"], ["r.py", "h.yaml", "--seeds=[1]", "--seed=2"],
                ["r.py", "h.yaml", "--seeds=[a]"]):
        with pytest.raises(SystemExit):
            seeds.split_argv(bad)


def test_tensorboard_event_file_has_the_per_task_accuracies(tmp_path, synth_data_folder):
    """A tiny run with --use_tensorboard=True; the event file read back has R[k, j], A_k, the epoch stats."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from soundcl.results import tensorboard_log

    output_base = str(tmp_path / "results")
    argv = recipe_argv("hparams/synth/sup_train.yaml", output_base, synth_data_folder, "--use_tensorboard=True",
                       "--number_of_epochs=2", "--task_classes=[[0,1],[2,3]]", "--replay_num_keep=4")
    results = run_recipe("sup_train", argv)
    folder = os.path.join(output_base, "sup_train_replay4", "1986")
    tensorboard_log.disable(folder)  # flush and close the writer
    events = EventAccumulator(os.path.join(folder, "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]

    def values(tag):
        return [(e.step, pytest.approx(e.value, abs=1e-6)) for e in events.Scalars(tag)]

    matrix = results["accuracy_matrix"]
    assert values("accuracy/task0") == [(0, matrix[0][0]), (1, matrix[1][0])]
    assert values("accuracy/task1") == [(1, matrix[1][1])]
    assert values("A_k") == [(0, results["acc_per_task"][0]), (1, results["acc_per_task"][1])]
    assert [s for s, _ in values("memory_update_s")] == [0, 1]
    assert values("BWT") == [(1, results["BWT"])]
    # per epoch, through the YAML's train_logger: 2 tasks x 2 epochs
    assert {"loss/train", "loss/valid", "acc/valid"} <= set(scalars)
    assert len(events.Scalars("acc/valid")) == 4
    # every finished run also draws its learning curves and its file log is still written
    assert open(os.path.join(folder, "curves.png"), "rb").read()[:8] == PNG
    assert len(curves.parse_train_log(os.path.join(folder, "train_log.txt"))) == 4


def test_task_il_transfer_intransigence_and_resources_in_the_report(tmp_path):
    """The second table on hand-made runs: a continual one and a joint_incremental one of the same data."""
    mib = 2 ** 20
    folder = write_run(tmp_path, "finetune", 1, [[0.9, NAN], [0.5, 0.7]], strategy="finetune_or_replay",
                       task_classes=[[0, 1], [2, 3]])
    results = json.load(open(os.path.join(folder, "results.json"), encoding="utf-8"))
    results.update({
        "accuracy_before_training": [None, 0.3],  # R[0, 1]
        "task_il": {"accuracy_matrix": [[0.95, None], [0.8, 0.9]], "accuracy_before_training": [None, 0.6]},
        "initial_model_reference": {"accuracy": [0.5, 0.1], "task_il_accuracy": [0.5, 0.5]},
        "resources": {"peak_rss_bytes": [2 * mib, 3 * mib], "peak_gpu_bytes": [None, None],
                      "memory_bytes": [0, mib // 2], "update_time_s": [1.0, 2.5]},
    })
    with open(os.path.join(folder, "results.json"), "w", encoding="utf-8") as fout:
        json.dump(results, fout)
    write_run(tmp_path, "joint_inc", 1, [[0.95, NAN], [0.9, 0.85]], strategy="joint_incremental",
              task_classes=[[0, 1], [2, 3]])
    write_run(tmp_path, "other_data", 1, [[0.95, NAN], [0.9, 0.85]], strategy="joint_incremental",
              task_classes=[[4, 5], [6, 7]])
    out = tmp_path / "report"
    experiments, _ = report.write_report([str(tmp_path)], str(out))
    by_name = {e.label: e for e in experiments}
    finetune = by_name["finetune"]
    assert finetune.joint is by_name["joint_inc"]  # the same task_classes, not other_data
    summary = finetune.summary()
    assert summary["A_last_til"][0] == pytest.approx(0.85)  # (0.8 + 0.9) / 2
    assert summary["A_avg_til"][0] == pytest.approx((0.95 + 0.85) / 2)
    assert summary["FWT"][0] == pytest.approx(0.2)  # R[0, 1] - b_1 = 0.3 - 0.1
    assert summary["FWT_til"][0] == pytest.approx(0.1)  # 0.6 - 0.5
    assert summary["plasticity"][0] == pytest.approx(0.8)  # (0.9 + 0.7) / 2
    assert summary["intransigence"][0] == pytest.approx(0.1)  # ((0.95 - 0.9) + (0.85 - 0.7)) / 2
    assert summary["peak_rss_mib"][0] == pytest.approx(3.0) and summary["memory_mib"][0] == pytest.approx(0.5)
    assert summary["update_time_s"][0] == pytest.approx(3.5) and math.isnan(summary["peak_gpu_mib"][0])
    assert math.isnan(by_name["joint_inc"].summary()["intransigence"][0])  # its own reference: none
    text = (out / "report.md").read_text()
    assert "| task-IL A_last (%) |" in text and "intransigence of finetune: against joint_inc" in text
    rows = {r["experiment"]: r for r in csv.DictReader((out / "report.csv").open())}
    assert float(rows["finetune"]["intransigence_mean"]) == pytest.approx(0.1)
    assert rows["finetune"]["intransigence_reference"] == "joint_inc"
    assert float(rows["finetune"]["FWT_mean"]) == pytest.approx(0.2)
    # a run written before these entries: n/a, never a number
    assert rows["other_data"]["FWT_til_mean"] == "null" and rows["other_data"]["A_last_til_mean"] == "null"
