"""End to end: the replay recipe on the synthetic data (finetune vs every policy)
and on ESC-50 / TAU 2019 layout folders."""
import csv
import json
import os
import shutil

import numpy as np
import pytest
import soundfile

from conftest import recipe_argv, run_recipe


HPARAMS = "hparams/synth/replay_train.yaml"
#: 3 tasks of 2 classes (128 training clips each), tiny BC-ResNet (BatchNorm recalibrated), memory of 48 clips.
TINY = [
    "--task_classes=[[0,1],[2,3],[4,5]]",
    "--number_of_epochs=3",
    "--memory_size=48",
    "--batch_size=16",
    "--report_best_test_epoch=False",  # on in one run below (it tests every epoch)
    "--noprogressbar",
]
RUNS = {
    "finetune": ["--mode=finetune"],
    "random": ["--mem_manage=random"],
    "reservoir": ["--mem_manage=reservoir"],
    "prototype": ["--mem_manage=prototype"],
    "uncertainty_noisytune": ["--mem_manage=uncertainty", "--uncert_metric=noisytune", "--noise_lambda=0.5",
                              "--report_best_test_epoch=True"],
}


def _argv(base, data_folder, *extra):
    argv = recipe_argv(HPARAMS, str(base), data_folder, *TINY, *extra)
    # The tiny CNN sizes of the shared overrides do not apply to BC-ResNet.
    return [a for a in argv if not a.startswith("--encoder_channels")]


@pytest.fixture(scope="module")
def all_runs(tmp_path_factory, synth_data_folder):
    base = tmp_path_factory.mktemp("replay")
    return base, {
        name: run_recipe("replay_train", _argv(base, synth_data_folder, *extra, f"--experiment_name={name}"))
        for name, extra in RUNS.items()
    }


def _matrix(results):
    return np.array([[np.nan if v is None else v for v in row] for row in results["accuracy_matrix"]])


def test_every_policy_fills_the_memory_and_records_its_time(all_runs):
    _, runs = all_runs
    for name, results in runs.items():
        per_task = results["per_task"]
        assert len(per_task) == 3 and not results["partial"]
        assert results["memory_update_s"] == [t["memory_update_s"] for t in per_task]
        for task in per_task:
            assert task["memory_update_s"] >= 0
            # 128 training clips per task: the memory is full from task 0 on.
            assert task["memory_size"] == (0 if name == "finetune" else 48), (name, task)
        if name.startswith(("prototype", "uncertainty")):
            # Class-balanced: 48 // 6 = 8 clips per class after the last task.
            assert sorted(per_task[2]["memory_per_class"].values()) == [8] * 6, per_task[2]["memory_per_class"]
        # Training on task k used the task's clips plus the memory.
        if name != "finetune":
            assert per_task[1]["n_train"] == per_task[0]["n_train"] + 48
        assert {"BWT", "BWT_ascl"} <= set(results)
        if name != "uncertainty_noisytune":
            assert "best_test_epoch" not in results
            continue
        # Both model selections and both BWT definitions, each named (docs/fidelity.md).
        published = results["best_test_epoch"]
        assert len(published["acc_per_task"]) == 3 and "test" in published["selection"]
        for k, task in enumerate(per_task):
            best = task["best_test_epoch"]
            assert len(best["acc_per_epoch"]) == 3 and best["acc"] == max(best["acc_per_epoch"])
            assert published["acc_per_task"][k] == best["acc"]
        assert "BWT_ascl" in published


def test_replay_forgets_less_than_finetune(all_runs):
    _, runs = all_runs
    finetune = runs["finetune"]
    # Tasks are learnt (task 2's classes are the hardest for a 3-epoch tiny model).
    assert np.diag(_matrix(finetune)).mean() >= 0.7, _matrix(finetune)
    assert finetune["BWT"] < -0.4
    replays = {name: results for name, results in runs.items() if name != "finetune"}
    for name, results in replays.items():
        assert results["BWT"] > finetune["BWT"] + 0.15, (name, _matrix(results), _matrix(finetune))
        assert results["A_last"] > finetune["A_last"], (name, _matrix(results), _matrix(finetune))
    # 3 epochs of a tiny model: single policies are noisy, their mean is not.
    assert np.mean([r["A_last"] for r in replays.values()]) > finetune["A_last"] + 0.1


def test_reservoir_state_is_saved_with_the_task(all_runs):
    base, _ = all_runs
    state = json.loads((base / "reservoir" / "1986" / "save" / "task1" / "task_state.json").read_text())
    assert state["policy_state"] == {"n_seen": 256}
    assert len(state["memory"]) == 48


def test_early_stopping_ends_a_task(tmp_path, synth_data_folder):
    import re

    results = run_recipe("replay_train", _argv(
        tmp_path, synth_data_folder, "--mode=finetune", "--task_classes=[[0,1]]",
        "--number_of_epochs=8", "--patience=1", "--lr=0.0", "--lr_final=0.0",
    ))
    log = (tmp_path / "replay_finetune_random_noisytune_m48" / "1986" / "train_log.txt").read_text()
    accs = [float(a) for a in re.findall(r"valid acc: ([0-9.e+-]+)", log)]
    # lr 0: only batch-norm statistics move, so accuracy soon stops improving and,
    # with patience 1, the task ends at the first epoch that does not beat the best.
    assert 2 <= len(accs) < 8, log
    assert accs[-1] <= max(accs[:-1]), accs
    assert all(accs[i] > max(accs[:i]) for i in range(1, len(accs) - 1)), accs


def test_patience_counter_stops_on_a_plateau():
    from soundcl.methods.supervised.replay import make_epoch_counter

    counter = make_epoch_counter(10, patience=2)
    epochs = []
    for epoch, acc in zip(counter, [0.5, 0.7, 0.7, 0.7, 0.9, 0.9]):
        epochs.append(epoch)
        counter.update_metric(acc)
    assert epochs == [1, 2, 3, 4]
    assert type(make_epoch_counter(10, None)).__name__ == "EpochCounter"


def _esc50_layout(shared_data_dir, root, classes):
    real = os.path.join(shared_data_dir, "ESC-50-master", "meta", "esc50.csv")
    os.makedirs(root / "meta")
    os.makedirs(root / "audio")
    shutil.copy(real, root / "meta" / "esc50.csv")
    rng = np.random.RandomState(0)
    with open(real, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            c = int(row["target"])
            if c in classes:  # a class-specific tone in noise, 0.5 s at 44.1 kHz
                t = np.arange(22050) / 44100
                wav = 0.5 * np.sin(2 * np.pi * 300 * (c + 1) * t) + 0.05 * rng.randn(t.size)
                soundfile.write(str(root / "audio" / row["filename"]), wav.astype(np.float32), 44100, subtype="PCM_16")
    return str(root)


LAYOUT_TINY = [
    "--number_of_epochs=1", "--train_duration=0.5", "--ascl_channels=8", "--memory_size=8",
    "--mem_manage=uncertainty", "--uncert_metric=noisytune", "--noprogressbar",
    "--train_dataloader_opts={batch_size: 16, shuffle: True, num_workers: 0}",
    "--eval_dataloader_opts={batch_size: 16, num_workers: 0}",
]


def test_esc50_hparams_cross_validate_on_an_esc50_layout_folder(shared_data_dir, tmp_path):
    data = _esc50_layout(shared_data_dir, tmp_path / "ESC-50-master", {0, 1, 2, 3})
    summary = run_recipe("replay_train", [
        os.path.join(os.path.dirname(os.path.dirname(__file__)), "hparams/esc50/replay_train.yaml"),
        f"--data_folder={data}", f"--output_base={tmp_path}/out", "--task_classes=[[0,1],[2,3]]",
        "--cross_validate=True", "--cv_folds=[2,5]", *LAYOUT_TINY,
    ])
    assert summary["folds"] == ["2", "5"]
    assert len(summary["A_last"]["per_fold"]) == 2 and summary["A_last"]["std"] >= 0
    # ASC-CL's numbers (best test epoch), labelled, next to the validation-selected ones.
    assert len(summary["best_test_epoch"]["A_last"]["per_fold"]) == 2 and "BWT_ascl" in summary
    exp = tmp_path / "out" / "replay_replay_uncertainty_noisytune_m8"
    for fold in (2, 5):
        results = json.loads((exp / f"fold{fold}" / "3" / "results.json").read_text())
        assert len(results["accuracy_matrix"]) == 2 and results["per_task"][0]["memory_size"] == 8
    assert json.loads((exp / "cv_results.json").read_text())["A_avg"]["mean"] == summary["A_avg"]["mean"]


def test_tau19_hparams_run_on_a_tau_layout_folder(shared_data_dir, tmp_path):
    real = os.path.join(shared_data_dir, "TAU-urban-acoustic-scenes-2019-development")
    root = tmp_path / "TAU"
    os.makedirs(root / "evaluation_setup")
    os.makedirs(root / "audio")
    shutil.copy(os.path.join(real, "meta.csv"), root / "meta.csv")
    scenes = {"airport": 0, "bus": 1, "metro": 2, "metro_station": 3}
    for name in ("fold1_train.csv", "fold1_evaluate.csv"):
        with open(os.path.join(real, "evaluation_setup", name), newline="", encoding="utf-8") as f:
            lines = f.readlines()
        kept, counts = [lines[0]], {}
        for line in lines[1:]:
            filename, scene = line.rstrip("\r\n").split("\t")
            if scene in scenes and counts.get(scene, 0) < (20 if "train" in name else 6):
                counts[scene] = counts.get(scene, 0) + 1
                kept.append(line)
                t = np.arange(24000) / 48000
                wav = np.sin(2 * np.pi * 400 * (scenes[scene] + 1) * t)[:, None].repeat(2, axis=1) * 0.5
                soundfile.write(str(root / filename), wav, 48000, subtype="PCM_24")
        with open(root / "evaluation_setup" / name, "w", newline="", encoding="utf-8") as f:
            f.writelines(kept)
    results = run_recipe("replay_train", [
        os.path.join(os.path.dirname(os.path.dirname(__file__)), "hparams/tau19/replay_train.yaml"),
        f"--data_folder={root}", f"--output_base={tmp_path}/out", "--task_classes=[[0,1],[2,3]]", *LAYOUT_TINY,
    ])
    assert len(results["accuracy_matrix"]) == 2
    assert results["per_task"][1]["memory_per_class"] == {"0": 2, "1": 2, "2": 2, "3": 2}
