"""Tests of soundcl.data.us8k (and the shared helpers of soundcl.data).

They run on the real UrbanSound8K metadata file from the shared data folder. The audio
cannot be downloaded here, so tiny generated wav files stand in for a subset of rows; the
subset's metadata keeps the original header and lines verbatim, so the parser meets the
real file format.
"""

import csv
import logging
import os
import shutil

import numpy as np
import pytest
import soundfile

from conftest import require_shared
from soundcl.data import manifest, marker, probe, splits, us8k

REAL_CLASSES = [
    "air_conditioner",
    "car_horn",
    "children_playing",
    "dog_bark",
    "drilling",
    "engine_idling",
    "gun_shot",
    "jackhammer",
    "siren",
    "street_music",
]
ROWS_PER_CELL = 3  # rows kept per (class, fold)
CLIP_SECONDS = 0.1
# Formats cycled over the stand-in files, as the real corpus mixes them.
FORMATS = [(44100, 2, "PCM_16"), (48000, 1, "PCM_24"), (22050, 1, "PCM_U8"), (96000, 2, "PCM_24")]


@pytest.fixture(scope="module")
def real_metadata(shared_data_dir):
    path = os.path.join(shared_data_dir, "UrbanSound8K", "metadata", "UrbanSound8K.csv")
    return require_shared(path, "real UrbanSound8K metadata")


def _read_raw(metadata_file):
    """Header line and (raw line, parsed row) pairs, line endings kept."""
    with open(metadata_file, encoding="utf-8", newline="") as f:
        lines = f.readlines()
    parsed = list(csv.DictReader(lines))
    return lines[0], list(zip(lines[1:], parsed))


def _write_wav(path, index):
    sample_rate, channels, subtype = FORMATS[index % len(FORMATS)]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    silence = np.zeros((int(CLIP_SECONDS * sample_rate), channels))
    soundfile.write(path, silence, sample_rate, subtype=subtype)


def _make_subset(root, real_metadata, rows_per_cell=ROWS_PER_CELL):
    """UrbanSound8K folder with the first rows of each (class, fold) and their audio.

    Returns the kept parsed rows.
    """
    header, rows = _read_raw(real_metadata)
    kept, per_cell = [], {}
    for line, row in rows:
        cell = (row["classID"], row["fold"])
        if per_cell.get(cell, 0) < rows_per_cell:
            per_cell[cell] = per_cell.get(cell, 0) + 1
            kept.append((line, row))
    os.makedirs(os.path.join(root, "metadata"))
    metadata_file = os.path.join(root, "metadata", "UrbanSound8K.csv")
    with open(metadata_file, "w", encoding="utf-8", newline="") as f:
        f.write(header + "".join(line for line, _ in kept))
    for i, (_, row) in enumerate(kept):
        _write_wav(os.path.join(root, "audio", f"fold{row['fold']}", row["slice_file_name"]), i)
    return [row for _, row in kept]


@pytest.fixture(scope="module")
def subset(tmp_path_factory, real_metadata):
    """(data folder, kept metadata rows) of the stand-in subset; shared, do not modify."""
    root = str(tmp_path_factory.mktemp("us8k") / "UrbanSound8K")
    rows = _make_subset(root, real_metadata)
    return root, rows


@pytest.fixture(scope="module")
def prepared(subset, tmp_path_factory):
    data_folder, rows = subset
    save_folder = str(tmp_path_factory.mktemp("us8k_save"))
    result = us8k.prepare(data_folder, save_folder)
    return result, rows


def _all_rows(paths):
    return [row for path in paths for row in manifest.read_manifest(path)]


def _mtimes(result):
    paths = [p for split_paths in result["manifests"].values() for p in split_paths]
    return {p: os.stat(p).st_mtime_ns for p in paths}


# ---------------------------------------------------------------------------------------
# Splits and labels
# ---------------------------------------------------------------------------------------
def test_subset_covers_every_class_and_fold(subset):
    _, rows = subset
    assert len(rows) == 10 * 10 * ROWS_PER_CELL


def test_fold_split(prepared):
    result, rows = prepared
    expected = {"train": set(range(1, 9)), "valid": {9}, "test": {10}}
    for split, folds in expected.items():
        manifest_rows = _all_rows(result["manifests"][split])
        assert {r["fold"] for r in manifest_rows} == folds
        expected_ids = {r["slice_file_name"][:-4] for r in rows if int(r["fold"]) in folds}
        assert sorted(r["ID"] for r in manifest_rows) == sorted(expected_ids)


def test_task_split_with_default_task_classes(prepared):
    result, _ = prepared
    assert result["n_tasks"] == 5
    for split in ("train", "valid", "test"):
        paths = result["manifests"][split]
        assert [os.path.basename(p) for p in paths] == [f"{split}_task{k}.csv" for k in range(5)]
        for task, path in enumerate(paths):
            classes = {r["class_idx"] for r in manifest.read_manifest(path)}
            assert classes == set(us8k.DEFAULT_TASK_CLASSES[task]), (split, task)


def test_label_order_follows_class_id(prepared):
    result, _ = prepared
    assert result["classes"] == REAL_CLASSES
    assert result["classes"][0] == "air_conditioner" and result["classes"][3] == "dog_bark"
    for row in _all_rows(result["manifests"]["train"]):
        assert row["label"] == REAL_CLASSES[row["class_idx"]]


def test_manifest_rows(prepared, subset):
    result, _ = prepared
    data_folder, _ = subset
    rows = _all_rows(result["manifests"]["test"])
    assert list(rows[0]) == manifest.MANIFEST_FIELDS
    for row in rows:
        assert os.path.isabs(row["wav"]) and os.path.isfile(row["wav"])
        assert row["wav"] == os.path.join(
            os.path.abspath(data_folder), "audio", f"fold{row['fold']}", row["ID"] + ".wav"
        )
        # Mixed sample rates / channels / bit depths all give the true length.
        assert row["duration"] == pytest.approx(CLIP_SECONDS, abs=1e-4)


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------
def test_full_real_csv_without_audio_lists_missing_files(tmp_path, real_metadata):
    root = tmp_path / "UrbanSound8K"
    (root / "metadata").mkdir(parents=True)
    (root / "audio").mkdir()
    shutil.copy(real_metadata, root / "metadata" / "UrbanSound8K.csv")
    with pytest.raises(FileNotFoundError) as info:
        us8k.prepare(str(root), str(tmp_path / "save"))
    message = str(info.value)
    assert "8732" in message
    assert "and 8722 more" in message
    _, rows = _read_raw(real_metadata)
    first = rows[0][1]
    first_wav = os.path.join(str(root), "audio", f"fold{first['fold']}", first["slice_file_name"])
    assert first_wav in message
    assert not os.path.exists(tmp_path / "save" / marker.PREP_OPTS_FILE)


def test_missing_metadata_names_layout(tmp_path):
    (tmp_path / "audio").mkdir()
    with pytest.raises(FileNotFoundError, match="metadata/UrbanSound8K.csv") as info:
        us8k.prepare(str(tmp_path), str(tmp_path / "save"))
    assert us8k.EXPECTED_LAYOUT in str(info.value)


def test_missing_audio_folder_names_layout(tmp_path, real_metadata):
    (tmp_path / "metadata").mkdir()
    shutil.copy(real_metadata, tmp_path / "metadata" / "UrbanSound8K.csv")
    with pytest.raises(FileNotFoundError, match="audio folder") as info:
        us8k.prepare(str(tmp_path), str(tmp_path / "save"))
    assert "<data_folder>/audio/fold1..10/" in str(info.value)


def test_unreadable_audio_is_named(tmp_path, real_metadata):
    root = str(tmp_path / "UrbanSound8K")
    rows = _make_subset(root, real_metadata, rows_per_cell=1)
    bad = os.path.join(root, "audio", f"fold{rows[0]['fold']}", rows[0]["slice_file_name"])
    with open(bad, "wb") as f:
        f.write(b"not a wav file")
    with pytest.raises(RuntimeError, match="1 UrbanSound8K audio files cannot be read") as info:
        us8k.prepare(root, str(tmp_path / "save"))
    assert bad in str(info.value)


@pytest.mark.parametrize(
    "task_classes, pattern",
    [
        ([[0, 1], [1, 2]], r"class 1 appears in both task 0 and task 1"),
        ([[0, 1], [2, 10]], r"task 1 .* unknown class 10: classes must be in 0\.\.9"),
        ([[0, -1]], r"unknown class -1"),
        ([[0, 1], []], r"task 1 .* is empty"),
        ([], r"task_classes is empty"),
        ([[0, 0]], r"class 0 appears twice in task 0"),
        ([[0, 1.5]], r"non-integer class 1\.5"),
    ],
)
def test_bad_task_classes(subset, tmp_path, task_classes, pattern):
    data_folder, _ = subset
    with pytest.raises(ValueError, match=pattern):
        us8k.prepare(data_folder, str(tmp_path / "save"), task_classes=task_classes)


@pytest.mark.parametrize(
    "folds, pattern",
    [
        (dict(train_folds=range(1, 10)), r"folds \[9\] are in both train_folds and valid_folds"),
        (dict(test_folds=(11,)), r"test_folds has invalid folds \[11\]: folds are 1\.\.10"),
        (dict(train_folds=(0, 1)), r"train_folds has invalid folds \[0\]"),
        (dict(valid_folds=()), r"valid_folds is empty"),
        (dict(train_folds=(1, 1, 2)), r"lists a fold twice"),
    ],
)
def test_bad_folds(subset, tmp_path, folds, pattern):
    data_folder, _ = subset
    with pytest.raises(ValueError, match=pattern):
        us8k.prepare(data_folder, str(tmp_path / "save"), **folds)


def test_custom_folds_and_tasks(subset, tmp_path):
    data_folder, rows = subset
    result = us8k.prepare(
        data_folder,
        str(tmp_path / "save"),
        task_classes=[(0, 1), (2,)],
        train_folds=(1, 2),
        valid_folds=[3],
        test_folds=np.array([4, 5]),  # numpy ints are accepted
    )
    assert result["n_tasks"] == 2
    test_rows = _all_rows(result["manifests"]["test"])
    assert {r["fold"] for r in test_rows} == {4, 5}
    assert {r["class_idx"] for r in test_rows} == {0, 1, 2}
    assert len(test_rows) == 2 * 3 * ROWS_PER_CELL


# ---------------------------------------------------------------------------------------
# Reuse of prepared manifests
# ---------------------------------------------------------------------------------------
def test_manifests_reused_on_rerun_and_remade_on_change(subset, tmp_path, caplog):
    data_folder, _ = subset
    save = str(tmp_path / "save")
    first = us8k.prepare(data_folder, save)
    before = _mtimes(first)

    with caplog.at_level(logging.INFO, logger="soundcl.data.us8k"):
        # Same tasks given as tuples: still the same options.
        as_tuples = [tuple(t) for t in us8k.DEFAULT_TASK_CLASSES]
        second = us8k.prepare(data_folder, save, task_classes=as_tuples)
    assert "reusing prepared manifests" in caplog.text
    assert second == first
    assert _mtimes(second) == before

    # Other task classes: manifests are rewritten, and those of dropped tasks removed.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="soundcl.data.us8k"):
        third = us8k.prepare(data_folder, save, task_classes=[[0, 1], [2, 3]])
    assert "reusing prepared manifests" not in caplog.text
    assert {r["class_idx"] for r in manifest.read_manifest(third["manifests"]["train"][0])} == {0, 1}
    assert not os.path.exists(os.path.join(save, "train_task2.csv"))
    manifests = [f"{s}_task{k}.csv" for s in ("train", "valid", "test") for k in (0, 1)]
    assert sorted(os.listdir(save)) == sorted([marker.PREP_OPTS_FILE] + manifests)


def test_manifests_remade_when_metadata_or_manifest_changes(subset, tmp_path, caplog):
    data_folder, _ = subset
    save = str(tmp_path / "save")
    result = us8k.prepare(data_folder, save, task_classes=[[0, 1]])
    metadata_file = os.path.join(data_folder, us8k.METADATA_RELPATH)
    opts = {
        "dataset": "UrbanSound8K",
        "data_folder": os.path.abspath(data_folder),
        "task_classes": [[0, 1]],
        "folds": {"train": list(range(1, 9)), "valid": [9], "test": [10]},
    }
    assert marker.prep_is_current(save, opts, metadata_file=metadata_file)

    os.remove(result["manifests"]["valid"][0])
    assert not marker.prep_is_current(save, opts, metadata_file=metadata_file)
    with caplog.at_level(logging.INFO, logger="soundcl.data.us8k"):
        us8k.prepare(data_folder, save, task_classes=[[0, 1]])
    assert "reusing" not in caplog.text
    assert os.path.isfile(result["manifests"]["valid"][0])

    # A touched metadata file (another mtime) invalidates the manifests too.
    stat = os.stat(metadata_file)
    try:
        os.utime(metadata_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        assert not marker.prep_is_current(save, opts, metadata_file=metadata_file)
    finally:
        os.utime(metadata_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_skip_prep_writes_nothing(subset, tmp_path):
    data_folder, _ = subset
    save = tmp_path / "save"
    result = us8k.prepare(data_folder, str(save), skip_prep=True)
    assert result["classes"] == REAL_CLASSES
    assert result["manifests"]["train"][0] == str(save / "train_task0.csv")
    assert not save.exists()


# ---------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------
def test_manifest_round_trip(tmp_path):
    rows = [
        dict(ID="a", duration=1.25, wav="/x/a.wav", class_idx=3, label="dog_bark", fold=2),
        dict(ID="b,c", duration=0.5, wav="/x/b c.wav", class_idx=0, label="air", fold=10),
    ]
    path = str(tmp_path / "sub" / "m.csv")
    manifest.write_manifest(path, rows)
    assert manifest.read_manifest(path) == rows
    assert os.listdir(tmp_path / "sub") == ["m.csv"]  # no temporary file left behind


def test_missing_files_error_lists_first_ten_and_count():
    missing = [f"/data/f{i}.wav" for i in range(25)]
    err = probe.missing_files_error(missing, "audio files")
    assert isinstance(err, FileNotFoundError)
    message = str(err)
    assert message.startswith("25 audio files are missing")
    assert "/data/f9.wav" in message and "/data/f10.wav" not in message
    assert "... and 15 more" in message


def test_validate_task_classes_normalises():
    assert splits.validate_task_classes(((1, np.int64(2)), [0]), 3) == [[1, 2], [0]]
