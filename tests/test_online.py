"""Online continual learning (online: True, hparams/synth/online_train.yaml): tiny, 2 tasks of 2 classes."""
import collections
import csv
import json

import pytest

from conftest import recipe_argv, run_recipe
from soundcl.methods.supervised import online
from soundcl.methods.supervised.strategies import STRATEGIES

HPARAMS = "hparams/synth/online_train.yaml"
TWO_TASKS = "--task_classes=[[0,1],[2,3]]"
ONLINE_TINY = ("--number_of_epochs=1", "--batch_size=16", "--replay_batch_size=8", "--memory_size=8")


def _run(base, data_folder, strategy, *extra, name=None):
    argv = recipe_argv(HPARAMS, str(base), data_folder, TWO_TASKS, *ONLINE_TINY, f"--strategy={strategy}",
                       f"--experiment_name={name or strategy}", *extra)
    return run_recipe("sup_train", argv)


def _training_ids(folder, n_tasks=2):
    ids = []
    for k in range(n_tasks):
        with open(folder / "save" / f"train_task{k}.csv", encoding="utf-8") as fin:
            ids.extend(row["ID"] for row in csv.DictReader(fin))
    return ids


def _recording(monkeypatch, name):
    """Make strategy ``name``'s online mixin record, per training batch: the stream batch the loader
    gives, every row the loss is computed on, the replayed ids and the memory policy's state after the update."""
    spec = STRATEGIES[name]
    log = {"stream": [], "trained": [], "replayed": [], "after": []}

    class Recording(spec.online):
        def fit_batch(self, batch):
            log["stream"].append((self.task_id, list(batch.id)))
            loss = super().fit_batch(batch)
            log["replayed"].append(set(self.replayed))
            log["after"].append((list(self.stream.ids), self.stream.policy.n_seen, self.stream.n_streamed))
            log["brain"] = self
            return loss

        def compute_objectives(self, predictions, batch, stage):
            import speechbrain as sb

            if stage == sb.Stage.TRAIN:
                log["trained"].append(list(batch.id))
            return super().compute_objectives(predictions, batch, stage)

    monkeypatch.setitem(STRATEGIES, name, spec._replace(online=Recording))
    return log


def _uses(log):
    """How many times each clip reached the training step as an incoming (not replayed) row."""
    return collections.Counter(i for ids, replayed in zip(log["trained"], log["replayed"])
                               for i in ids if i not in replayed)


def test_online_er_trains_each_clip_once_updates_the_memory_per_batch_and_writes_the_curve(
        tmp_path, synth_data_folder, monkeypatch):
    log = _recording(monkeypatch, "er")
    results = _run(tmp_path, synth_data_folder, "er", "--anytime_eval_every=3")
    folder = tmp_path / "er" / "1986"
    train_ids = _training_ids(folder)
    assert len(train_ids) == 2 * 2 * 8 * 8 == len(set(train_ids))
    # Each clip once: in the loader's stream and among the rows the loss saw.
    assert collections.Counter(i for _, ids in log["stream"] for i in ids) == collections.Counter(train_ids)
    assert _uses(log) == collections.Counter(train_ids)
    # Replayed rows are memory clips streamed in earlier batches, and they are the only other rows.
    streamed = set()
    for (_, ids), trained, replayed in zip(log["stream"], log["trained"], log["replayed"]):
        assert replayed <= streamed and not replayed & set(ids)
        assert sorted(trained) == sorted(ids + sorted(replayed))
        streamed |= set(ids)
    assert all(len(r) == 8 for r in log["replayed"][1:])  # 8 replayed from the second batch on
    # Reservoir updated after every batch: its stream count is the clips seen so far, the memory full from 8 on.
    seen = 0
    for (task, ids), (memory, n_seen, n_streamed) in zip(log["stream"], log["after"]):
        seen += len(ids)
        assert n_seen == n_streamed == seen and len(memory) == min(8, seen)
    task1_clips = {i for task, ids in log["stream"] if task == 1 for i in ids}
    first_batch_of_task1 = [task for task, _ in log["stream"]].index(1)
    assert set(log["after"][first_batch_of_task1][0]) & task1_clips  # task 1's clips enter during task 1

    # results.json: per-batch update time and memory bytes; the curve (CSV + PNG).
    per_batch = [len(ids) for _, ids in log["stream"]]
    for k, task in enumerate(results["per_task"]):
        report = task["online"]
        assert report["clips_streamed"] == 64 * 2 and len(report["batches"]) == 8
        assert report["update_s_per_batch"]["n"] == 8 and report["update_s_per_batch"]["mean"] > 0
        assert all(b["update_s"] >= b["step_s"] > 0 for b in report["batches"])
    rows = {r["ID"]: r for k in range(2) for r in csv.DictReader(open(folder / "save" / f"train_task{k}.csv"))}
    end_memory = log["after"][-1][0]
    assert results["per_task"][1]["online"]["memory_bytes_end"] == 4 * sum(
        round(float(rows[i]["duration"]) * 16000) for i in end_memory)
    assert (folder / "anytime_accuracy.png").stat().st_size > 0
    with open(folder / "online_batches.csv", encoding="utf-8") as fin:
        assert [int(r["clips_seen"]) for r in csv.DictReader(fin)] == [sum(per_batch[:b + 1]) for b in range(16)]
    with open(folder / "anytime_accuracy.csv", encoding="utf-8") as fin:
        points = list(csv.DictReader(fin))
    # every 3 batches over the stream (48, 96, 144, ... clips) and at each task's end (128, 256)
    assert [int(p["clips_seen"]) for p in points] == [48, 96, 128, 144, 192, 240, 256]
    # The curve at a task's end is the matrix row (pooled over tasks of equal test size).
    for k, clips in ((0, 128), (1, 256)):
        point = next(p for p in points if int(p["clips_seen"]) == clips)
        row = results["accuracy_matrix"][k][:k + 1]
        assert float(point["accuracy"]) == pytest.approx(sum(row) / len(row), abs=1e-6)
        assert [float(point[f"acc_task{j}"]) for j in range(k + 1)] == pytest.approx(row, abs=1e-6)


def test_the_count_would_see_a_second_epoch(tmp_path, synth_data_folder, monkeypatch):
    """The same count on an offline run of 2 epochs: each clip twice (so the test above can fail)."""
    calls = collections.Counter()

    class Counting(STRATEGIES["er"].brain):
        def fit_batch(self, batch):
            calls.update(batch.id)
            return super().fit_batch(batch)

    monkeypatch.setitem(STRATEGIES, "er", STRATEGIES["er"]._replace(brain=Counting))
    _run(tmp_path, synth_data_folder, "er", "--online=False", "--number_of_epochs=2", "--stop_after_task=0")
    assert set(calls.values()) == {2} and len(calls) == 128


@pytest.mark.parametrize("extra, message", [
    (("--number_of_epochs=2",), "number_of_epochs must be 1, got 2"),
    (("--strategy=lwf",), "online=True is not supported by strategy=lwf"),
    (("--mem_manage=prototype",), "mem_manage='prototype' is not valid with online=True"),
    (("--use_mixup=True",), "use_mixup=True is not supported with online=True"),
    (("--anytime_eval_every=-1",), "anytime_eval_every=-1 is not valid"),
])
def test_online_refuses_what_breaks_the_one_pass_stream_in_one_line(tmp_path, synth_data_folder, extra, message):
    with pytest.raises(SystemExit, match=message):
        _run(tmp_path, synth_data_folder, "er", *extra)


@pytest.mark.parametrize("name", ["er_ace", "derpp"])
def test_er_ace_and_derpp_run_online_with_their_losses_on_the_replayed_rows(tmp_path, synth_data_folder,
                                                                             monkeypatch, name):
    log = _recording(monkeypatch, name)
    results = _run(tmp_path, synth_data_folder, name, "--anytime_eval_every=0")
    folder = tmp_path / name / "1986"
    assert _uses(log) == collections.Counter(_training_ids(folder))
    assert [len(t["online"]["anytime"]) for t in results["per_task"]] == [1, 1]  # task ends only
    brain = log["brain"]
    if name == "er_ace":
        from_memory, _ = brain.last_masks  # the last batch: its replayed rows are the memory rows
        assert int(from_memory.sum()) == len(log["replayed"][-1]) == 8
        assert results["memory_policy"] == "OnlineMemory(ReservoirMemory(memory_size=8))"
    else:
        state = json.loads((folder / "save" / "task1" / "task_state.json").read_text())["policy_state"]
        assert set(state["logits"]) == set(state["ids"]) == set(log["after"][-1][0])
        assert all(len(v) == 10 for v in state["logits"].values())
        assert brain.stored is brain.stream.logits and brain.last_mse > 0
        # a memory clip's logits are those of the step that brought it in: unchanged by later training
        after0 = json.loads((folder / "save" / "task0" / "task_state.json").read_text())["policy_state"]["logits"]
        kept = set(after0) & set(state["logits"])
        assert all(after0[i] == state["logits"][i] for i in kept)
        assert results["per_task"][1]["online"]["memory_bytes_end"] > 4 * 8 * 10  # audio + logits


class _Killed(RuntimeError):
    pass


def test_online_run_killed_between_or_inside_tasks_resumes(tmp_path, synth_data_folder, monkeypatch):
    """Stopped after task 0: the rerun gives the uninterrupted run's matrix, anytime points and memory.
    Killed at batch 5 of task 1 with a checkpoint after every batch (ckpt_interval_steps=1): the rerun goes
    on from batch 5 with the memory and log of batch 4 (the same stream, draws and memory; dropout draws
    differ, as in any mid-epoch resume: the new loader iterator takes a seed from torch's RNG)."""
    every_batch = "--ckpt_interval_steps=1"
    full = _run(tmp_path, synth_data_folder, "derpp", "--anytime_eval_every=3", every_batch)
    _run(tmp_path, synth_data_folder, "derpp", "--anytime_eval_every=3", "--stop_after_task=0", name="stopped")
    stopped = _run(tmp_path, synth_data_folder, "derpp", "--anytime_eval_every=3", name="stopped")
    assert stopped["accuracy_matrix"] == full["accuracy_matrix"]
    assert [t["online"]["anytime"] for t in stopped["per_task"]] == [t["online"]["anytime"] for t in full["per_task"]]
    assert _state(tmp_path, "stopped") == _state(tmp_path, "derpp")
    curve = (tmp_path / "stopped" / "1986" / "anytime_accuracy.csv").read_text()
    assert curve == (tmp_path / "derpp" / "1986" / "anytime_accuracy.csv").read_text()

    spec = STRATEGIES["derpp"]
    kill, streamed = [True], []

    class Killed(spec.online):
        def fit_batch(self, batch):
            if kill[0] and self.task_id == 1 and self.step == 5:
                raise _Killed()
            if not kill[0] and self.task_id == 1:
                streamed.extend(batch.id)
            return super().fit_batch(batch)

    monkeypatch.setitem(STRATEGIES, "derpp", spec._replace(online=Killed))
    with pytest.raises(_Killed):
        _run(tmp_path, synth_data_folder, "derpp", "--anytime_eval_every=3", every_batch, name="killed")
    kill[0] = False  # the rerun is not killed
    killed = _run(tmp_path, synth_data_folder, "derpp", "--anytime_eval_every=3", every_batch, name="killed")
    assert len(streamed) == len(set(streamed)) == 4 * 16  # batches 5 to 8 only
    task1 = {r["ID"] for r in csv.DictReader(open(tmp_path / "killed" / "1986" / "save" / "train_task1.csv"))}
    assert set(streamed) < task1
    batches = killed["per_task"][1]["online"]["batches"]
    assert [(b["batch"], b["clips_seen"]) for b in batches] == [
        (b["batch"], b["clips_seen"]) for b in full["per_task"][1]["online"]["batches"]]
    state, reference = _state(tmp_path, "killed"), _state(tmp_path, "derpp")
    assert {k: v for k, v in state.items() if k != "logits"} == {k: v for k, v in reference.items() if k != "logits"}
    assert set(state["logits"]) == set(reference["logits"])


def _state(base, name):
    return json.loads((base / name / "1986" / "save" / "task1" / "task_state.json").read_text())["policy_state"]


def test_merge_batch_keeps_the_batch_rows_first_and_their_lengths():
    import torch
    from speechbrain.dataio.batch import PaddedBatch

    batch = PaddedBatch([{"id": "a", "sig": torch.ones(3), "class_idx": 1}, {"id": "b", "sig": torch.ones(5), "class_idx": 2}])
    merged = online.merge_batch(batch, [{"id": "m", "sig": torch.full((4,), 2.0), "class_idx": 0}])
    assert merged.id == ["a", "b", "m"]
    assert [int(c) for c in merged.class_idx] == [1, 2, 0]
    wavs, lens = merged.sig
    assert wavs.shape == (3, 5) and torch.allclose(lens * 5, torch.tensor([3.0, 5.0, 4.0]))
    assert float(wavs[2, :4].sum()) == 8.0 and float(wavs[0, 3:].abs().sum()) == 0.0
    with pytest.raises(ValueError, match="replayed examples have keys"):
        online.merge_batch(batch, [{"id": "m", "sig": torch.ones(2)}])
