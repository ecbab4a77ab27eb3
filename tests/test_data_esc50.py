"""ESC-50 preparation on the real metadata file, with generated audio for the rows used."""
import csv
import os
import shutil

import numpy as np
import pytest
import soundfile

from soundcl.data import esc50
from soundcl.data.manifest import read_manifest

TASKS = [[0, 1], [2, 3]]


def _write_audio(folder, filenames):
    os.makedirs(folder, exist_ok=True)
    for name in filenames:
        soundfile.write(os.path.join(folder, name), np.zeros(441, dtype=np.int16), 44100, subtype="PCM_16")


@pytest.fixture(scope="module")
def esc50_folder(shared_data_dir, tmp_path_factory):
    real = os.path.join(shared_data_dir, "ESC-50-master", "meta", "esc50.csv")
    root = tmp_path_factory.mktemp("esc50") / "ESC-50-master"
    os.makedirs(root / "meta")
    shutil.copy(real, root / "meta" / "esc50.csv")
    with open(real, newline="", encoding="utf-8") as f:
        used = [r["filename"] for r in csv.DictReader(f) if int(r["target"]) in {c for t in TASKS for c in t}]
    _write_audio(str(root / "audio"), used)
    return str(root)


def test_real_metadata_is_read(shared_data_dir):
    entries, classes = esc50.read_metadata(os.path.join(shared_data_dir, "ESC-50-master", "meta", "esc50.csv"))
    assert len(entries) == 2000 and len(classes) == 50
    assert classes[0] == "dog" and sorted({e["fold"] for e in entries}) == [1, 2, 3, 4, 5]
    assert all(sum(e["fold"] == f for e in entries) == 400 for f in range(1, 6))
    assert not entries[0]["filename"].endswith("\r")


@pytest.mark.parametrize("test_fold", [1, 4])
def test_prepare_one_test_fold(esc50_folder, tmp_path, test_fold):
    info = esc50.prepare(esc50_folder, str(tmp_path), task_classes=TASKS, test_fold=test_fold, valid_fraction=0.2, seed=3)
    assert info["n_tasks"] == 2 and info["classes"][:2] == ["dog", "rooster"]
    rows = {s: [read_manifest(p) for p in paths] for s, paths in info["manifests"].items()}
    for k, classes in enumerate(TASKS):
        train, valid, test = rows["train"][k], rows["valid"][k], rows["test"][k]
        assert {r["class_idx"] for r in train + valid + test} == set(classes)
        assert all(r["fold"] == test_fold for r in test) and len(test) == 8 * len(classes)
        assert all(r["fold"] != test_fold for r in train + valid)
        assert len(train) + len(valid) == 32 * len(classes)
        assert 0.15 <= len(valid) / (len(train) + len(valid)) <= 0.35
        assert not {r["ID"] for r in train} & {r["ID"] for r in valid}
        # A recording (src_file, the middle of the file name) is never split.
        src = lambda r: r["ID"].split("-")[1]  # noqa: E731
        assert not {src(r) for r in train} & {src(r) for r in valid}
        assert all(os.path.isfile(r["wav"]) and r["duration"] == pytest.approx(0.01) for r in train)


def test_prepare_is_deterministic_and_reused(esc50_folder, tmp_path):
    a = esc50.prepare(esc50_folder, str(tmp_path / "a"), task_classes=TASKS, seed=1)
    b = esc50.prepare(esc50_folder, str(tmp_path / "b"), task_classes=TASKS, seed=1)
    assert read_manifest(a["manifests"]["valid"][0]) == read_manifest(b["manifests"]["valid"][0])
    stamp = os.stat(a["manifests"]["train"][0]).st_mtime_ns
    esc50.prepare(esc50_folder, str(tmp_path / "a"), task_classes=TASKS, seed=1)
    assert os.stat(a["manifests"]["train"][0]).st_mtime_ns == stamp


def test_bad_input_is_reported(esc50_folder, tmp_path):
    with pytest.raises(ValueError, match="test_fold"):
        esc50.prepare(esc50_folder, str(tmp_path), task_classes=TASKS, test_fold=6)
    with pytest.raises(FileNotFoundError, match="40 ESC-50 audio files .* are missing"):
        esc50.prepare(esc50_folder, str(tmp_path), task_classes=[[0, 1], [4]])
    with pytest.raises(FileNotFoundError, match="esc50.csv"):
        esc50.prepare(str(tmp_path / "nowhere"), str(tmp_path), task_classes=TASKS)
