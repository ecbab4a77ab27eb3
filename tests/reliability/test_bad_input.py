"""Bad audio and bad configuration: a clear error at start or a logged skip, never NaN."""
import csv
import logging
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import recipe_argv, run_recipe
from soundcl.core import config
from soundcl.data.audio import AudioPipeline, AudioReadError
from soundcl.core.brains import SupervisedBrain

HPARAMS = "hparams/synth/sup_train.yaml"


def _write_bad_files(audio_dir):
    """Replace clips of fold 10 (the test fold) by bad or unusual files.

    Returns (names expected to be rejected, names expected to load).
    """
    # Clips of classes 0-3 (file names {fsID}-{classID}-0-{n}.wav), which every
    # run below uses.
    names = sorted(n for n in os.listdir(audio_dir) if int(n.split("-")[1]) < 4)
    bad, good = {}, {}
    paths = {n: os.path.join(audio_dir, n) for n in names}
    # unusable
    open(paths[names[0]], "wb").close()  # empty file
    bad[names[0]] = "empty"
    with open(paths[names[1]], "rb") as f:
        header = f.read(30)
    with open(paths[names[1]], "wb") as f:
        f.write(header)  # truncated header
    bad[names[1]] = "truncated"
    with open(paths[names[2]], "wb") as f:
        f.write(b"<html>not audio at all</html>" * 20)
    bad[names[2]] = "not audio"
    nan = np.sin(np.arange(8000) / 5.0).astype(np.float32)
    nan[100] = np.nan
    nan[200] = np.inf
    sf.write(paths[names[3]], nan, 16000, subtype="FLOAT")
    bad[names[3]] = "nan"
    sf.write(paths[names[4]], np.zeros((0,), dtype=np.float32), 16000, subtype="PCM_16")
    bad[names[4]] = "zero length"
    # unusual but fine
    tone = lambda rate, seconds, ch=1: 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)[:, None].repeat(ch, 1)
    sf.write(paths[names[5]], tone(8000, 600), 8000, subtype="PCM_16")
    good[names[5]] = "10 minutes at 8 kHz"
    sf.write(paths[names[6]], tone(192000, 0.5), 192000, subtype="PCM_24")
    good[names[6]] = "192 kHz"
    sf.write(paths[names[7]], tone(44100, 0.5, 6), 44100, subtype="PCM_16")
    good[names[7]] = "6 channels"
    sf.write(paths[names[8]], tone(22050, 0.5).astype(np.float32), 22050, subtype="FLOAT")
    good[names[8]] = "32-bit float"
    sf.write(paths[names[9]], tone(11025, 0.5), 11025, subtype="PCM_U8")
    good[names[9]] = "8-bit"
    return bad, good


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory, synth_data_folder):
    root = tmp_path_factory.mktemp("bad") / "UrbanSound8K"
    shutil.copytree(synth_data_folder, root)
    bad, good = _write_bad_files(str(root / "audio" / "fold10"))
    return str(root), bad, good


def test_each_unusual_file_loads_and_each_bad_one_is_named(bad_folder):
    root, bad, good = bad_folder
    audio = AudioPipeline(sample_rate=16000)
    for name in good:
        wav = audio.load(os.path.join(root, "audio", "fold10", name))
        assert wav.ndim == 1 and torch.isfinite(wav).all() and wav.abs().max() > 0, name
    for name in bad:
        with pytest.raises(AudioReadError, match=name.split(".")[0]):
            audio.load(os.path.join(root, "audio", "fold10", name))


def test_bad_audio_stops_the_run_at_start_by_default(tmp_path, bad_folder):
    root, bad, _ = bad_folder
    with pytest.raises(RuntimeError) as err:
        run_recipe("sup_train", recipe_argv(HPARAMS, str(tmp_path), root, "--task_classes=[[0,1],[2,3]]"))
    message = str(err.value)
    assert "on_bad_audio=skip" in message
    assert any(name in message for name in bad)
    assert not list(tmp_path.rglob("CKPT*"))  # nothing was trained


def test_skip_leaves_bad_clips_out_and_lists_them(tmp_path, bad_folder):
    root, bad, good = bad_folder
    results = run_recipe(
        "sup_train",
        recipe_argv(HPARAMS, str(tmp_path), root, "--task_classes=[[0,1],[2,3]]",
                    "--on_bad_audio=skip", "--number_of_epochs=1"),
    )
    report = tmp_path / "sup_train_replay0" / "1986" / "bad_audio_report.csv"
    with open(report) as f:
        listed = {os.path.basename(row["wav"]) for row in csv.DictReader(f)}
    assert listed == set(bad)
    assert all(np.isfinite(v) for row in results["accuracy_matrix"] for v in row if v is not None)
    log = (tmp_path / "sup_train_replay0" / "1986" / "train_log.txt").read_text()
    assert "nan" not in log.lower()


@pytest.mark.parametrize(
    "override, expected",
    [
        ("--replay_num_kep=3", "unknown hparam 'replay_num_kep'"),
        ("--task_classes=[[0,1],[1,2]]", "task_classes"),
        ("--task_classes=[[0,11]]", "task_classes"),
        ("--replay_num_keep=some", "replay_num_keep"),
        ("--emb_norm_type=batch", "emb_norm_type='batch'"),
        ("--on_bad_audio=ignore", "on_bad_audio"),
        ("--number_of_epochs=0", "number_of_epochs"),
    ],
)
def test_bad_configuration_fails_at_start_in_one_line(tmp_path, synth_data_folder, override, expected):
    with pytest.raises(SystemExit) as err:
        run_recipe("sup_train", recipe_argv(HPARAMS, str(tmp_path), synth_data_folder, override))
    message = str(err.value.code)
    assert expected in message and "\n" not in message
    assert not (tmp_path / "sup_train_replay0").exists()  # before anything was written


@pytest.mark.parametrize(
    "hparams, expected",
    [
        ({"linclf_train_type": "everything"}, "linclf_train_type='everything' is not valid: expected one of seen, subset, buffer, full"),
        ({"mem_manage": "fifo"}, "mem_manage='fifo'"),
        ({"uncert_metric": "entropy"}, "uncert_metric"),
        ({"memory_size": 5, "n_classes": 10, "mode": "replay"}, "memory_size=5"),
        ({"memory_size": 3, "n_classes": 50, "task_classes": [[0, 1], [2, 3]]}, "number of classes, 4"),
        ({"ssl_checkpoints_dir": "/no/such/folder"}, "ssl_checkpoints_dir='/no/such/folder'"),
        ({"ssl_checkpoints_dir": None}, "ssl_checkpoints_dir=None"),
    ],
)
def test_values_of_other_recipes_are_checked(hparams, expected):
    with pytest.raises(config.ConfigError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        config.validate(hparams)


def test_non_finite_loss_names_the_clips(caplog):
    brain = SupervisedBrain(modules={"m": torch.nn.Linear(1, 1)}, hparams={"seed": 1}, run_opts={"nonfinite_patience": 5})
    brain.batch_ids = ["clip_a", "clip_b"]
    brain.nonfinite_count = 0
    with caplog.at_level(logging.WARNING):
        brain.check_loss_isfinite(torch.tensor(float("nan")))
    assert "clip_a, clip_b" in caplog.text
