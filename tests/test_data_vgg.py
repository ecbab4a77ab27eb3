"""Tests of soundcl.data.vgg on the real VGGSound metadata files with generated audio.

The shared folder holds the first lines of ``vggsound.csv`` (``vggsound_head3.csv``), the
official test list (``test.csv``) and the class table (``stat.csv``). The miniatures
(:func:`soundcl.testing.miniatures.make_vgg`) take their (youtube id, start, label) triples
from ``test.csv`` and write ``vggsound.csv`` in the real format.
"""

import csv
import os
import shutil

import pytest

from conftest import require_shared
from soundcl.data import manifest, vgg
from soundcl.testing import miniatures

N_CLASSES = 4
TRAIN_PER_CLASS = 4
TEST_PER_CLASS = 2


@pytest.fixture(scope="module")
def vgg_real(shared_data_dir):
    folder = os.path.join(shared_data_dir, "VGGSound")
    require_shared(os.path.join(folder, "test.csv"), "real VGGSound metadata")
    return folder


@pytest.fixture(scope="module")
def vgg_mini(tmp_path_factory, vgg_real):
    """Miniature with one listed-but-absent training clip per class (kept read-only)."""
    folder = str(tmp_path_factory.mktemp("vgg") / "VGGSound")
    return miniatures.make_vgg(
        folder, shared_data_dir=os.path.dirname(vgg_real), n_classes=N_CLASSES,
        train_clips_per_class=TRAIN_PER_CLASS, test_clips_per_class=TEST_PER_CLASS,
        missing_per_class=1,
    )


def _copy(folder, tmp_path):
    target = str(tmp_path / "VGGSound")
    shutil.copytree(folder, target)
    return target


def _all_rows(result):
    return {
        split: [row for path in paths for row in manifest.read_manifest(path)]
        for split, paths in result["manifests"].items()
    }


def test_real_head_lines_parse(vgg_real, tmp_path):
    """The official file's first lines verbatim: no header, ids starting with '-'."""
    shutil.copy(os.path.join(vgg_real, "vggsound_head3.csv"), tmp_path / "vggsound.csv")
    entries, duplicates = vgg.read_metadata(str(tmp_path / "vggsound.csv"))
    assert duplicates == 0
    assert [(e["youtube_id"], e["start"], e["label"], e["split"]) for e in entries] == [
        ("---g-f_I2yQ", 1, "people marching", "test"),
        ("--0PQM4-hqg", 30, "waterfall burbling", "train"),
        ("--56QUhyDQM", 185, "playing tennis", "train"),
    ]
    assert vgg.clip_stem("---g-f_I2yQ", 1) == "---g-f_I2yQ_000001"


def test_every_real_label_survives_the_csv_round_trip(vgg_real, tmp_path):
    """All 15446 test rows written as vggsound.csv lines (labels with commas quoted)
    read back to exactly the 309 classes of stat.csv (no header, CRLF, no final EOL)."""
    with open(os.path.join(vgg_real, "test.csv"), encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    with open(os.path.join(vgg_real, "stat.csv"), encoding="utf-8", newline="") as f:
        stat_classes = {row[0] for row in csv.reader(f)}
    path = tmp_path / "vggsound.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        for name, label in rows:
            youtube_id, start = os.path.splitext(name)[0].rsplit("_", 1)
            writer.writerow([youtube_id, int(start), label, "test"])
    entries, _ = vgg.read_metadata(str(path))
    assert len(entries) == len(rows) == 15446
    labels = {e["label"] for e in entries}
    assert labels == stat_classes and len(labels) == 309
    assert "bee, wasp, etc. buzzing" in labels and "police car (siren)" in labels


def test_metadata_errors(tmp_path):
    path = tmp_path / "vggsound.csv"
    path.write_text("abc,1,dog barking\n")
    with pytest.raises(ValueError, match="line 1: expected 4 fields"):
        vgg.read_metadata(str(path))
    path.write_text("abc,1,dog barking,train\nabc,2,dog barking,dev\n")
    with pytest.raises(ValueError, match="line 2: split must be one of"):
        vgg.read_metadata(str(path))
    path.write_text("abc,1,dog barking,train\nabc,1,cat purring,train\n")
    with pytest.raises(ValueError, match="two|listed as"):
        vgg.read_metadata(str(path))
    path.write_text("youtube_id,start_seconds,label,split\nabc,1,dog,train\nabc,1,dog,train\n")
    entries, duplicates = vgg.read_metadata(str(path))
    assert len(entries) == 1 and duplicates == 1


def test_prepare_miniature(vgg_mini, tmp_path):
    save = str(tmp_path / "save")
    result = vgg.prepare(vgg_mini, save, n_tasks=2, valid_fraction=0.25)
    assert result["classes"] == sorted(result["classes"]) and len(result["classes"]) == N_CLASSES
    assert any("," in label for label in result["classes"])  # quoted labels made it through
    assert result["n_tasks"] == 2 and sorted(sum(result["task_classes"], [])) == list(range(N_CLASSES))
    rows = _all_rows(result)
    assert len(rows["train"]) + len(rows["valid"]) == N_CLASSES * TRAIN_PER_CLASS
    assert len(rows["test"]) == N_CLASSES * TEST_PER_CLASS
    # Seeded, stratified validation: every class is validated and keeps training clips.
    for split in ("train", "valid", "test"):
        assert {r["class_idx"] for r in rows[split]} == set(range(N_CLASSES))
    assert {r["fold"] for r in rows["train"] + rows["valid"]} == {1}
    assert {r["fold"] for r in rows["test"]} == {2}
    ids = [r["ID"] for split_rows in rows.values() for r in split_rows]
    assert len(ids) == len(set(ids))
    for row in rows["train"]:
        assert result["classes"][row["class_idx"]] == row["label"]
        assert os.path.basename(row["wav"]) == row["ID"] + ".wav"
        assert row["duration"] == pytest.approx(0.5)
    for task, classes in enumerate(result["task_classes"]):
        task_rows = manifest.read_manifest(result["manifests"]["train"][task])
        assert {r["class_idx"] for r in task_rows} == set(classes)
    # The absent clips: reported, one CSV line each, labels quoted like the metadata.
    with open(os.path.join(save, vgg.MISSING_LIST_FILE), encoding="utf-8", newline="") as f:
        missing = list(csv.reader(f))
    assert len(missing) == N_CLASSES
    assert {m[2] for m in missing} == set(result["classes"]) and {m[3] for m in missing} == {"train"}
    # The same seeds give the same split.
    again = vgg.prepare(vgg_mini, str(tmp_path / "save2"), n_tasks=2, valid_fraction=0.25)
    assert again["task_classes"] == result["task_classes"]
    assert _all_rows(again)["valid"] == rows["valid"]


def test_split_label_layout_and_flac(vgg_real, tmp_path):
    folder = miniatures.make_vgg(
        str(tmp_path / "VGGSound"), shared_data_dir=os.path.dirname(vgg_real), n_classes=2,
        train_clips_per_class=2, test_clips_per_class=1, layout="split_label", extension=".flac",
    )
    result = vgg.prepare(folder, str(tmp_path / "save"), n_tasks=1, valid_fraction=0.0)
    rows = _all_rows(result)
    assert len(rows["train"]) == 4 and len(rows["test"]) == 2 and rows["valid"] == []
    for row in rows["train"]:
        assert row["wav"].endswith(os.path.join("train", row["label"], row["ID"] + ".flac"))


def test_whole_class_missing_is_an_error(vgg_mini, tmp_path):
    folder = _copy(vgg_mini, tmp_path)
    entries, _ = vgg.read_metadata(os.path.join(folder, "vggsound.csv"))
    victim = entries[0]["label"]
    for entry in entries:
        if entry["label"] == victim:
            path = os.path.join(folder, "audio", vgg.clip_stem(entry["youtube_id"], entry["start"]) + ".wav")
            if os.path.exists(path):
                os.remove(path)
    with pytest.raises(FileNotFoundError, match="1 of 4 classes have no clip") as err:
        vgg.prepare(folder, str(tmp_path / "save"), n_tasks=2)
    assert victim in str(err.value)


def test_min_clips_per_class_drops_small_classes(vgg_mini, tmp_path):
    folder = _copy(vgg_mini, tmp_path)
    entries, _ = vgg.read_metadata(os.path.join(folder, "vggsound.csv"))
    victim = sorted({e["label"] for e in entries})[1]
    train_of_victim = [e for e in entries if e["label"] == victim and e["split"] == "train"]
    for entry in train_of_victim[:3]:  # leaves 1 of its 4 training clips
        path = os.path.join(folder, "audio", vgg.clip_stem(entry["youtube_id"], entry["start"]) + ".wav")
        if os.path.exists(path):
            os.remove(path)
    result = vgg.prepare(folder, str(tmp_path / "save"), n_tasks=3, min_clips_per_class=2)
    assert victim not in result["classes"] and len(result["classes"]) == N_CLASSES - 1
    labels = {r["label"] for rows in _all_rows(result).values() for r in rows}
    assert labels == set(result["classes"])
    assert [r["class_idx"] for r in manifest.read_manifest(result["manifests"]["test"][0])]  # not empty
    with pytest.raises(ValueError, match="no class has min_clips_per_class"):
        vgg.prepare(folder, str(tmp_path / "save_none"), n_tasks=1, min_clips_per_class=100)


def test_rerun_reuses_manifests_until_the_audio_changes(vgg_mini, tmp_path):
    folder = _copy(vgg_mini, tmp_path)
    save = str(tmp_path / "save")
    result = vgg.prepare(folder, save, task_classes=[[0, 3], [1, 2]])
    first = result["manifests"]["train"][0]
    stamp = os.stat(first).st_mtime_ns
    again = vgg.prepare(folder, save, task_classes=[[0, 3], [1, 2]])
    assert again == result and os.stat(first).st_mtime_ns == stamp
    assert vgg.prepare(folder, save, task_classes=[[0, 3], [1, 2]], skip_prep=True)["task_classes"] == [[0, 3], [1, 2]]
    # A clip deleted on disk: the manifests are rebuilt and the clip is reported.
    removed = manifest.read_manifest(first)[0]
    os.remove(removed["wav"])
    vgg.prepare(folder, save, task_classes=[[0, 3], [1, 2]])
    assert removed["ID"] not in {r["ID"] for r in manifest.read_manifest(first)}
    with open(os.path.join(save, vgg.MISSING_LIST_FILE), encoding="utf-8") as f:
        assert len(f.readlines()) == N_CLASSES + 1


def test_task_split_errors_and_layout_errors(vgg_mini, tmp_path):
    with pytest.raises(ValueError, match="n_tasks=3 but task_classes lists 2 tasks"):
        vgg.prepare(vgg_mini, str(tmp_path / "s1"), task_classes=[[0, 1], [2, 3]], n_tasks=3)
    with pytest.raises(ValueError, match="unknown class 4"):
        vgg.prepare(vgg_mini, str(tmp_path / "s2"), task_classes=[[0, 4]])
    with pytest.raises(FileNotFoundError, match=r"vggsound\.csv.*youtube_id,start_seconds"):
        vgg.prepare(str(tmp_path), str(tmp_path / "s3"))
    with pytest.raises(FileNotFoundError, match="audio folder not found"):
        vgg.prepare(vgg_mini, str(tmp_path / "s4"), audio_dirname="clips")
    with pytest.raises(FileNotFoundError, match="skip_prep=True"):
        vgg.prepare(vgg_mini, str(tmp_path / "s5"), skip_prep=True)


def test_unreadable_clip_is_skipped_and_listed_or_an_error(vgg_mini, tmp_path):
    folder = _copy(vgg_mini, tmp_path)
    entries, _ = vgg.read_metadata(os.path.join(folder, "vggsound.csv"))
    victim = next(e for e in entries if e["split"] == "train"
                  and os.path.exists(os.path.join(folder, "audio", vgg.clip_stem(e["youtube_id"], e["start"]) + ".wav")))
    stem = vgg.clip_stem(victim["youtube_id"], victim["start"])
    with open(os.path.join(folder, "audio", stem + ".wav"), "wb") as f:
        f.write(b"not a wav file at all")
    with pytest.raises(RuntimeError, match="1 VGGSound clips cannot be read"):
        vgg.prepare(folder, str(tmp_path / "save_error"), n_tasks=2, on_bad_audio="error")
    save = str(tmp_path / "save_skip")
    result = vgg.prepare(folder, save, n_tasks=2)  # skip: the default
    ids = {r["ID"] for rows in _all_rows(result).values() for r in rows}
    assert stem not in ids and len(ids) == N_CLASSES * (TRAIN_PER_CLASS + TEST_PER_CLASS) - 1
    with open(os.path.join(save, manifest.UNREADABLE_LIST_FILE), encoding="utf-8") as f:
        assert stem in f.read()  # picked up by the run's bad_audio_report.csv
