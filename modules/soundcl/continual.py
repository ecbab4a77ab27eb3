"""The task loop shared by every soundcl method, and the Brain base class it drives.

For each task ``k`` the loop

1. builds the task's training set (current task + replay memory) and validation
   set (current task + replayed validation clips),
2. gives the Brain a fresh epoch counter and LR scheduler, and a Checkpointer
   writing to ``<save_folder>/task{k}/``,
3. fits (SpeechBrain resumes an interrupted task from its last checkpoint),
4. keeps the best checkpoint as the task's final one (``CKPT+final``),
5. tests on the test sets of tasks ``0..k`` (row ``k`` of the accuracy matrix),
6. asks the memory policy for the new replay memory,
7. writes ``task{k}/task_state.json`` atomically: the task is then finished and
   a rerun skips it.

Randomness is derived from ``(seed, task, epoch)`` rather than carried along, so
a rerun that skips finished tasks draws exactly what an uninterrupted run draws.
"""
import copy
import hashlib
import json
import logging
import math
import os
import random
import time
import zlib

import numpy as np
import torch

import speechbrain as sb
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.distributed import if_main_process

from soundcl import metrics
from soundcl.checkpoints import SafeCheckpointer

logger = logging.getLogger(__name__)

TASK_STATE_FILE = "task_state.json"
FINAL_CKPT_NAME = "final"


def derive_seed(*parts):
    """A 31-bit seed that is a pure function of ``parts`` (ints or strings)."""
    return zlib.crc32(":".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def seed_everything(seed):
    """Seed python, numpy and torch (all devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@register_checkpoint_hooks
class RandomState:
    """Checkpointable RNG states, so a mid-epoch resume continues the same draws."""

    @mark_as_saver
    def _save(self, path):
        torch.save(
            {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            path,
        )

    @mark_as_loader
    def _load(self, path, end_of_epoch=False):
        state = torch.load(path, weights_only=False)
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if state["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class ContinualBrain(sb.Brain):
    """Brain that knows which task it is in and which classes it has seen.

    Subclasses implement ``compute_forward`` / ``compute_objectives`` as usual
    and may update ``self.n_correct`` / ``self.n_total`` / ``self.predictions``
    in VALID and TEST stages; this class turns them into accuracies.

    Expected hparams: ``seed``, ``n_classes``, ``audio`` (an
    :class:`soundcl.audio.AudioPipeline`), ``epoch_counter``, optionally
    ``train_logger``.
    """

    #: Validation statistic that selects the best checkpoint of a task, and
    #: whether larger is better.
    best_key = ("acc", "max")

    #: Independent training crops per clip (2 for two-view SSL); the recipe
    #: builds training sets with this many views (``sig``, ``sig_view1`` ...).
    n_train_views = 1

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.task_id = 0
        self.seen_classes = []
        self.last_stage_stats = {}

    # ------------------------------------------------------------------ tasks
    def begin_task(self, task_id, seen_classes):
        """Called by the task loop before fitting task ``task_id``."""
        self.task_id = int(task_id)
        self.seen_classes = sorted(int(c) for c in seen_classes)

    def prepare_task_data(self, task_dir, task_data):
        """Called by the task loop once task ``task_id``'s clips are chosen, before fitting.

        ``task_data`` is the :class:`TaskData` of the task (training,
        validation and test rows); ``task_dir`` its folder. A Brain may
        precompute per-clip tensors here (e.g. frozen-encoder embeddings).
        The default does nothing.
        """

    def seen_mask(self, device):
        """Boolean mask [n_classes] of the classes seen up to the current task."""
        mask = torch.zeros(self.hparams.n_classes, dtype=torch.bool, device=device)
        mask[self.seen_classes] = True
        return mask

    def _wrap_distributed(self):
        """DDP-wrap trainable modules once, and keep plain BatchNorm on CPU.

        SpeechBrain converts BatchNorm to SyncBatchNorm, which only runs on
        GPUs (so gloo/CPU training would fail), and it would wrap the modules
        again at every ``fit``, i.e. at every task.
        """
        if not self.distributed_launch:
            return super()._wrap_distributed()
        from torch.nn.parallel import DistributedDataParallel

        on_gpu = str(self.device).startswith("cuda")
        for name, module in self.modules.items():
            if isinstance(module, DistributedDataParallel) or not any(p.requires_grad for p in module.parameters()):
                continue
            if on_gpu:
                module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
            self.modules[name] = DistributedDataParallel(
                module,
                device_ids=[self.device] if on_gpu else None,
                find_unused_parameters=self.find_unused_parameters,
            )

    def on_evaluate_start(self, max_key=None, min_key=None):
        # SpeechBrain would reload a checkpoint before every test set; the
        # task loop has already loaded the task's final weights.
        pass

    # ------------------------------------------------------------- stages
    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN:
            # step > 0 means a mid-epoch checkpoint was just recovered, with
            # its RNG state: reseeding would change the rest of the epoch.
            epoch_seed = derive_seed(self.hparams.seed, self.task_id, epoch)
            if self.step == 0:
                seed_everything(epoch_seed)
            self.hparams.audio.set_crop_seed(epoch_seed)
        self.n_correct = 0
        self.n_total = 0
        self.targets = []
        self.predictions = []

    def fit_batch(self, batch):
        self.batch_ids = list(batch.id)  # named if the loss is not finite
        return super().fit_batch(batch)

    def check_loss_isfinite(self, loss):
        if not torch.isfinite(loss):
            logger.warning(
                "non-finite loss (%s) in task %d, batch of clips: %s",
                float(loss), self.task_id, ", ".join(getattr(self, "batch_ids", [])),
            )
        super().check_loss_isfinite(loss)

    def record_predictions(self, logits, targets):
        """Accumulate accuracy statistics of a batch.

        logits [batch, n_classes] (unseen classes already masked), targets [batch].
        """
        predicted = logits.argmax(dim=-1)
        self.n_correct += int((predicted == targets).sum())
        self.n_total += int(targets.numel())
        self.targets.extend(targets.tolist())
        self.predictions.extend(predicted.tolist())

    def stage_accuracy(self):
        return self.n_correct / max(1, self.n_total)

    def before_testing(self, train_rows, make_dataset, loader_kwargs):
        """Called by the task loop before it scores the test sets of tasks ``0..k``.

        ``train_rows``: the training rows of tasks ``0..k`` (all of them, not only
        the memory), for Brains whose scoring needs reference data (e.g. kNN).
        The default does nothing.
        """

    def evaluate_accuracy(self, dataset, loader_kwargs):
        """Accuracy and confusion matrix of the current model on ``dataset``."""
        # SpeechBrain edits the loader kwargs it is given: pass a copy.
        self.evaluate(dataset, progressbar=not self.noprogressbar, test_loader_kwargs=dict(loader_kwargs))
        confusion = metrics.confusion_matrix(self.targets, self.predictions, self.hparams.n_classes)
        return self.stage_accuracy(), confusion


class TaskData:
    """The clips task ``k`` trains, validates and is tested on.

    Attributes
    ----------
    train : list of manifest rows
    valid : list of manifest rows
    test_tasks : list of int
        Tasks whose test sets fill row ``k`` of the accuracy matrix.
    test : dict task -> list of manifest rows
    """

    def __init__(self, train, valid, test_tasks, test):
        self.train = list(train)
        self.valid = list(valid)
        self.test_tasks = list(test_tasks)
        self.test = dict(test)


class CurrentTaskWithMemory:
    """The default task data policy: the current task plus the replay memory.

    Training: the clips of task ``k`` and of the memory. Validation: task ``k``'s
    validation clips plus, for each earlier task, the same fraction of its
    validation clips as the memory holds of its training clips. Test: tasks
    ``0..k``.

    A task data policy has one method, ``select(k, memory_ids, loop) -> TaskData``
    (``loop`` is the :class:`TaskLoop`, for its rows, seed and helpers).
    """

    def select(self, k, memory_ids, loop):
        rng = np.random.RandomState(derive_seed(loop.seed, k, "valid-replay"))
        train = list(loop.task_rows["train"][k]) + [loop.rows_by_id[i] for i in memory_ids]
        valid_ids = loop._replay_valid(k, memory_ids, rng)
        valid = list(loop.task_rows["valid"][k]) + [loop.rows_by_id[i] for i in valid_ids]
        tests = list(range(k + 1))
        return TaskData(train, valid, tests, {j: loop.task_rows["test"][j] for j in tests})


class TaskLoop:
    """Runs a Brain through the tasks of a class-incremental split.

    Arguments
    ---------
    brain : ContinualBrain
    task_rows : dict
        ``{"train": [rows of task 0, rows of task 1, ...], "valid": ..., "test": ...}``
        with manifest rows (dicts with ``ID`` and ``class_idx``).
    make_dataset : callable
        ``make_dataset(rows, train: bool)`` -> a Dataset for the brain.
    save_folder : str
        Holds ``task{k}/`` folders.
    output_folder : str
        Where results go.
    recoverables : dict
        Modules saved in every checkpoint (models, feature normaliser ...).
    per_task_state : list of str
        Names of hparams objects (epoch counter, LR scheduler) that start fresh
        for every task and are checkpointed with it.
    memory_policy : object, optional
        ``select(memory_ids, task_rows, context) -> list of ids``; ``None`` keeps nothing.
    train_loader_kwargs, eval_loader_kwargs : dict
    seed : int
    task_classes : list of list of int, optional
        Classes of each task (default: those found in the training rows).
    stop_after_task : int, optional
        Stop (cleanly, resumable) once this task is finished.
    task_dir_format : str
        Name of task ``k``'s folder under ``save_folder`` (``"task{}"``;
        ``"stage{}"`` for sequential-transfer recipes).
    task_data_policy : object, optional
        ``select(k, memory_ids, loop) -> TaskData``: which clips task ``k``
        trains, validates and is tested on (default :class:`CurrentTaskWithMemory`).
    """

    def __init__(
        self,
        brain,
        task_rows,
        make_dataset,
        save_folder,
        output_folder,
        recoverables,
        per_task_state=("epoch_counter",),
        memory_policy=None,
        train_loader_kwargs=None,
        eval_loader_kwargs=None,
        seed=0,
        task_classes=None,
        stop_after_task=None,
        task_dir_format="task{}",
        task_data_policy=None,
    ):
        self.brain = brain
        self.task_dir_format = task_dir_format
        self.task_rows = task_rows
        self.make_dataset = make_dataset
        self.save_folder = save_folder
        self.output_folder = output_folder
        self.recoverables = dict(recoverables)
        self.memory_policy = memory_policy
        self.train_loader_kwargs = train_loader_kwargs or {}
        self.eval_loader_kwargs = eval_loader_kwargs or {}
        self.seed = seed
        self.stop_after_task = stop_after_task
        self.task_data_policy = task_data_policy if task_data_policy is not None else CurrentTaskWithMemory()
        self.n_tasks = len(task_rows["train"])
        self.task_classes = task_classes or [
            sorted({int(r["class_idx"]) for r in rows}) for rows in task_rows["train"]
        ]
        # Pristine copies: every task starts from the state the YAML describes.
        self.pristine = {name: copy.deepcopy(getattr(brain.hparams, name)) for name in per_task_state}
        self.rows_by_id = {
            row["ID"]: row for split in ("train", "valid") for rows in task_rows[split] for row in rows
        }

    # ---------------------------------------------------------------- helpers
    def task_dir(self, k):
        return os.path.join(self.save_folder, self.task_dir_format.format(k))

    def load_task_state(self, k):
        path = os.path.join(self.task_dir(k), TASK_STATE_FILE)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def _write_task_state(self, k, state):
        path = os.path.join(self.task_dir(k), TASK_STATE_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, path)

    def _fresh_task_objects(self):
        fresh = {name: copy.deepcopy(obj) for name, obj in self.pristine.items()}
        for name, obj in fresh.items():
            setattr(self.brain.hparams, name, obj)
        return fresh

    def make_checkpointer(self, k, extra=None):
        recoverables = dict(self.recoverables)
        recoverables.update(extra or {})
        return SafeCheckpointer(self.task_dir(k), recoverables=recoverables)

    def load_final_weights(self, k):
        """Load the final model of finished task ``k`` (models and normaliser only)."""
        checkpointer = SafeCheckpointer(self.task_dir(k), recoverables=self.recoverables)
        ckpt = checkpointer.recover_if_possible(ckpt_predicate=lambda c: c.meta.get(FINAL_CKPT_NAME))
        if ckpt is None:
            raise FileNotFoundError(
                f"task {k} is marked finished but {self.task_dir(k)} holds no final checkpoint"
            )

    def _keep_best_as_final(self, checkpointer):
        """Recover the best checkpoint of the task and keep it alone as ``CKPT+final``."""
        final = checkpointer.find_checkpoint(ckpt_predicate=lambda c: c.meta.get(FINAL_CKPT_NAME))
        if final is not None:
            checkpointer.load_checkpoint(final)
            return final.meta
        key, direction = self.brain.best_key
        kwargs = {"max_key": key} if direction == "max" else {"min_key": key}
        ckpt = checkpointer.recover_if_possible(
            ckpt_predicate=lambda c: key in c.meta, **kwargs
        ) or checkpointer.recover_if_possible()
        meta = dict(ckpt.meta) if ckpt is not None else {}
        meta[FINAL_CKPT_NAME] = True
        # Written before the others are deleted: a kill in between leaves the
        # final one plus leftovers, never nothing.
        # (Both calls synchronise DDP processes themselves: call them on all.)
        checkpointer.save_checkpoint(meta=meta, name=FINAL_CKPT_NAME, verbosity=logging.DEBUG)
        checkpointer.delete_checkpoints(
            num_to_keep=0, ckpt_predicate=lambda c: not c.meta.get(FINAL_CKPT_NAME), verbosity=logging.DEBUG
        )
        return meta

    def _replay_valid(self, k, memory_ids, rng):
        """Replayed validation clips: for each earlier task, the same fraction of
        its validation clips as the memory holds of its training clips."""
        memory = set(memory_ids)
        kept = []
        for j in range(k):
            train_ids = [r["ID"] for r in self.task_rows["train"][j]]
            valid_ids = [r["ID"] for r in self.task_rows["valid"][j]]
            if not train_ids or not valid_ids:
                continue
            fraction = sum(i in memory for i in train_ids) / len(train_ids)
            n_keep = int(math.ceil(fraction * len(valid_ids)))
            if n_keep:
                kept.extend(sorted(rng.choice(valid_ids, size=n_keep, replace=False).tolist()))
        return kept

    # ------------------------------------------------------------------- run
    def run(self):
        """Train and test task after task; return the results dict."""
        n = self.n_tasks
        matrix = np.full((n, n), np.nan)
        memory_ids, per_task = [], []
        policy_state = None
        loaded_task = None  # index of the task whose final weights the models hold

        for k in range(n):
            seen = sorted(c for j in range(k + 1) for c in self.task_classes[j])
            state = self.load_task_state(k)
            if state is not None and state.get("finished"):
                logger.info("task %d already finished: reusing %s", k, self.task_dir(k))
                matrix[k] = [np.nan if v is None else v for v in state["accuracy_row"]]
                memory_ids = state["memory"]
                policy_state = state.get("policy_state")
                per_task.append(state["stats"])
                continue

            if k > 0 and loaded_task != k - 1:
                self.load_final_weights(k - 1)
            if self.memory_policy is not None and policy_state is not None and hasattr(self.memory_policy, "load_state_dict"):
                self.memory_policy.load_state_dict(policy_state)

            stats = self._run_task(k, seen, memory_ids, matrix)
            loaded_task = k

            # Memory update, after testing: the memory serves the next task.
            start = time.time()
            context = MemoryContext(k, self.brain, self.rows_by_id, seen, self.make_dataset, self.eval_loader_kwargs,
                                    np.random.RandomState(derive_seed(self.seed, k, "memory")))
            if self.memory_policy is not None:
                memory_ids = list(self.memory_policy.select(memory_ids, self.task_rows["train"][k], context))
                if len(set(memory_ids)) != len(memory_ids):
                    raise RuntimeError(f"memory policy {self.memory_policy!r} returned duplicate clips")
                # The main process decides: every process trains on the same memory.
                memory_ids = sb.utils.distributed.ddp_broadcast(memory_ids, src=0)
                self._record_rank_memory(k, memory_ids)
            stats["memory_update_s"] = time.time() - start
            stats["memory_size"] = len(memory_ids)
            stats["memory_per_class"] = _count_per_class(memory_ids, self.rows_by_id)
            policy_state = self.memory_policy.state_dict() if hasattr(self.memory_policy, "state_dict") else None

            per_task.append(stats)
            if if_main_process():
                self._write_task_state(
                    k,
                    {
                        "finished": True,
                        "accuracy_row": [None if math.isnan(v) else float(v) for v in matrix[k]],
                        "memory": memory_ids,
                        "policy_state": policy_state,
                        "stats": stats,
                    },
                )
                self._write_results(matrix, per_task, partial=k < n - 1)
            sb.utils.distributed.ddp_barrier()
            if self.stop_after_task is not None and k >= self.stop_after_task and k < n - 1:
                logger.info("stopping after task %d as asked (stop_after_task); rerun to continue", k)
                return self._write_results(matrix, per_task, partial=True, announce=True)

        return self._write_results(matrix, per_task, partial=False, announce=True)

    def _record_rank_memory(self, k, memory_ids):
        """In DDP runs, each process notes the memory it holds (a digest), so
        that a run can be checked for every process training on the same data."""
        if not self.brain.distributed_launch:
            return
        digest = hashlib.sha1("\n".join(memory_ids).encode()).hexdigest()
        rank = torch.distributed.get_rank()
        path = os.path.join(self.task_dir(k), f"memory_rank{rank}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"rank": rank, "n_clips": len(memory_ids), "sha1": digest}, f)

    def _run_task(self, k, seen, memory_ids, matrix):
        brain = self.brain
        logger.info("=== task %d/%d: classes %s (memory: %d clips) ===", k, self.n_tasks - 1, self.task_classes[k], len(memory_ids))
        seed_everything(derive_seed(self.seed, k))
        brain.begin_task(k, seen)
        fresh = self._fresh_task_objects()
        os.makedirs(self.task_dir(k), exist_ok=True)
        checkpointable = {name: obj for name, obj in fresh.items() if _is_checkpointable(obj)}
        brain.checkpointer = self.make_checkpointer(k, {**checkpointable, "rng": RandomState()})
        # SpeechBrain registers the brain itself as a recoverable only at init.
        brain.checkpointer.add_recoverable("brain", brain)

        task_data = self.task_data_policy.select(k, memory_ids, self)
        train_rows, valid_rows = task_data.train, task_data.valid
        start = time.time()
        brain.prepare_task_data(self.task_dir(k), task_data)
        prepare_time = time.time() - start

        start = time.time()
        brain.fit(
            brain.hparams.epoch_counter,
            self.make_dataset(train_rows, train=True),
            self.make_dataset(valid_rows, train=False) if valid_rows else None,
            train_loader_kwargs=dict(self.train_loader_kwargs),
            valid_loader_kwargs=dict(self.eval_loader_kwargs),
        )
        train_time = time.time() - start
        best_meta = self._keep_best_as_final(brain.checkpointer)

        start = time.time()
        brain.before_testing(
            [row for j in range(k + 1) for row in self.task_rows["train"][j]], self.make_dataset, self.eval_loader_kwargs
        )
        confusions = []
        tested = task_data.test_tasks
        for j in tested:
            acc, confusion = brain.evaluate_accuracy(self.make_dataset(task_data.test[j], train=False), self.eval_loader_kwargs)
            matrix[k, j] = acc
            confusions.append(confusion.tolist())
        test_time = time.time() - start
        logger.info(
            "task %d: test accuracy per task %s",
            k,
            " ".join(f"{100 * matrix[k, j]:.1f}" for j in tested),
        )
        if if_main_process():
            with open(os.path.join(self.task_dir(k), "test_stats.json"), "w", encoding="utf-8") as f:
                json.dump({"accuracy": [matrix[k, j] for j in tested], "tasks": tested, "confusion": confusions}, f)
        return {
            "task": k,
            "classes": list(self.task_classes[k]),
            "n_train": len(train_rows),
            "n_valid": len(valid_rows),
            "prepare_time_s": prepare_time,
            "train_time_s": train_time,
            "test_time_s": test_time,
            "best_valid": {key: v for key, v in best_meta.items() if isinstance(v, (int, float)) and key != FINAL_CKPT_NAME},
        }

    def _write_results(self, matrix, per_task, partial, announce=False):
        if not if_main_process():
            return None
        extra = {
            "finished_tasks": len(per_task),
            "partial": partial,
            "time_spent_s": float(sum(
                t.get("prepare_time_s", 0) + t.get("train_time_s", 0) + t.get("test_time_s", 0) + t.get("memory_update_s", 0)
                for t in per_task
            )),
            "per_task": per_task,
            # Wall time of each memory update (published replay results report it).
            "memory_update_s": [t.get("memory_update_s") for t in per_task],
        }
        done = len(per_task)  # statistics of the tasks finished so far
        results = metrics.write_results(self.output_folder, matrix[:done, :done], extra=extra, plot=not partial)
        if announce:
            table = metrics.format_matrix_table(matrix[:done, :done], metrics.cl_summary(matrix[:done, :done]))
            if self.memory_policy is not None:
                table += "\nmemory update time per task (s): " + " ".join(
                    f"{t.get('memory_update_s', 0.0):.2f}" for t in per_task
                )
            logger.info("results in %s\n%s", self.output_folder, table)
        return results


class MemoryContext:
    """What a memory policy may use: the model, the clips, a seeded RNG.

    Attributes
    ----------
    task_id : int
    brain : ContinualBrain (its models hold the final weights of task ``task_id``)
    rows_by_id : dict id -> manifest row
    seen_classes : list of int
    make_dataset : callable ``(rows, train) -> Dataset``
    loader_kwargs : dict, for evaluation loaders
    rng : numpy.random.RandomState
    """

    def __init__(self, task_id, brain, rows_by_id, seen_classes, make_dataset, loader_kwargs, rng):
        self.task_id = task_id
        self.brain = brain
        self.rows_by_id = rows_by_id
        self.seen_classes = seen_classes
        self.make_dataset = make_dataset
        self.loader_kwargs = loader_kwargs
        self.rng = rng


def _is_checkpointable(obj):
    """Whether SpeechBrain's Checkpointer knows how to save ``obj``."""
    from speechbrain.utils.checkpoints import DEFAULT_SAVE_HOOKS, get_default_hook

    return get_default_hook(obj, DEFAULT_SAVE_HOOKS) is not None


def _count_per_class(ids, rows_by_id):
    counts = {}
    for i in ids:
        c = str(rows_by_id[i]["class_idx"])
        counts[c] = counts.get(c, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: int(kv[0])))
