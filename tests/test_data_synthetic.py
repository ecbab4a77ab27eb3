"""Tests of soundcl.data.synthetic: the embedded data set in the UrbanSound8K layout."""

import collections
import hashlib
import json
import logging
import os

import numpy as np
import pytest
import soundfile

from soundcl.data import manifest, synthetic, us8k

# Small sets keep the tests fast; 2 clips x 10 classes x 10 folds = 200 files.
SMALL = dict(clips_per_class_per_fold=2)


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _metadata(folder):
    return os.path.join(folder, us8k.METADATA_RELPATH)


def _audio_files(folder):
    entries, _ = us8k.read_metadata(_metadata(folder))
    audio = os.path.join(folder, "audio")
    return [os.path.join(audio, f"fold{e['fold']}", e["slice_file_name"]) for e in entries]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    """A small generated set; shared, do not modify."""
    return synthetic.generate(str(tmp_path_factory.mktemp("syn") / "data"), seed=1234, **SMALL)


def test_layout_and_metadata(small_set):
    with open(_metadata(small_set), encoding="utf-8") as f:
        header = f.readline().strip()
    assert header == "slice_file_name,fsID,start,end,salience,fold,classID,class"
    entries, classes = us8k.read_metadata(_metadata(small_set))
    assert classes == synthetic.CLASS_NAMES
    assert len(entries) == 2 * 10 * 10
    assert collections.Counter((e["fold"], e["classID"]) for e in entries) == {
        (f, c): 2 for f in range(1, 11) for c in range(10)
    }
    for e in entries:
        fs_id, class_id, _, _ = e["slice_file_name"][:-4].split("-")
        assert fs_id == e["fsID"] and int(class_id) == e["classID"]
        assert 0.5 <= float(e["end"]) - float(e["start"]) <= 2.0 + 1e-6
        assert e["salience"] in ("1", "2")
    # A source recording (fsID) stays within one fold, as in UrbanSound8K.
    folds_of_source = collections.defaultdict(set)
    for e in entries:
        folds_of_source[e["fsID"]].add(e["fold"])
    assert all(len(folds) == 1 for folds in folds_of_source.values())


def test_mixed_formats_and_durations(small_set):
    infos = [soundfile.info(path) for path in _audio_files(small_set)]
    assert {i.samplerate for i in infos} == set(synthetic.SAMPLE_RATES)
    assert {i.channels for i in infos} == {1, 2}
    assert {i.subtype for i in infos} == set(synthetic.SUBTYPES)
    assert all(0.5 - 1e-3 <= i.frames / i.samplerate <= 2.0 + 1e-3 for i in infos)


def test_clips_hold_sound_above_background(small_set):
    for path in _audio_files(small_set)[:20]:
        audio, _ = soundfile.read(path, always_2d=True)
        assert np.isfinite(audio).all()
        assert 0.02 < np.abs(audio).max() <= 1.0


def test_deterministic_from_seed(small_set, tmp_path):
    same = synthetic.generate(str(tmp_path / "same"), seed=1234, **SMALL)
    other = synthetic.generate(str(tmp_path / "other"), seed=99, **SMALL)
    assert _sha(_metadata(same)) == _sha(_metadata(small_set))
    assert _sha(_metadata(other)) != _sha(_metadata(small_set))
    for path in _audio_files(small_set)[::37]:
        relative = os.path.relpath(path, small_set)
        assert _sha(os.path.join(same, relative)) == _sha(path)
    # Other seed: other file names (fsIDs) and other audio for the same (class, fold).
    first_other = _audio_files(other)[0]
    assert not os.path.exists(os.path.join(small_set, os.path.relpath(first_other, other)))
    assert {_sha(p) for p in _audio_files(other)[:10]}.isdisjoint(
        {_sha(p) for p in _audio_files(small_set)}
    )


def test_generate_twice_skips_second_time(tmp_path, caplog):
    folder = synthetic.generate(str(tmp_path / "data"), n_classes=3, n_folds=2, **SMALL)
    files = _audio_files(folder) + [_metadata(folder)]
    before = {p: os.stat(p).st_mtime_ns for p in files}
    with caplog.at_level(logging.INFO, logger="soundcl.data.synthetic"):
        synthetic.generate(folder, n_classes=3, n_folds=2, **SMALL)
    assert "not regenerating" in caplog.text
    assert {p: os.stat(p).st_mtime_ns for p in files} == before


def test_changed_parameters_regenerate_and_drop_stale_files(tmp_path):
    folder = synthetic.generate(
        str(tmp_path / "data"), n_classes=3, n_folds=2, clips_per_class_per_fold=3
    )
    synthetic.generate(folder, n_classes=2, n_folds=2, clips_per_class_per_fold=1)
    entries, classes = us8k.read_metadata(_metadata(folder))
    assert classes == synthetic.CLASS_NAMES[:2] and len(entries) == 4
    on_disk = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(os.path.join(folder, "audio"))
        for name in names
    )
    assert on_disk == sorted(_audio_files(folder))


def test_interrupted_generation_is_redone(tmp_path):
    folder = synthetic.generate(str(tmp_path / "data"), n_classes=2, n_folds=2, **SMALL)
    # Simulate a run killed after writing audio but before the final marker.
    opts_file = os.path.join(folder, synthetic.OPTS_FILE)
    with open(opts_file, encoding="utf-8") as f:
        opts = json.load(f)
    opts["complete"] = False
    with open(opts_file, "w", encoding="utf-8") as f:
        json.dump(opts, f)
    os.remove(_audio_files(folder)[0])
    synthetic.generate(folder, n_classes=2, n_folds=2, **SMALL)
    assert all(os.path.isfile(p) for p in _audio_files(folder))
    with open(opts_file, encoding="utf-8") as f:
        assert json.load(f)["complete"] is True


def test_refuses_to_overwrite_foreign_metadata(tmp_path):
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "UrbanSound8K.csv").write_text("slice_file_name,fsID\n")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        synthetic.generate(str(tmp_path))


@pytest.mark.parametrize(
    "kwargs", [dict(n_classes=11), dict(n_folds=0), dict(clips_per_class_per_fold=0), dict(seed=-1)]
)
def test_bad_parameters(tmp_path, kwargs):
    with pytest.raises(ValueError):
        synthetic.generate(str(tmp_path), **kwargs)


def test_prepare_gives_five_tasks_of_two_classes(small_set, tmp_path):
    result = synthetic.prepare(small_set, str(tmp_path / "save"), **SMALL)
    assert result["n_tasks"] == 5
    assert result["classes"] == synthetic.CLASS_NAMES
    for split, expected_rows in (("train", 8 * 2 * 2), ("valid", 2 * 2), ("test", 2 * 2)):
        paths = result["manifests"][split]
        assert len(paths) == 5
        for task, path in enumerate(paths):
            rows = manifest.read_manifest(path)
            assert {r["class_idx"] for r in rows} == set(us8k.DEFAULT_TASK_CLASSES[task])
            assert len(rows) == expected_rows
            assert all(r["label"] == synthetic.CLASS_NAMES[r["class_idx"]] for r in rows)
