"""Online continual learning: one pass over the stream, the memory updated per batch.

``online: True`` (``hparams/<dataset>/online_train.yaml``, ``recipes/sup_train.py``) turns the
strategies ``er``, ``er_ace`` and ``derpp`` into their online form, on the same task loop:

* task data (:class:`OnlineStream`): task ``k``'s training clips only, one epoch
  (``number_of_epochs: 1``), shuffled inside the task; each clip reaches the training
  step once, as sounds would arrive on a device;
* training step (:class:`OnlineTraining`, a mixin of the strategy's Brain): the incoming
  batch plus ``replay_batch_size`` clips drawn uniformly from the memory (a fresh
  training crop per draw), one update with the strategy's own loss; then the memory
  policy (reservoir by default; ``uncertainty`` too, per batch) sees the incoming clips;
* anytime evaluation: every ``anytime_eval_every`` batches (counted over the whole
  stream) and at each task's end, accuracy on the test clips of every class seen so far
  (the classes of tasks 0..k);
* what a device pays: per batch, the wall time of the update (replay draw, step, memory
  update) and the memory's size in bytes as stored (decoded float32 audio at
  ``sample_rate``, the full clip, as the audio cache holds it; DER++ adds its float32
  logits), in ``results.json`` (``per_task[k]["online"]``), ``online_batches.csv`` and
  ``anytime_accuracy.csv`` / ``.png`` (:mod:`soundcl.results.anytime`).

Resuming: the memory and the per-task log are checkpoint recoverables of the task, so a run
killed after a task resumes at the next one; killed inside a task, it restarts that task from
the previous task's final model and memory (the same stream order and draws: seeds derive from
the task and batch index), or, with ``ckpt_interval_minutes > 0``, from the last intra-task
checkpoint, with the memory and log of that batch.
"""
import json
import os
import time

import numpy as np
import torch

import speechbrain as sb
from speechbrain.dataio.batch import PaddedBatch, PaddedData
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.distributed import if_main_process

from soundcl.base.contract import REQUIRED, ConfigError
from soundcl.base.randomness import derive_seed
from soundcl.core.task_data import CurrentTaskWithMemory
from soundcl.core.task_loop import TASK_STATE_FILE, MemoryContext
from soundcl.memory.policies import FixedSizeMemory, MemoryPolicy
from soundcl.memory.scores import plain_predictions
from soundcl.results import anytime
from soundcl.results.resources import BYTES_PER_VALUE, audio_nbytes

#: Memory policies that can be updated batch by batch (``mem_manage`` in online mode).
ONLINE_MEM_MANAGE = ("reservoir", "random", "balanced_random", "uncertainty")
#: Keys the uncertainty policy reads (as recipes/replay_train.py's YAMLs name them).
UNCERTAINTY_KEYS = ("uncert_metric", "metric_k", "noise_lambda", "uncertainty_from_task")


def _epochs(hparams):
    counter = hparams.get("epoch_counter")
    limit = getattr(counter, "limit", None)
    if limit is None and hasattr(counter, "get"):
        limit = counter.get("limit")  # previewed YAML: the !new: node's mapping
    return hparams.get("number_of_epochs") if limit is None else limit


def online_strategy(spec, name, hparams):
    """The online form of strategy ``spec`` (a ``Strategy`` of :mod:`.strategies`); ConfigError if it has none
    or the hparams break the one-pass stream."""
    if spec.online is None:
        raise ConfigError(f"online=True is not supported by strategy={name}: use er, er_ace or derpp")
    epochs = _epochs(hparams)
    if epochs is not None and int(epochs) != 1:
        raise ConfigError(f"online=True sees each clip once: number_of_epochs must be 1, got {epochs}")
    if dict(hparams["train_dataloader_opts"]).get("drop_last"):
        raise ConfigError("online=True sees each clip once: drop_last=True in train_dataloader_opts would leave the "
                          "last clips of each task unseen; set drop_last: False")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("online=True runs on one process (one stream, one memory): run without torchrun")
    if hparams["use_mixup"]:
        raise ConfigError("use_mixup=True is not supported with online=True: set use_mixup=False")
    every = hparams.get("anytime_eval_every", OnlineTraining.HPARAMS["anytime_eval_every"])
    if not isinstance(every, int) or every < 0:
        raise ConfigError(f"anytime_eval_every={every!r} is not valid: expected an integer >= 0 (0: task ends only)")
    brain = type(f"Online{spec.brain.__name__}", (spec.online, spec.brain), {"__module__": __name__})
    return spec._replace(brain=brain, task_data=OnlineStream, memory=spec.online.memory_class, online=None)


class OnlineStream(CurrentTaskWithMemory):
    """Task ``k``'s training clips only (the memory is replayed by the training step, not trained
    as rows); ``replay_rows``: every clip the memory may hold during the task (memory + task ``k``).
    Validation and test as :class:`CurrentTaskWithMemory`."""

    def select(self, k, memory_ids, task_rows, seed):
        data = super().select(k, memory_ids, task_rows, seed)
        data.replay_rows = data.train
        data.train = list(task_rows["train"][k])
        return data

    def __repr__(self):
        return f"OnlineStream(valid_replay={self.valid_replay!r})"


@register_checkpoint_hooks
class OnlineMemory(MemoryPolicy):
    """The fixed-size memory of an online run, updated after every training batch by a memory
    policy of :mod:`soundcl.memory.policies` (``mem_manage``) seeing the batch's clips.

    Shared by the Brain (which updates it) and the task loop (which saves it with each task:
    its end-of-task ``select`` returns the memory as it stands). State: the clip ids, the
    policy's state (reservoir: clips seen), the stream counters and, with ``keep_logits``,
    each memory clip's logits [n_classes] from the training step that brought it in.
    """

    HPARAMS = {"memory_size": REQUIRED, "mem_manage": REQUIRED, "sample_rate": REQUIRED}
    keep_logits = False

    @classmethod
    def from_hparams(cls, hparams):
        mem_manage = str(hparams["mem_manage"])
        if mem_manage not in ONLINE_MEM_MANAGE:
            raise ConfigError(f"mem_manage={mem_manage!r} is not valid with online=True: expected one of "
                              f"{', '.join(ONLINE_MEM_MANAGE)}")
        missing = [key for key in UNCERTAINTY_KEYS if key not in hparams] if mem_manage == "uncertainty" else []
        if missing:
            raise ConfigError(f"mem_manage=uncertainty needs the key '{missing[0]}' (as replay_train.yaml sets it)")
        policy_hparams = {"mode": "replay", "mem_manage": mem_manage, "memory_size": hparams["memory_size"],
                          "sample_rate": hparams["sample_rate"], **{k: hparams[k] for k in UNCERTAINTY_KEYS if k in hparams}}
        return cls(FixedSizeMemory.from_hparams(policy_hparams))

    def __init__(self, policy):
        self.policy = policy
        self.ids = []
        self.logits = {}  # clip id -> FloatTensor [n_classes]; updated in place (the Brain holds it)
        self.n_streamed = 0  # stream clips trained on so far (all tasks)
        self.n_batches = 0  # training batches so far (all tasks)
        self.device = "cpu"  # where stored logits live (the Brain's device)

    def select(self, memory_ids, task_rows, context):
        return list(self.ids)  # the loop's end-of-task call: updated batch by batch already

    def update(self, rows, context, logits=None):
        """Let the policy see the clips just trained on (``rows``, manifest rows); ``logits``
        [len(rows), n_classes]: their raw logits, stored for the clips that enter (``keep_logits``)."""
        before = set(self.ids)
        ids = list(self.policy.select(list(self.ids), rows, context))
        if len(set(ids)) != len(ids):
            raise RuntimeError(f"memory policy {self.policy!r} returned duplicate clips")
        self.ids = ids
        if self.keep_logits:
            if logits is None:
                raise ValueError("this memory stores logits: update() needs the batch's logits")
            position = {row["ID"]: i for i, row in enumerate(rows)}
            for clip_id in ids:
                if clip_id not in before:
                    self.logits[clip_id] = logits[position[clip_id]].detach().float().to(self.device)
            for clip_id in set(self.logits) - set(ids):
                del self.logits[clip_id]  # evicted clips leave with their logits

    def draw(self, n, rng):
        """``min(n, memory size)`` distinct memory clips, uniformly at random."""
        n = min(int(n), len(self.ids))
        return [self.ids[i] for i in sorted(rng.choice(len(self.ids), size=n, replace=False).tolist())] if n else []

    def nbytes(self, rows_by_id, sample_rate):
        """Bytes of the memory as stored: float32 audio of each full clip at ``sample_rate`` plus float32 logits."""
        return audio_nbytes(self.ids, rows_by_id, sample_rate) + BYTES_PER_VALUE * sum(
            int(t.numel()) for t in self.logits.values())

    def state_dict(self):
        return {"policy": self.policy.state_dict(), "ids": list(self.ids), "n_streamed": self.n_streamed,
                "n_batches": self.n_batches,
                "logits": {i: [float(v) for v in t.cpu()] for i, t in self.logits.items()}}  # float32 round-trips

    def load_state_dict(self, state):
        if state["policy"] is not None:
            self.policy.load_state_dict(state["policy"])
        self.ids = list(state["ids"])
        self.n_streamed, self.n_batches = int(state["n_streamed"]), int(state["n_batches"])
        self.logits.clear()
        self.logits.update({i: torch.tensor(v, dtype=torch.float32, device=self.device)
                            for i, v in state["logits"].items()})

    @mark_as_saver
    def _save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.state_dict(), f)

    @mark_as_loader
    def _load(self, path, end_of_epoch=False):
        with open(path, encoding="utf-8") as f:
            self.load_state_dict(json.load(f))

    def __repr__(self):
        return f"{type(self).__name__}({self.policy!r})"


class OnlineLogitMemory(OnlineMemory):
    """:class:`OnlineMemory` that also stores each clip's logits when it enters (DER++)."""

    keep_logits = True


@register_checkpoint_hooks
class OnlineLog:
    """The current task's per-batch records and anytime-evaluation points (checkpointed with it)."""

    def __init__(self):
        self.batches, self.points = [], []

    @mark_as_saver
    def _save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"batches": self.batches, "points": self.points}, f)

    @mark_as_loader
    def _load(self, path, end_of_epoch=False):
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        self.batches, self.points = state["batches"], state["points"]


def merge_batch(batch, examples):
    """The training ``batch`` (a PaddedBatch, its rows first) followed by ``examples`` (dicts with
    the same keys; waveforms unpadded), as one PaddedBatch."""
    keys = [key for key in vars(batch) if not key.startswith("_PaddedBatch__")]
    if examples and set(examples[0]) != set(keys):
        raise ValueError(f"replayed examples have keys {sorted(examples[0])}, the training batch {sorted(keys)}")
    rows = []
    for i in range(len(batch)):
        row = {}
        for key in keys:
            value = getattr(batch, key)
            if isinstance(value, PaddedData):
                length = int(round(float(value.lengths[i]) * value.data.shape[1]))
                row[key] = value.data[i, :length]
            else:
                item = value[i]
                row[key] = item.item() if torch.is_tensor(item) and item.dim() == 0 else item
        rows.append(row)
    return PaddedBatch(rows + [{key: example[key] for key in keys} for example in examples])


class OnlineTraining:
    """Brain mixin of the online mode (ER: the strategy's Brain is :class:`SupervisedBrain`, whose
    cross-entropy over the seen classes covers incoming and replayed rows alike)."""

    HPARAMS = {
        # Anytime evaluation every this many training batches (whole stream); 0: at task ends only.
        "anytime_eval_every": 10,
        # Memory clips replayed with each incoming batch; null: as many as the incoming batch holds.
        "replay_batch_size": None,
        "eval_dataloader_opts": REQUIRED,
        "output_folder": REQUIRED,
        "save_folder": REQUIRED,
        "task_dir_format": "task{}",
    }
    memory_class = OnlineMemory
    stream = None  # the OnlineMemory (attach_memory)
    replayed = frozenset()  # ids of the memory clips in the current training batch

    def attach_memory(self, memory):
        if not isinstance(memory, OnlineMemory):
            raise TypeError(f"online training updates an OnlineMemory, got {memory!r}")
        self.stream = memory
        memory.device = self.device

    def prepare_task_data(self, task_dir, task_data):
        super().prepare_task_data(task_dir, task_data)
        if self.stream is None:
            raise RuntimeError("online training needs its memory: call brain.attach_memory(memory) first")
        self.stream_rows = {row["ID"]: row for row in task_data.replay_rows}
        self.anytime_tests = [task_data.test[j] for j in task_data.test_tasks]
        self.log = OnlineLog()
        self.checkpointer.add_recoverable("online_memory", self.stream)
        self.checkpointer.add_recoverable("online_log", self.log)

    def _clock(self):
        if str(self.device).startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter()

    def fit_batch(self, batch):
        start = self._clock()
        rows = [self.stream_rows[i] for i in batch.id]
        seed = self.hparams.seed
        n_replay = self.hparams.replay_batch_size
        draw = self.stream.draw(len(rows) if n_replay is None else n_replay,
                                np.random.RandomState(derive_seed(seed, self.task_id, self.step, "online-replay")))
        self.replayed = frozenset(draw)
        if draw:
            batch = merge_batch(batch, [self.replay_example(i) for i in draw])
        drawn = self._clock()
        loss = super().fit_batch(batch)
        stepped = self._clock()
        context = MemoryContext(self.task_id, self, self.stream_rows, self.seen_classes, self.make_task_dataset,
                                dict(self.hparams.eval_dataloader_opts),
                                np.random.RandomState(derive_seed(seed, self.task_id, self.step, "online-memory")))
        self.stream.update(rows, context, logits=self.incoming_logits(len(rows)))
        updated = self._clock()
        self.stream.n_streamed += len(rows)
        self.stream.n_batches += 1
        self.log.batches.append({
            "task": self.task_id, "batch": self.step, "clips_seen": self.stream.n_streamed, "n_incoming": len(rows),
            "n_replayed": len(draw), "memory_clips": len(self.stream.ids),
            "memory_bytes": self.stream.nbytes(self.stream_rows, self.hparams.audio.sample_rate),
            "replay_s": drawn - start, "step_s": stepped - drawn, "memory_s": updated - stepped,
            "update_s": updated - start,
        })
        every = int(self.hparams.anytime_eval_every)
        if every and self.stream.n_batches % every == 0:
            self.anytime_eval()
        return loss

    def replay_example(self, clip_id):
        """A training example of memory clip ``clip_id``: a fresh crop for each draw (keyed by the batch)."""
        row, audio = self.stream_rows[clip_id], self.hparams.audio
        crop = audio.train_crop(audio.load(row["wav"]), f"{clip_id}:replay{self.stream.n_batches}")
        return {"id": clip_id, "sig": crop, "class_idx": int(row["class_idx"])}

    def incoming_logits(self, n_incoming):
        """Raw logits [n_incoming, n_classes] of the incoming rows for a memory that stores them (DER++)."""
        return None

    def anytime_eval(self):
        """Accuracy on the test clips of tasks 0..k (all classes seen so far), pooled and per task."""
        rows = [row for test in self.anytime_tests for row in test]
        context = MemoryContext(self.task_id, self, {r["ID"]: r for r in rows}, self.seen_classes,
                                self.make_task_dataset, dict(self.hparams.eval_dataloader_opts), None)
        correct = (plain_predictions([r["ID"] for r in rows], context)
                   == torch.tensor([int(r["class_idx"]) for r in rows])).float()
        bounds = np.cumsum([0] + [len(test) for test in self.anytime_tests])
        self.log.points.append({
            "task": self.task_id, "batch": self.step, "clips_seen": self.stream.n_streamed,
            "accuracy": float(correct.mean()) if rows else float("nan"), "n_test": len(rows),
            "per_task": [float(correct[a:b].mean()) if b > a else float("nan") for a, b in zip(bounds, bounds[1:])],
        })

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN and (not self.log.points or self.log.points[-1]["clips_seen"] != self.stream.n_streamed):
            self.anytime_eval()  # the task's end: the curve meets the accuracy matrix's row
        super().on_stage_end(stage, stage_loss, epoch)

    def fit_report(self):
        report = super().fit_report()
        batches = self.log.batches
        report["online"] = {
            "clips_streamed": sum(b["n_incoming"] for b in batches),
            "memory_clips_end": len(self.stream.ids),
            "memory_bytes_end": self.stream.nbytes(self.stream_rows, self.hparams.audio.sample_rate),
            "memory_bytes_max": max((b["memory_bytes"] for b in batches), default=0),
            **{f"{key}_per_batch": anytime.time_summary([b[key] for b in batches])
               for key in ("update_s", "step_s", "replay_s", "memory_s")},
            "batches": batches,
            "anytime": self.log.points,
        }
        return report

    def end_task(self, task_dir, task_data):
        super().end_task(task_dir, task_data)
        if if_main_process():
            self.write_stream_files()

    def write_stream_files(self):
        """The run's anytime curve and per-batch CSV, tasks 0..k (earlier tasks from their task_state.json)."""
        batches, points = [], []
        for j in range(self.task_id):
            with open(os.path.join(self.task_dir(j), TASK_STATE_FILE), encoding="utf-8") as f:
                online = json.load(f)["stats"]["online"]
            batches += online["batches"]
            points += online["anytime"]
        folder = self.hparams.output_folder
        anytime.write_batches_csv(folder, batches + self.log.batches)
        anytime.write_anytime_curve(folder, points + self.log.points)


class OnlineERACE(OnlineTraining):
    """ER-ACE online (Caccia et al.'s setting): the memory rows are the replayed ones (the memory
    holds current-task clips too, as the paper's buffer updated during the stream)."""

    def memory_rows(self, targets, ids):
        """Bool [batch]: rows drawn from the memory for this batch."""
        return torch.tensor([i in self.replayed for i in ids], dtype=torch.bool, device=targets.device)


class OnlineDerpp(OnlineTraining):
    """DER++ online: each clip's logits are those of the training step that brought it into the
    memory (Buzzega et al.'s reservoir buffer), the live dict of the memory."""

    memory_class = OnlineLogitMemory

    def begin_task(self, task_id, seen_classes):
        super().begin_task(task_id, seen_classes)
        self.stored = self.stream.logits

    def incoming_logits(self, n_incoming):
        return self.raw_logits[:n_incoming].detach()
