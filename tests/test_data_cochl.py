"""Tests of soundcl.data.cochl on a generated CochlScene folder (it ships no metadata:
the ``{Train,Val,Test}/<Class>/*.wav`` layout is the metadata)."""

import os
import shutil

import numpy as np
import pytest
import soundfile

from soundcl.data import cochl, manifest
from soundcl.testing import miniatures


@pytest.fixture(scope="module")
def cochl_mini(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("cochl") / "CochlScene")
    return miniatures.make_cochl(folder, clips_per_class=2, clip_seconds=0.25)


def _copy(folder, tmp_path):
    target = str(tmp_path / "CochlScene")
    shutil.copytree(folder, target)
    return target


def test_prepare_generated_folder(cochl_mini, tmp_path):
    result = cochl.prepare(cochl_mini, str(tmp_path / "save"))
    assert result["classes"] == cochl.CLASSES and len(result["classes"]) == 13
    # Default: 4 drawn tasks covering the 13 classes once.
    assert result["n_tasks"] == 4
    assert sorted(sum(result["task_classes"], [])) == list(range(13))
    assert sorted(len(t) for t in result["task_classes"]) == [3, 3, 3, 4]
    for split, fold in cochl.FOLD_OF_SPLIT.items():
        rows = [r for p in result["manifests"][split] for r in manifest.read_manifest(p)]
        assert len(rows) == 13 * 2
        assert {r["fold"] for r in rows} == {fold}
        for row in rows:
            assert row["label"] == cochl.CLASSES[row["class_idx"]]
            assert row["wav"].startswith(os.path.join(cochl_mini, cochl.SPLIT_FOLDERS[split], row["label"]))
            assert row["ID"].startswith(row["label"] + "_user")
            assert row["duration"] == pytest.approx(0.25)
    explicit = cochl.prepare(cochl_mini, str(tmp_path / "save2"), task_classes=[[12, 0], [5]])
    assert explicit["n_tasks"] == 2
    rows = manifest.read_manifest(explicit["manifests"]["test"][0])
    assert {r["label"] for r in rows} == {"SubwayStation", "Bus"}


def test_layout_errors(cochl_mini, tmp_path):
    folder = _copy(cochl_mini, tmp_path)
    shutil.rmtree(os.path.join(folder, "Val"))
    with pytest.raises(FileNotFoundError, match=r"Val.*\{Train,Val,Test\}/<Class>/\*\.wav"):
        cochl.prepare(folder, str(tmp_path / "save"))
    # Pointing at the parent of the corpus: the hint names the right folder.
    with pytest.raises(FileNotFoundError, match="found Train/ under"):
        cochl.prepare(os.path.dirname(cochl_mini), str(tmp_path / "save"))

    folder2 = str(tmp_path / "other")
    shutil.copytree(cochl_mini, folder2)
    shutil.rmtree(os.path.join(folder2, "Test", "Kitchen"))
    with pytest.raises(FileNotFoundError, match=r"missing in Test: \['Kitchen'\]"):
        cochl.prepare(folder2, str(tmp_path / "save"))


def test_unreadable_clip_is_reported(cochl_mini, tmp_path):
    folder = _copy(cochl_mini, tmp_path)
    broken = os.path.join(folder, "Train", "Bus", "Bus_user9999_1_000.wav")
    with open(broken, "wb") as f:
        f.write(b"not a wav file")
    with pytest.raises(RuntimeError, match="1 CochlScene Train audio files cannot be read") as err:
        cochl.prepare(folder, str(tmp_path / "save"))
    assert broken in str(err.value)


def test_rerun_reuses_until_files_change(cochl_mini, tmp_path):
    folder = _copy(cochl_mini, tmp_path)
    save = str(tmp_path / "save")
    result = cochl.prepare(folder, save, n_tasks=2)
    path = result["manifests"]["valid"][1]
    stamp = os.stat(path).st_mtime_ns
    assert cochl.prepare(folder, save, n_tasks=2) == result
    assert os.stat(path).st_mtime_ns == stamp
    assert cochl.prepare(folder, save, skip_prep=True) == result
    # A new clip changes the listing, so the manifests are rebuilt with it.
    label = cochl.CLASSES[result["task_classes"][1][0]]
    name = f"{label}_user0777_1_000"
    soundfile.write(os.path.join(folder, "Val", label, name + ".wav"), np.zeros(4410), 44100)
    cochl.prepare(folder, save, n_tasks=2)
    assert name in {r["ID"] for r in manifest.read_manifest(path)}
    # A different task split is not served from the old manifests.
    other = cochl.prepare(folder, save, n_tasks=3)
    assert other["n_tasks"] == 3 and not os.path.exists(os.path.join(save, "train_task3.csv"))
