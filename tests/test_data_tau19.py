"""TAU 2019 preparation on the real metadata files (a subset of the official
split's lines, verbatim), with generated audio for the rows used."""
import os
import shutil

import numpy as np
import pytest
import soundfile

from soundcl.data import tau19
from soundcl.data.manifest import read_manifest

TAU = "TAU-urban-acoustic-scenes-2019-development"
TASKS = [[0, 1], [2, 3]]  # airport, bus | metro, metro_station
PER_SCENE = 30


def _subset(src, dst, scenes, per_scene):
    """Keep the header and the first ``per_scene`` lines of each scene, verbatim."""
    with open(src, newline="", encoding="utf-8") as f:
        lines = f.readlines()
    kept, counts = [lines[0]], {}
    for line in lines[1:]:
        scene = line.split("\t")[1].strip()
        if scene in scenes and counts.get(scene, 0) < per_scene:
            counts[scene] = counts.get(scene, 0) + 1
            kept.append(line)
    with open(dst, "w", newline="", encoding="utf-8") as f:
        f.writelines(kept)
    return [line.split("\t")[0] for line in kept[1:]]


@pytest.fixture(scope="module")
def tau_folder(shared_data_dir, tmp_path_factory):
    real = os.path.join(shared_data_dir, TAU)
    root = tmp_path_factory.mktemp("tau") / TAU
    os.makedirs(root / "evaluation_setup")
    os.makedirs(root / "audio")
    shutil.copy(os.path.join(real, "meta.csv"), root / "meta.csv")
    scenes = {"airport", "bus", "metro", "metro_station"}
    files = []
    for name in ("fold1_train.csv", "fold1_evaluate.csv"):
        files += _subset(os.path.join(real, "evaluation_setup", name), root / "evaluation_setup" / name, scenes, PER_SCENE)
    for relpath in files:  # 48 kHz, stereo, 24 bit as the real clips
        soundfile.write(str(root / relpath), np.zeros((480, 2)), 48000, subtype="PCM_24")
    return str(root)


def test_real_split_is_read(shared_data_dir):
    train, evaluate, classes = tau19.read_metadata(os.path.join(shared_data_dir, TAU))
    assert len(train) == 9185 and len(evaluate) == 4185
    assert classes == ["airport", "bus", "metro", "metro_station", "park", "public_square",
                       "shopping_mall", "street_pedestrian", "street_traffic", "tram"]
    assert train[0]["identifier"] == "lisbon-1000"
    train_locations = {e["identifier"] for e in train}
    assert not train_locations & {e["identifier"] for e in evaluate}


def test_prepare_writes_the_fold1_split(tau_folder, tmp_path):
    info = tau19.prepare(tau_folder, str(tmp_path), task_classes=TASKS, valid_fraction=0.2, seed=0)
    assert info["n_tasks"] == 2 and len(info["classes"]) == 10
    rows = {s: [read_manifest(p) for p in paths] for s, paths in info["manifests"].items()}
    for k, classes in enumerate(TASKS):
        train, valid, test = rows["train"][k], rows["valid"][k], rows["test"][k]
        assert {r["class_idx"] for r in train + valid + test} == set(classes)
        assert len(train) + len(valid) == PER_SCENE * 2 and len(test) == PER_SCENE * 2
        assert valid and len(valid) < len(train)
        location = lambda r: "-".join(r["ID"].split("-")[1:3])  # noqa: E731
        assert not {location(r) for r in train} & {location(r) for r in valid}
        assert not {location(r) for r in train + valid} & {location(r) for r in test}
        assert all(r["duration"] == pytest.approx(0.01) for r in test)
        assert all(r["label"] == info["classes"][r["class_idx"]] for r in train)


def test_valid_split_test_is_cssl_sounds_split(tau_folder, tmp_path):
    """valid_split: test: all of fold1_train trains, the test clips (fold1_test.csv) validate."""
    info = tau19.prepare(tau_folder, str(tmp_path), task_classes=TASKS, valid_split="test")
    rows = {s: [read_manifest(p) for p in paths] for s, paths in info["manifests"].items()}
    for k in range(len(TASKS)):
        assert len(rows["train"][k]) == PER_SCENE * 2
        assert [r["ID"] for r in rows["valid"][k]] == [r["ID"] for r in rows["test"][k]]
    with pytest.raises(ValueError, match="valid_split"):
        tau19.prepare(tau_folder, str(tmp_path / "other"), task_classes=TASKS, valid_split="fold")
    from soundcl.core import config

    assert config.CHOICES["valid_split"] == tau19.VALID_SPLITS  # checked at start


def test_missing_audio_and_bad_layout_are_reported(tau_folder, tmp_path):
    audio = os.path.join(tau_folder, "audio")
    victim = os.path.join(audio, sorted(os.listdir(audio))[0])
    os.rename(victim, victim + ".away")
    try:
        with pytest.raises(FileNotFoundError, match="1 TAU 2019 audio files .* are missing"):
            tau19.prepare(tau_folder, str(tmp_path), task_classes=TASKS)
    finally:
        os.rename(victim + ".away", victim)
    with pytest.raises(ValueError, match="unknown class 10"):
        tau19.prepare(tau_folder, str(tmp_path), task_classes=[[0, 10]])
    with pytest.raises(FileNotFoundError, match="meta.csv"):
        tau19.prepare(str(tmp_path / "nowhere"), str(tmp_path), task_classes=TASKS)
