"""Your own sounds (soundcl.data.folder): class subfolders or a CSV, mixed formats, bad input in one line;
sup_train on hparams/folder/ trains, and the inference interface gives its test accuracy."""
import csv
import json
import os

import pytest
import soundfile
import torch

import speechbrain as sb

from conftest import recipe_argv, run_recipe
from soundcl.data import folder as folder_data
from soundcl.data.manifest import read_manifest
from soundcl.inference import ContinualClassifier
from soundcl.methods.evaluation.linear_eval import LinearEvalBrain


def _formats():
    """wav, flac, ogg, and mp3 where this libsndfile writes it."""
    formats = ["wav", "flac", "ogg"]
    if "MP3" in soundfile.available_formats():
        formats.append("mp3")
    return tuple(formats)


def test_sup_train_on_a_folder_of_mixed_formats(tmp_path):
    data = folder_data.write_example_folder(str(tmp_path / "my_sounds"), n_classes=4, clips_per_class=10,
                                            formats=_formats())
    (tmp_path / "my_sounds" / "README.txt").write_text("not a class")  # a file beside the class folders
    (tmp_path / "my_sounds" / "up_chirp" / "notes.txt").write_text("not audio: ignored")
    argv = recipe_argv("hparams/folder/sup_train.yaml", str(tmp_path / "out"), data,
                       "--task_classes=[[0,1],[2,3]]", "--number_of_epochs=2", "--train_duration=1.0")
    results = run_recipe("sup_train", argv)
    run = tmp_path / "out" / "sup_train_replay0" / "1986"
    on_disk = json.loads((run / "results.json").read_text())
    assert len(on_disk["accuracy_matrix"]) == 2 and not on_disk["partial"]
    for name in ("results.csv", "accuracy_matrix.png", "inference.yaml"):
        assert (run / name).exists(), name
    rows = [r for k in range(2) for split in ("train", "valid", "test")
            for r in read_manifest(str(run / "save" / f"{split}_task{k}.csv"))]
    assert len(rows) == 40 and {os.path.splitext(r["wav"])[1] for r in rows} == {f".{f}" for f in _formats()}
    assert sorted({r["label"] for r in rows}) == ["brown_noise", "pink_noise", "tone_burst", "up_chirp"]
    # The inference interface on this run: the test loop's accuracy, from the files.
    classifier = ContinualClassifier.from_hparams(source=str(run))
    assert classifier.classes == ["brown_noise", "pink_noise", "tone_burst", "up_chirp"]
    _check_accuracy(classifier, run, results)

    # Linear evaluation of that run's encoders (hparams/folder/linclf_train.yaml), then inference through
    # its head and the encoder of the task (classes="all": its test loop's argmax is over every output).
    logits = {}

    class Recording(LinearEvalBrain):
        def compute_objectives(self, predictions, batch, stage):
            if stage == sb.Stage.TEST:
                logits.update({i: row.detach().clone() for i, row in zip(batch.id, predictions[0])})
            return super().compute_objectives(predictions, batch, stage)

    argv = recipe_argv("hparams/folder/linclf_train.yaml", str(tmp_path / "out"), data, "--task_classes=[[0,1],[2,3]]",
                       "--number_of_epochs=2", f"--ssl_checkpoints_dir={run / 'save'}")
    linclf = run_recipe("linclf_train", argv, replace={"LinearEvalBrain": Recording})
    linclf_run = tmp_path / "out" / "linclf_seen_keepall" / "1986"
    classifier = ContinualClassifier.from_hparams(source=str(linclf_run), classes="all")
    assert classifier.info["brain"] == "soundcl.methods.evaluation.linear_eval.LinearEvalBrain"
    _check_accuracy(classifier, linclf_run, linclf, logits)


def _check_accuracy(classifier, run, results, logits=None):
    for j in range(2):
        test = read_manifest(str(run / "save" / f"test_task{j}.csv"))
        out = classifier.classify_files([r["wav"] for r in test])
        accuracy = sum(p == r["class_idx"] for p, r in zip(out.class_idx, test)) / len(test)
        assert accuracy == pytest.approx(results["accuracy_matrix"][1][j], abs=1e-6)
        if logits is not None:  # the test loop's (after the last task: tasks 0 and 1 scored last)
            torch.testing.assert_close(out.logits, torch.stack([logits[r["ID"]] for r in test]), rtol=1e-4, atol=1e-4)


def _write_csv(path, rows, header=("path", "label", "split", "group")):
    with open(path, "w", encoding="utf-8", newline="") as fout:
        writer = csv.writer(fout)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def test_csv_splits_by_group_and_keeps_given_splits(tmp_path):
    data = folder_data.write_example_folder(str(tmp_path / "audio"), n_classes=3, clips_per_class=12)
    rows = []
    for label in sorted(os.listdir(data)):
        for n, name in enumerate(sorted(os.listdir(os.path.join(data, label)))):
            split = "test" if n == 0 else ""
            rows.append((f"{label}/{name}", label, split, f"rec{n // 3}"))  # 3 clips per recording
    csv_file = _write_csv(tmp_path / "labels.csv", rows)
    info = folder_data.prepare(data, str(tmp_path / "save"), csv_file=csv_file, task_classes=[["up_chirp"], [0, 1]],
                               valid_fraction=0.3, test_fraction=0.25, seed=3)
    assert info["classes"] == ["pink_noise", "tone_burst", "up_chirp"] and info["task_classes"] == [[2], [0, 1]]
    by_split = {split: [r for k in range(2) for r in read_manifest(info["manifests"][split][k])]
                for split in ("train", "valid", "test")}
    group = {os.path.join(data, path): f"{label}/{g}" for path, label, _, g in rows}
    groups = {split: {group[r["wav"]] for r in split_rows} for split, split_rows in by_split.items()}
    assert groups["valid"] and not groups["train"] & groups["valid"] and not groups["train"] & groups["test"]
    given = {os.path.join(data, path) for path, _, split, _ in rows if split == "test"}
    assert given <= {r["wav"] for r in by_split["test"]}
    assert sum(len(v) for v in by_split.values()) == 36
    assert folder_data.count_classes(data, csv_file) == 3
    assert folder_data.task_classes_of(data, csv_file, classes_per_task=2) == [[0, 1], [2]]


def test_bad_input_stops_in_one_line_naming_it(tmp_path):
    data = folder_data.write_example_folder(str(tmp_path / "audio"), n_classes=2, clips_per_class=4)
    save = str(tmp_path / "save")
    with pytest.raises(ValueError, match="class 'dgo' of task_classes does not exist: the classes are tone_burst, "
                                         "up_chirp$"):
        folder_data.task_classes_of(data, task_classes=[["dgo"]])
    (tmp_path / "audio" / "empty_class").mkdir()
    with pytest.raises(ValueError, match="class folder .*empty_class holds no audio file"):
        folder_data.prepare(data, save, classes_per_task=1)
    os.rmdir(tmp_path / "audio" / "empty_class")
    bad = tmp_path / "audio" / "tone_burst" / "broken.wav"
    bad.write_text("not audio")
    with pytest.raises(RuntimeError, match="broken.wav"):
        folder_data.prepare(data, save, classes_per_task=1)
    info = folder_data.prepare(data, save, classes_per_task=1, on_bad_audio="skip")
    kept = [r["wav"] for split in info["manifests"].values() for path in split for r in read_manifest(path)]
    assert len(kept) == 8 and str(bad) not in kept
    with pytest.raises(ValueError, match="lacks the column 'label'"):
        folder_data.prepare(data, save, csv_file=_write_csv(tmp_path / "x.csv", [], header=("path", "class")),
                            classes_per_task=1)
    for message in (str(err) for err in _errors(tmp_path)):
        assert "\n" not in message, message


def _errors(tmp_path):
    for call in (lambda: folder_data.scan(str(tmp_path / "missing")),
                 lambda: folder_data.task_classes_of(str(tmp_path / "audio"), task_classes=[[0, 5]])):
        with pytest.raises(ValueError) as err:
            call()
        yield err.value
