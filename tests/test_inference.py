"""Inference on finished runs: the same clip gets the same scores as in the recipe's test loop
(sup_train, replay_train), the accuracy of results.json, and python -m soundcl.predict names it."""
import os
import shutil

import pytest
import torch

import speechbrain as sb

from conftest import recipe_argv, run_recipe
from soundcl.methods.supervised import strategies
from soundcl.core.brains import SupervisedBrain
from soundcl.data.manifest import read_manifest
from soundcl.inference import INFERENCE_FILE, ContinualClassifier, RunNotReady
from soundcl.predict import main as predict
from soundcl.methods.supervised.replay import ReplayBrain
from soundcl.testing import miniatures

#: run name -> task -> clip ID -> the logits [n_classes] the test loop scored after that task.
TEST_LOOP_LOGITS = {}
SMALL = ["--task_classes=[[0,1],[2,3]]", "--number_of_epochs=2"]


class RecordTestLogits:
    """Keeps the logits of every TEST batch (the last test of a task wins: the task loop's)."""

    run_name = None

    def compute_objectives(self, predictions, batch, stage):
        if stage == sb.Stage.TEST:
            record = TEST_LOOP_LOGITS.setdefault(self.run_name, {}).setdefault(self.task_id, {})
            for clip_id, logits in zip(batch.id, predictions[0]):
                record[clip_id] = logits.detach().float().cpu().clone()
        return super().compute_objectives(predictions, batch, stage)


class RecordingSupervised(RecordTestLogits, SupervisedBrain):
    run_name = "sup"


class RecordingReplay(RecordTestLogits, ReplayBrain):
    run_name = "replay"


class RecordingUs8k(RecordTestLogits, SupervisedBrain):
    run_name = "us8k"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synth_data_folder):
    """A sup_train run scored clip by clip (eval batches of one) and a replay_train run (batches of 8)."""
    base = tmp_path_factory.mktemp("inference")
    with pytest.MonkeyPatch.context() as patch:
        chosen = strategies.STRATEGIES["finetune_or_replay"]
        patch.setitem(strategies.STRATEGIES, "finetune_or_replay", chosen._replace(brain=RecordingSupervised))
        sup = run_recipe("sup_train", recipe_argv(
            "hparams/synth/sup_train.yaml", str(base), synth_data_folder, *SMALL, "--experiment_name=sup",
            "--eval_dataloader_opts={batch_size: 1, num_workers: 0}"))
    argv = recipe_argv("hparams/synth/replay_train.yaml", str(base), synth_data_folder, *SMALL,
                       "--experiment_name=replay", "--memory_size=8", "--report_best_test_epoch=False")
    replay = run_recipe("replay_train", [a for a in argv if not a.startswith("--encoder_channels")],
                        replace={"ReplayBrain": RecordingReplay})
    return {"sup": (str(base / "sup" / "1986"), sup), "replay": (str(base / "replay" / "1986"), replay)}


def _test_rows(run_folder, j):
    return read_manifest(os.path.join(run_folder, "save", f"test_task{j}.csv"))


def _check_against_test_loop(name, run_folder, results, classifier, per_file):
    k = classifier.task
    for j in range(k + 1):
        rows = _test_rows(run_folder, j)
        if per_file:
            outs = [classifier.classify_file(row["wav"]) for row in rows]
            logits = torch.cat([out.logits for out in outs])
            predicted = [c for out in outs for c in out.class_idx]
        else:
            out = classifier.classify_files([row["wav"] for row in rows])
            logits, predicted = out.logits, out.class_idx
        expected = torch.stack([TEST_LOOP_LOGITS[name][k][row["ID"]][classifier.class_indices] for row in rows])
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
        accuracy = sum(p == row["class_idx"] for p, row in zip(predicted, rows)) / len(rows)
        assert accuracy == pytest.approx(results["accuracy_matrix"][k][j], abs=1e-6), (j, accuracy)


def test_sup_train_classify_file_gives_the_test_loop_scores_and_accuracy(runs):
    run_folder, results = runs["sup"]
    classifier = ContinualClassifier.from_hparams(source=run_folder)
    assert classifier.task == 1  # the last finished task
    assert classifier.classes == ["tone_burst", "up_chirp", "pink_noise", "brown_noise"]
    _check_against_test_loop("sup", run_folder, results, classifier, per_file=True)
    # The interface, SpeechBrain style: a batch of waveforms, probabilities and top-k.
    row = _test_rows(run_folder, 0)[0]
    wav = classifier.load_audio(row["wav"])
    out = classifier.classify_batch(torch.stack([wav, wav]), torch.ones(2), top_k=2)
    assert len(out.top_k[0]) == 2 and out.top_k[0][0][0] == out.labels[0]
    assert torch.allclose(out.probs.sum(-1), torch.ones(2)) and out.probs.shape == (2, 4)


def test_replay_train_classify_files_batches_as_the_test_loop(runs):
    run_folder, results = runs["replay"]
    classifier = ContinualClassifier.from_hparams(source=run_folder)
    assert classifier.info["brain"] == "soundcl.methods.supervised.replay.ReplayBrain"
    _check_against_test_loop("replay", run_folder, results, classifier, per_file=False)


def test_us8k_miniature_run_gives_the_test_loop_scores(tmp_path):
    """The real-layout UrbanSound8K miniature through hparams/us8k (CNN14, SpecAugment off at test)."""
    data = miniatures.make_us8k(str(tmp_path / "UrbanSound8K"), miniatures.default_shared_data_dir(),
                                clips_per_class_per_fold=2)
    argv = recipe_argv(
        "hparams/us8k/sup_train.yaml", str(tmp_path), data, "--number_of_epochs=1", "--warmup_epochs=0",
        "--task_classes=[[3,8],[9,4]]", "--train_duration=1.0",
        "--train_dataloader_opts={batch_size: 16, shuffle: True, num_workers: 0}",
        "--eval_dataloader_opts={batch_size: 16, num_workers: 0}")
    with pytest.MonkeyPatch.context() as patch:
        chosen = strategies.STRATEGIES["finetune_or_replay"]
        patch.setitem(strategies.STRATEGIES, "finetune_or_replay", chosen._replace(brain=RecordingUs8k))
        results = run_recipe("sup_train", argv)
    run_folder = str(tmp_path / "sup_train_replay0" / "1986")
    seen = ContinualClassifier.from_hparams(source=run_folder)
    assert seen.class_indices == [3, 4, 8, 9] and len(seen.classes) == 4
    # This YAML's test loop takes the argmax over all 10 outputs (mask_unseen_classes: False, cssl_sound).
    classifier = ContinualClassifier.from_hparams(source=run_folder, classes="all")
    assert classifier.class_indices == list(range(10))
    _check_against_test_loop("us8k", run_folder, results, classifier, per_file=False)


def test_any_finished_task_of_a_partly_finished_run(runs, tmp_path):
    run_folder, results = runs["sup"]
    partial = str(tmp_path / "partial")
    shutil.copytree(run_folder, partial)
    os.remove(os.path.join(partial, "save", "task1", "task_state.json"))  # task 1 unfinished
    classifier = ContinualClassifier.from_hparams(source=partial)
    assert classifier.task == 0 and classifier.classes == ["tone_burst", "up_chirp"]
    _check_against_test_loop("sup", partial, results, classifier, per_file=True)
    with pytest.raises(RunNotReady, match="task 1 of .* is not finished: finished tasks are \\[0\\]"):
        ContinualClassifier.from_hparams(source=partial, task=1)
    os.remove(os.path.join(partial, "save", "task0", "task_state.json"))
    with pytest.raises(SystemExit, match="has no finished task yet"):
        predict([partial, row_of(run_folder)["wav"]])


def row_of(run_folder):
    """A test clip of task 1 that the finished sup run classifies right."""
    for row in _test_rows(run_folder, 1):
        if int(TEST_LOOP_LOGITS["sup"][1][row["ID"]].argmax()) == row["class_idx"]:
            return row
    raise AssertionError("no test clip classified right")


def test_predict_prints_the_class_name_and_writes_a_csv(runs, tmp_path, capsys):
    run_folder, _ = runs["sup"]
    row = row_of(run_folder)
    predict([run_folder, row["wav"], "--top_k=2"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.split("\t")[0] == row["wav"] and line.split("\t")[1].startswith(row["label"] + " ("), line
    # A folder (progress bar) with a file that is not audio: stop naming it, or skip it.
    folder = tmp_path / "clips"
    folder.mkdir()
    shutil.copy(row["wav"], folder / "a.wav")
    (folder / "b.wav").write_text("not audio")
    (folder / "notes.txt").write_text("ignored: not an audio file name")
    with pytest.raises(SystemExit, match="b.wav"):
        predict([run_folder, str(folder)])
    csv_path = tmp_path / "out.csv"
    results = predict([run_folder, str(folder), "--on_bad_audio=skip", f"--csv={csv_path}", "--task=0"])
    assert [os.path.basename(path) for path, _ in results] == ["a.wav"]
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "file,label_1,prob_1,label_2,prob_2"  # task 0 knows 2 classes
    assert "skipping" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=f"has no {INFERENCE_FILE}"):
        predict([str(tmp_path), row["wav"]])
