"""Tests of soundcl.data.tau22 on the real TAU 2022 Mobile test split file.

The miniature (:func:`soundcl.testing.miniatures.make_tau22`) copies real ``test.csv`` lines
verbatim and generates training rows, ``meta.csv`` and the ``split{N}.csv`` subsets in
the same tab-separated format.
"""

import os
import shutil

import pytest

from conftest import require_shared
from soundcl.data import manifest, tau22
from soundcl.testing import miniatures

REAL_DEVICES = {"a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"}


@pytest.fixture(scope="module")
def real_test_csv(shared_data_dir):
    path = os.path.join(
        shared_data_dir, "TAU-urban-acoustic-scenes-2022-mobile-development", "split_setup", "test.csv"
    )
    return require_shared(path, "real TAU 2022 Mobile test split")


@pytest.fixture(scope="module")
def tau22_mini(tmp_path_factory, real_test_csv):
    folder = str(tmp_path_factory.mktemp("tau22") / "TAU22")
    shared = os.path.dirname(os.path.dirname(os.path.dirname(real_test_csv)))
    return miniatures.make_tau22(
        folder, shared_data_dir=shared, train_clips_per_class=6, test_clips_per_class=3,
        clip_seconds=0.25,
    )


def _copy(folder, tmp_path):
    target = str(tmp_path / "TAU22")
    shutil.copytree(folder, target)
    return target


def _rows(result, split):
    return [r for p in result["manifests"][split] for r in manifest.read_manifest(p)]


def test_real_test_split_parses(real_test_csv):
    rows = tau22.read_tab_file(real_test_csv, tau22.SPLIT_COLUMNS)
    assert len(rows) == 29680
    assert len({r["scene_label"] for r in rows}) == 10
    assert {tau22.parse_device(r["filename"]) for r in rows} == REAL_DEVICES
    with pytest.raises(ValueError, match="lacks the columns"):
        tau22.read_tab_file(real_test_csv, tau22.META_COLUMNS)


def test_prepare_miniature(tau22_mini, real_test_csv, tmp_path):
    with open(real_test_csv, encoding="utf-8", newline="") as f:
        real_lines = set(f.readlines())
    with open(os.path.join(tau22_mini, "split_setup", "test.csv"), encoding="utf-8", newline="") as f:
        mini_lines = f.readlines()
    assert set(mini_lines) <= real_lines  # header and rows verbatim

    result = tau22.prepare(tau22_mini, str(tmp_path / "save"), valid_fraction=0.3)
    assert len(result["classes"]) == 10 and result["classes"] == sorted(result["classes"])
    assert result["n_tasks"] == 5
    test_rows = _rows(result, "test")
    assert {r["ID"] + ".wav" for r in test_rows} == {
        os.path.basename(line.split("\t")[0]) for line in mini_lines[1:]
    }
    for split in ("train", "valid", "test"):
        for row in _rows(result, split):
            assert row["device"] == row["ID"].rsplit("-", 1)[1]
            assert row["device"] in REAL_DEVICES
            assert row["fold"] == (2 if split == "test" else 1)
            assert result["classes"][row["class_idx"]] == row["label"]
    assert len({r["device"] for r in test_rows}) >= 3
    # Validation takes whole recording locations, per scene, from the training subset.
    train, valid = _rows(result, "train"), _rows(result, "valid")
    assert len(train) + len(valid) == 10 * 6
    location = lambda row: tuple(row["ID"].split("-")[1:3])
    assert not {location(r) for r in train} & {location(r) for r in valid}
    assert {r["class_idx"] for r in valid} == {r["class_idx"] for r in train} == set(range(10))


def test_subsets(tau22_mini, tmp_path):
    sizes = {}
    for subset in (5, 50, 100):
        result = tau22.prepare(tau22_mini, str(tmp_path / f"s{subset}"), subset=subset, valid_fraction=0.0)
        sizes[subset] = len(_rows(result, "train"))
        assert len(_rows(result, "test")) == 30
    assert sizes == {5: 10, 50: 30, 100: 60}
    with pytest.raises(ValueError, match="subset must be one of"):
        tau22.prepare(tau22_mini, str(tmp_path / "bad"), subset=20)


def test_layout_errors_and_missing_audio(tau22_mini, tmp_path):
    folder = _copy(tau22_mini, tmp_path)
    os.remove(os.path.join(folder, "split_setup", "split10.csv"))
    with pytest.raises(FileNotFoundError, match=r"split10\.csv.*Expected"):
        tau22.prepare(folder, str(tmp_path / "save"), subset=10)
    wavs = sorted(os.listdir(os.path.join(folder, "audio")))
    for name in wavs[:3]:
        os.remove(os.path.join(folder, "audio", name))
    with pytest.raises(FileNotFoundError, match="3 TAU 2022 Mobile audio files"):
        tau22.prepare(folder, str(tmp_path / "save"))
    os.remove(os.path.join(folder, "meta.csv"))
    with pytest.raises(FileNotFoundError, match=r"meta\.csv.*split_setup"):
        tau22.prepare(folder, str(tmp_path / "save"))


def test_dcase2022_evaluation_setup_fallback(tau22_mini, tmp_path):
    folder = _copy(tau22_mini, tmp_path)
    setup = os.path.join(folder, "split_setup")
    os.makedirs(os.path.join(folder, "evaluation_setup"))
    shutil.move(os.path.join(setup, "split100.csv"), os.path.join(folder, "evaluation_setup", "fold1_train.csv"))
    shutil.move(os.path.join(setup, "test.csv"), os.path.join(folder, "evaluation_setup", "fold1_evaluate.csv"))
    result = tau22.prepare(folder, str(tmp_path / "save"), task_classes=[[0, 1]], valid_fraction=0.0)
    assert len(_rows(result, "train")) == 12 and len(_rows(result, "test")) == 6


def test_rerun_reuses_manifests(tau22_mini, tmp_path):
    folder = _copy(tau22_mini, tmp_path)
    save = str(tmp_path / "save")
    result = tau22.prepare(folder, save, n_tasks=2)
    path = result["manifests"]["train"][0]
    stamp = os.stat(path).st_mtime_ns
    assert tau22.prepare(folder, save, n_tasks=2) == result
    assert os.stat(path).st_mtime_ns == stamp
    assert tau22.prepare(folder, save, skip_prep=True) == result
    # An edited split file invalidates the manifests.
    split_file = os.path.join(folder, "split_setup", "split100.csv")
    with open(split_file, encoding="utf-8") as f:
        lines = f.readlines()
    with open(split_file, "w", encoding="utf-8") as f:
        f.writelines(lines[:-1])
    tau22.prepare(folder, save, n_tasks=2)
    total = sum(len(manifest.read_manifest(p)) for split in ("train", "valid") for p in result["manifests"][split])
    assert total == 10 * 6 - 1
