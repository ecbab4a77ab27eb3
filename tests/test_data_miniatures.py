"""Tests of the miniature generators (soundcl.testing.miniatures) and of the task and validation splits."""

import os

import pytest
import soundfile

from soundcl.data import manifest, splits, us8k
from soundcl.testing import miniatures


def test_draw_task_classes_is_seeded_and_balanced():
    tasks = splits.draw_task_classes(13, 4, seed=7)
    assert sorted(sum(tasks, [])) == list(range(13))
    assert [len(t) for t in tasks] == [4, 3, 3, 3]
    assert splits.draw_task_classes(13, 4, seed=7) == tasks
    assert splits.draw_task_classes(13, 4, seed=8) != tasks
    with pytest.raises(ValueError, match="cannot split 3 classes into 4 tasks"):
        splits.draw_task_classes(3, 4, seed=0)
    with pytest.raises(ValueError, match="give task_classes"):
        splits.resolve_task_classes(None, None, 0, 5)


def test_split_train_valid_groups_and_stratifies():
    rows = [{"class_idx": c, "group": f"{c}-{i // 2}", "n": i} for c in range(3) for i in range(10)]
    train, valid = splits.split_train_valid(rows, 0.2, seed=3, group_of=lambda r: r["group"])
    assert len(train) + len(valid) == 30
    assert {r["class_idx"] for r in valid} == {0, 1, 2}
    assert not {r["group"] for r in train} & {r["group"] for r in valid}
    assert len(valid) == 6  # one group of 2 clips per class = 20 %
    assert splits.split_train_valid(rows, 0.2, seed=3, group_of=lambda r: r["group"]) == (train, valid)
    # A class with a single group keeps it for training.
    single = [{"class_idx": 0, "group": "g"}] * 3
    assert splits.split_train_valid(single, 0.5, seed=0, group_of=lambda r: r["group"]) == (single, [])


def test_every_miniature_has_the_real_layout(tmp_path, shared_data_dir):
    folders = {
        "us8k": miniatures.make_us8k(str(tmp_path / "us8k"), shared_data_dir, clip_seconds=0.2),
        "esc50": miniatures.make_esc50(str(tmp_path / "esc50"), shared_data_dir, n_classes=3, clip_seconds=0.2),
        "tau19": miniatures.make_tau19(str(tmp_path / "tau19"), shared_data_dir, clips_per_class=1, clip_seconds=0.2),
    }
    # UrbanSound8K: the real prepare reads it; the metadata lines are the real ones.
    result = us8k.prepare(folders["us8k"], str(tmp_path / "save_us8k"))
    assert sum(len(manifest.read_manifest(p)) for p in result["manifests"]["test"]) == 10
    real_us8k = os.path.join(shared_data_dir, "UrbanSound8K", "metadata", "UrbanSound8K.csv")
    with open(real_us8k, encoding="utf-8", newline="") as f:
        real_lines = set(f.readlines())
    with open(os.path.join(folders["us8k"], "metadata", "UrbanSound8K.csv"), encoding="utf-8", newline="") as f:
        assert set(f.readlines()) <= real_lines

    # ESC-50: CRLF header verbatim, 3 classes x 5 folds, 5 s clips shortened to 0.2 s at 44.1 kHz.
    with open(os.path.join(folders["esc50"], "meta", "esc50.csv"), encoding="utf-8", newline="") as f:
        lines = f.readlines()
    assert lines[0] == "filename,fold,target,category,esc10,src_file,take\r\n" and len(lines) == 16
    name = lines[1].split(",")[0]
    info = soundfile.info(os.path.join(folders["esc50"], "audio", name))
    assert (info.samplerate, info.channels) == (44100, 1)

    # TAU 2019: tab-separated meta and fold1 setup, 48 kHz stereo 24-bit.
    setup = os.path.join(folders["tau19"], "evaluation_setup")
    with open(os.path.join(setup, "fold1_test.csv"), encoding="utf-8") as f:
        test_names = [line.strip() for line in f.readlines()[1:]]
    with open(os.path.join(setup, "fold1_evaluate.csv"), encoding="utf-8") as f:
        assert [line.split("\t")[0] for line in f.readlines()[1:]] == test_names
    assert len(test_names) == 10
    info = soundfile.info(os.path.join(folders["tau19"], test_names[0]))
    assert (info.samplerate, info.channels, info.subtype) == (48000, 2, "PCM_24")


def test_miniatures_are_reused_and_never_overwrite_foreign_data(tmp_path):
    folder = str(tmp_path / "cochl")
    miniatures.make_cochl(folder, n_classes=2, clips_per_class=1, clip_seconds=0.1)
    marker = os.path.join(folder, miniatures.MARKER_FILE)
    stamp = os.stat(marker).st_mtime_ns
    miniatures.make_cochl(folder, n_classes=2, clips_per_class=1, clip_seconds=0.1)
    assert os.stat(marker).st_mtime_ns == stamp
    # Other arguments: the old miniature is replaced, not mixed with the new one.
    miniatures.make_cochl(folder, n_classes=3, clips_per_class=1, clip_seconds=0.1)
    assert sorted(os.listdir(os.path.join(folder, "Train"))) == ["Bus", "Cafe", "Car"]
    foreign = tmp_path / "real"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="refusing"):
        miniatures.make_cochl(str(foreign))
