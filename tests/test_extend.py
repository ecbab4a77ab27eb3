"""One more class, later (soundcl.extend): a finished 2-task run gets task 2 from a folder; rows 0-1 of the
matrix stay, row 2 is added, the classifier grows, and an extension killed mid-task resumes to the same matrix."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT, recipe_argv, run_recipe
from soundcl import extend
from soundcl.data.folder import write_example_folder
from soundcl.inference import ContinualClassifier


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, synth_data_folder):
    base = tmp_path_factory.mktemp("extend")
    results = run_recipe("sup_train", recipe_argv("hparams/synth/sup_train.yaml", str(base), synth_data_folder,
                                                  "--task_classes=[[0,1],[2,3]]", "--number_of_epochs=2",
                                                  "--replay_num_keep=4"))
    new = write_example_folder(str(base / "new_classes"), n_classes=2, clips_per_class=16, first_class=4)
    return str(base / "sup_train_replay4" / "1986"), results, new


def _copy(run, tmp_path, name):
    target = str(tmp_path / name)
    shutil.copytree(run, target)
    return target


def test_a_third_task_adds_row_2_and_keeps_rows_0_1(finished_run, tmp_path):
    run, before, new = finished_run
    run = _copy(run, tmp_path, "run")
    after = extend.run(run, new, ["--noprogressbar"])
    matrix = after["accuracy_matrix"]
    assert len(matrix) == 3 and matrix[0][:2] == before["accuracy_matrix"][0] and matrix[1][:2] == before["accuracy_matrix"][1]
    assert matrix[0][2] is None and matrix[1][2] is None and matrix[2][2] is not None and not after["partial"]
    assert after["per_task"][2]["classes"] == [10, 11] and after["per_task"][2]["n_train"] > 8  # + the memory
    classifier = ContinualClassifier.from_hparams(source=run)
    assert classifier.task == 2 and classifier.classes[-2:] == ["am_tone", "click_train"]
    assert len(classifier.classes) == 6
    old = ContinualClassifier.from_hparams(source=run, task=1)  # a finished task still loads (grown head)
    assert old.classes == ["tone_burst", "up_chirp", "pink_noise", "brown_noise"]
    # Another hparam than the run's is refused, as for any rerun.
    with pytest.raises(SystemExit, match="holds a run started with other hparams: .*lr"):
        extend.run(run, new, ["--lr=0.1"])


def test_an_extension_killed_mid_task_resumes_to_the_same_matrix(finished_run, tmp_path):
    run, _, new = finished_run
    straight = extend.run(_copy(run, tmp_path, "straight"), new, ["--noprogressbar"])
    killed = _copy(run, tmp_path, "killed")
    cmd = [sys.executable, "-m", "soundcl.extend", killed, new, "--noprogressbar"]
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "modules"))
    task2 = os.path.join(killed, "save", "task2")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (os.path.isdir(task2) and any(n.startswith("CKPT+2") for n in os.listdir(task2))):
            assert proc.poll() is None, "the extension ended before it could be killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not os.path.exists(os.path.join(task2, "task_state.json"))
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Loading a checkpoint from" in resumed.stdout + resumed.stderr
    with open(os.path.join(killed, "results.json"), encoding="utf-8") as fin:
        assert json.load(fin)["accuracy_matrix"] == straight["accuracy_matrix"]
