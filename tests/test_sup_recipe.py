"""End to end: the supervised class-incremental recipe on the synthetic data."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO_ROOT, recipe_argv, run_recipe

HPARAMS = "hparams/synth/sup_train.yaml"


def _run(output_base, data_folder, *extra):
    return run_recipe("sup_train", recipe_argv(HPARAMS, str(output_base), data_folder, *extra))


def _matrix(results):
    return np.array([[np.nan if v is None else v for v in row] for row in results["accuracy_matrix"]])


@pytest.fixture(scope="module")
def finetune_and_replay(tmp_path_factory, synth_data_folder):
    base = tmp_path_factory.mktemp("sup")
    finetune = _run(base, synth_data_folder, "--replay_num_keep=0", "--experiment_name=finetune")
    replay = _run(base, synth_data_folder, "--replay_num_keep=all", "--experiment_name=replay")
    return base, finetune, replay


def test_outputs_and_checkpoints(finetune_and_replay):
    base, finetune, _ = finetune_and_replay
    out = base / "finetune" / "1986"
    on_disk = json.loads((out / "results.json").read_text())
    assert len(on_disk["accuracy_matrix"]) == 3 and not on_disk["partial"]
    assert on_disk["accuracy_matrix"][2][2] is not None and on_disk["accuracy_matrix"][0][1] is None
    for name in ("results.csv", "accuracy_matrix.png", "train_log.txt"):
        assert (out / name).exists(), name
    for k in range(3):
        task = out / "save" / f"task{k}"
        ckpts = [p.name for p in task.iterdir() if p.name.startswith("CKPT")]
        assert ckpts == ["CKPT+final"], ckpts
        for part in ("embedding_model.ckpt", "classifier.ckpt", "normalizer.ckpt"):
            assert (task / "CKPT+final" / part).exists()
        state = json.loads((task / "task_state.json").read_text())
        assert state["finished"]
        assert (task / "test_stats.json").exists()
    assert finetune["per_task"][0]["classes"] == [0, 1]


def test_results_carry_task_il_transfer_plasticity_and_resources(finetune_and_replay):
    base, finetune, replay = finetune_and_replay
    for name, results in (("finetune", finetune), ("replay", replay)):
        matrix, til = _matrix(results), _matrix(results["task_il"])
        seen = ~np.isnan(matrix)
        np.testing.assert_array_equal(~np.isnan(til), seen)
        # the argmax over all seen classes, when right, is also the argmax over the task's classes
        assert (til[seen] >= matrix[seen]).all(), (til, matrix)
        assert results["task_il"]["A_last"] == pytest.approx(np.nanmean(til[2]))
        assert results["plasticity"] == pytest.approx(np.diag(matrix).tolist())
        reference = results["initial_model_reference"]
        on_disk = json.loads((base / name / "1986" / "save" / "initial_model_reference.json").read_text())
        assert reference == on_disk and len(reference["accuracy"]) == 3
        before = results["accuracy_before_training"]
        assert before[0] is None and None not in before[1:]
        assert results["FWT"] == pytest.approx(np.mean([before[j] - reference["accuracy"][j] for j in (1, 2)]))
        til_before = results["task_il"]["accuracy_before_training"]
        assert results["task_il"]["FWT"] == pytest.approx(
            np.mean([til_before[j] - reference["task_il_accuracy"][j] for j in (1, 2)]))
        resources = results["resources"]
        assert all(b > 2 ** 20 for b in resources["peak_rss_bytes"]) and resources["peak_gpu_bytes_max"] is None
        assert all(t > 0 for t in resources["update_time_s"])
    assert finetune["resources"]["memory_bytes"] == [0, 0, 0]
    # replay keeps every clip: float32 samples of the full clips of the finished tasks
    memory = replay["resources"]["memory_bytes"]
    assert 0 < memory[0] < memory[1] < memory[2]
    # the report's second table has them
    from soundcl.results import report

    experiments, _ = report.write_report([str(base / "finetune"), str(base / "replay")], str(base / "report"))
    summary = {e.label: e.summary() for e in experiments}["finetune"]
    assert summary["FWT"][0] == pytest.approx(finetune["FWT"])
    assert summary["A_last_til"][0] == pytest.approx(finetune["task_il"]["A_last"])
    assert summary["peak_rss_mib"][0] == pytest.approx(finetune["resources"]["peak_rss_bytes_max"] / 2 ** 20)
    assert "| finetune | 1 | " in (base / "report" / "report.md").read_text().split("## Task-incremental")[1]


def test_each_task_is_learnt(finetune_and_replay):
    _, finetune, replay = finetune_and_replay
    diagonal = np.diag(_matrix(finetune))
    assert diagonal.min() >= 0.75, diagonal
    # With replay the new task competes with more old classes; it is still learnt.
    assert replay["A_last"] >= 0.6, _matrix(replay)


def test_finetuning_forgets_and_replay_forgets_less(finetune_and_replay):
    _, finetune, replay = finetune_and_replay
    ft, rp = _matrix(finetune), _matrix(replay)
    # Fine-tuning: task 0 is lost once later tasks are learnt.
    assert ft[2, 0] <= ft[0, 0] - 0.5, ft
    assert finetune["BWT"] < -0.4
    # Replay of every earlier clip keeps old classes.
    assert rp[2, 0] >= 0.6, rp
    assert replay["BWT"] > finetune["BWT"] + 0.3
    assert replay["A_last"] > finetune["A_last"] + 0.2
    assert replay["per_task"][1]["memory_size"] == replay["per_task"][0]["n_train"] * 2


def test_resume_after_a_finished_task_gives_the_same_matrix(finetune_and_replay, synth_data_folder):
    base, finetune, _ = finetune_and_replay
    partial = _run(base, synth_data_folder, "--replay_num_keep=0", "--experiment_name=resumed", "--stop_after_task=0")
    assert partial["partial"] and partial["finished_tasks"] == 1
    resumed = _run(base, synth_data_folder, "--replay_num_keep=0", "--experiment_name=resumed")
    np.testing.assert_array_equal(_matrix(resumed), _matrix(finetune))
    # the model before task 0 is measured once: the resumed run reads it back
    assert resumed["initial_model_reference"] == finetune["initial_model_reference"]
    assert resumed["FWT"] == finetune["FWT"] and resumed["task_il"] == finetune["task_il"]


def test_forward_transfer_tests_do_not_change_what_is_trained(finetune_and_replay, synth_data_folder):
    # An older run folder (no eval_future_tasks) resumes with the key at True (core.recipe.KEYS_ADDED_LATER):
    # that is right only if the extra tests leave training exactly as it was.
    base, finetune, _ = finetune_and_replay
    without = _run(base, synth_data_folder, "--replay_num_keep=0", "--experiment_name=no_fwt", "--eval_future_tasks=False")
    np.testing.assert_array_equal(_matrix(without), _matrix(finetune))
    assert without["FWT"] is None and finetune["FWT"] is not None


def _checkpoint_files(folder):
    """{path: (size, mtime_ns)} of every file under ``folder``."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_of_a_finished_run_trains_nothing(finetune_and_replay, synth_data_folder):
    base, finetune, _ = finetune_and_replay
    out = base / "finetune" / "1986"
    checkpoints, train_log = _checkpoint_files(out / "save"), (out / "train_log.txt").read_text()
    again = _run(base, synth_data_folder, "--replay_num_keep=0", "--experiment_name=finetune")
    # No epoch ran: no checkpoint written or touched, no line added to the training log.
    assert _checkpoint_files(out / "save") == checkpoints
    assert (out / "train_log.txt").read_text() == train_log
    np.testing.assert_array_equal(_matrix(again), _matrix(finetune))


def test_kill_mid_task_then_rerun_gives_the_same_matrix(finetune_and_replay, synth_data_folder):
    base, finetune, _ = finetune_and_replay
    argv = recipe_argv(HPARAMS, str(base), synth_data_folder, "--replay_num_keep=0", "--experiment_name=killed")
    cmd = [sys.executable, os.path.join(REPO_ROOT, "recipes", "sup_train.py"), *argv]
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "modules"))
    task1 = base / "killed" / "1986" / "save" / "task1"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Kill as soon as task 1 has its first end-of-epoch checkpoint.
        while not (task1.exists() and any(p.name.startswith("CKPT+2") for p in task1.iterdir())):
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (task1 / "task_state.json").exists()
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Loading a checkpoint from" in resumed.stdout + resumed.stderr
    results = json.loads((base / "killed" / "1986" / "results.json").read_text())
    np.testing.assert_array_equal(_matrix(results), _matrix(finetune))


def test_us8k_hparams_run_on_an_urbansound8k_layout_folder(tmp_path, synth_data_folder):
    # The synthetic set is written in the UrbanSound8K layout, so the real
    # recipe (CNN14 sizes overridden to tiny ones) reads it unchanged.
    results = run_recipe(
        "sup_train",
        recipe_argv(
            "hparams/us8k/sup_train.yaml", str(tmp_path), synth_data_folder,
            "--number_of_epochs=1", "--warmup_epochs=0", "--task_classes=[[3,8],[9,4]]", "--train_duration=1.0",
            "--train_dataloader_opts={batch_size: 16, shuffle: True, num_workers: 0}",
            "--eval_dataloader_opts={batch_size: 16, num_workers: 0}",
        ),
    )
    assert len(results["accuracy_matrix"]) == 2
    assert (tmp_path / "sup_train_replay0" / "1986" / "save" / "task1" / "CKPT+final").is_dir()
