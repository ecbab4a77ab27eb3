"""The task loop shared by every soundcl method.

For each task ``k`` the loop

1. asks the task-data policy which clips task ``k`` trains, validates and is tested on,
2. gives the Brain a fresh epoch counter and LR scheduler, and a Checkpointer
   writing to ``<save_folder>/task{k}/``,
3. fits (SpeechBrain resumes an interrupted task from its last checkpoint),
4. keeps the best checkpoint as the task's final one (``CKPT+final``) and
   calls the Brain's ``end_task`` (e.g. EWC's Fisher information),
5. tests on the test sets the policy names (row ``k`` of the accuracy matrix),
6. asks the memory policy for the new replay memory,
7. writes ``task{k}/task_state.json`` atomically: the task is then finished and
   a rerun skips it.

Its collaborators are constructor arguments: the Brain (what is learnt and
how), the task-data policy (:mod:`soundcl.core.task_data`) and the memory policy
(:mod:`soundcl.memory.policies`).
"""
import copy
import hashlib
import json
import logging
import math
import os
import time

import numpy as np
import torch

import speechbrain as sb
from speechbrain.utils.checkpoints import DEFAULT_SAVE_HOOKS, get_default_hook
from speechbrain.utils.distributed import if_main_process

from soundcl.results import metrics
from soundcl.base.checkpoints import SafeCheckpointer
from soundcl.base.contract import REQUIRED
from soundcl.base.atomic import write_json_atomic
from soundcl.base.randomness import RandomState, derive_seed, seed_everything
from soundcl.core.run_files import write_inference_yaml
from soundcl.core.run_metrics import RunMetrics, plot_task_confusion, summary_line

logger = logging.getLogger(__name__)

TASK_STATE_FILE = "task_state.json"
FINAL_CKPT_NAME = "final"
#: Meta flag (and name) of the last epoch's checkpoint kept besides the final one (``keep_last_checkpoint``).
LAST_CKPT_NAME = "last"


class TaskLoop:
    """Runs a Brain through the tasks of a class-incremental split.

    Arguments
    ---------
    brain : soundcl.core.continual.ContinualBrain
    task_rows : dict
        ``{"train": [rows of task 0, rows of task 1, ...], "valid": ..., "test": ...}``
        with manifest rows (dicts with ``ID`` and ``class_idx``).
    task_data : task-data policy
        ``select(k, memory_ids, task_rows, seed) -> TaskData`` (:mod:`soundcl.core.task_data`).
    memory : memory policy
        ``select(memory_ids, task_rows_k, context) -> ids`` (:mod:`soundcl.memory.policies`).
    hparams : dict
        The run's hparams; the loop reads the keys of ``HPARAMS``.
    """

    HPARAMS = {
        "seed": REQUIRED,
        "save_folder": REQUIRED,
        "output_folder": REQUIRED,
        # Modules saved in every checkpoint (models, feature normaliser ...).
        "checkpoint_recoverables": REQUIRED,
        # Names of hparams objects (epoch counter, LR scheduler) that start
        # fresh for every task and are checkpointed with it.
        "per_task_state": REQUIRED,
        "train_dataloader_opts": REQUIRED,
        "eval_dataloader_opts": REQUIRED,
        # Classes of each task; null: those found in each task's training rows.
        "task_classes": REQUIRED,
        "stop_after_task": None,
        "task_dir_format": "task{}",
        # True: when the best checkpoint is not the last epoch's, keep the last one too as
        # CKPT+last (linear evaluation of the most recent encoder, as cssl_sound's linclf_train.py).
        "keep_last_checkpoint": False,
        # True: save/task<k>/confusion_matrix.png next to test_stats.json (the tested tasks' classes).
        "confusion_png": True,
        # True: also test task k+1 after task k, before training it, and the model before task 0 (forward transfer).
        "eval_future_tasks": True,
    }

    def __init__(self, brain, task_rows, task_data, memory, hparams):
        self.brain = brain
        self.task_rows = task_rows
        self.task_data = task_data
        self.memory = memory
        self.seed = hparams["seed"]
        self.save_folder = hparams["save_folder"]
        self.output_folder = hparams["output_folder"]
        self.recoverables = dict(hparams["checkpoint_recoverables"])
        self.train_loader_kwargs = dict(hparams["train_dataloader_opts"])
        self.eval_loader_kwargs = dict(hparams["eval_dataloader_opts"])
        self.stop_after_task = hparams["stop_after_task"]
        self.keep_last_checkpoint = bool(hparams.get("keep_last_checkpoint", False))
        self.task_dir_format = hparams["task_dir_format"]
        self.confusion_png = hparams["confusion_png"]
        self.task_classes = hparams["task_classes"] or [
            sorted({int(r["class_idx"]) for r in rows}) for rows in task_rows["train"]
        ]
        # A task-data policy may regroup the tasks (joint training: one task of every class).
        if hasattr(task_data, "regroup"):
            task_rows, self.task_classes = task_data.regroup(task_rows, self.task_classes)
            self.task_rows = task_rows
        self.n_tasks = len(task_rows["train"])
        brain.task_classes = [list(classes) for classes in self.task_classes]
        self.run_metrics = RunMetrics(self, hparams["eval_future_tasks"])  # task-IL, FWT, resources
        # Pristine copies: every task starts from the state the YAML describes.
        self.pristine = {name: copy.deepcopy(hparams[name]) for name in hparams["per_task_state"]}
        self.rows_by_id = {
            row["ID"]: row for split in ("train", "valid") for rows in task_rows[split] for row in rows
        }

    # ---------------------------------------------------------------- folders
    def task_dir(self, k):
        return os.path.join(self.save_folder, self.task_dir_format.format(k))

    def load_task_state(self, k):
        path = os.path.join(self.task_dir(k), TASK_STATE_FILE)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def load_final_weights(self, k):
        """Load the final model of finished task ``k`` (the recoverables only)."""
        checkpointer = SafeCheckpointer(self.task_dir(k), recoverables=self.recoverables)
        if checkpointer.recover_if_possible(ckpt_predicate=lambda c: c.meta.get(FINAL_CKPT_NAME)) is None:
            raise FileNotFoundError(f"task {k} is marked finished but {self.task_dir(k)} holds no final checkpoint")

    def _keep_best_as_final(self, checkpointer):
        """Recover the best checkpoint of the task and keep it alone as ``CKPT+final``.

        With ``keep_last_checkpoint``, the last epoch's checkpoint, when it is not
        the best, stays too as ``CKPT+last`` (meta ``last: True``); the final one
        has ``last: True`` when it is the last epoch's.
        """
        final = checkpointer.find_checkpoint(ckpt_predicate=lambda c: c.meta.get(FINAL_CKPT_NAME))
        if final is not None:
            checkpointer.load_checkpoint(final)
            return {k: v for k, v in final.meta.items() if k != LAST_CKPT_NAME}
        key, direction = self.brain.best_key
        kwargs = {"max_key": key} if direction == "max" else {"min_key": key}
        latest = checkpointer.find_checkpoint(ckpt_predicate=lambda c: not c.meta.get(LAST_CKPT_NAME))
        if latest is not None and self.keep_last_checkpoint and not checkpointer.find_checkpoint(
            ckpt_predicate=lambda c: c.meta.get(LAST_CKPT_NAME)
        ):
            best = checkpointer.find_checkpoint(ckpt_predicate=lambda c: key in c.meta, **kwargs)
            if best is not None and best.path != latest.path:
                checkpointer.load_checkpoint(latest)
                checkpointer.save_checkpoint(meta={**latest.meta, LAST_CKPT_NAME: True}, name=LAST_CKPT_NAME,
                                             verbosity=logging.DEBUG)
        ckpt = checkpointer.recover_if_possible(
            ckpt_predicate=lambda c: key in c.meta and not c.meta.get(LAST_CKPT_NAME), **kwargs
        )
        ckpt = ckpt or checkpointer.recover_if_possible(ckpt_predicate=lambda c: not c.meta.get(LAST_CKPT_NAME))
        meta = dict(ckpt.meta) if ckpt is not None else {}
        meta[FINAL_CKPT_NAME] = True
        # The final weights are those of the last epoch too: an encoder evaluation
        # asking for the most recent checkpoint finds them here.
        meta[LAST_CKPT_NAME] = ckpt is not None and latest is not None and ckpt.path == latest.path
        # Written before the others are deleted: a kill in between leaves the
        # final one plus leftovers, never nothing. Both calls synchronise DDP
        # processes themselves: call them on all.
        checkpointer.save_checkpoint(meta=meta, name=FINAL_CKPT_NAME, verbosity=logging.DEBUG)
        checkpointer.delete_checkpoints(
            num_to_keep=0,
            ckpt_predicate=lambda c: not c.meta.get(FINAL_CKPT_NAME) and not c.meta.get(LAST_CKPT_NAME),
            verbosity=logging.DEBUG,
        )
        meta.pop(LAST_CKPT_NAME)
        return meta

    # ------------------------------------------------------------------- run
    def run(self):
        """Train and test task after task; return the results dict (None on other DDP processes)."""
        n = self.n_tasks
        matrix = np.full((n, n), np.nan)
        memory_ids, per_task = [], []
        policy_state = None
        loaded_task = None  # index of the task whose final weights the models hold
        if if_main_process():
            write_inference_yaml(self)  # the run's inference interface (soundcl.inference)
        first = self.load_task_state(0)  # the model before task 0 is the reference of forward transfer
        self.run_metrics.measure_reference(task0_finished=bool(first and first.get("finished")))

        for k in range(n):
            seen = sorted(c for j in range(k + 1) for c in self.task_classes[j])
            state = self.load_task_state(k)
            if state is not None and state.get("finished"):
                logger.info("task %d already finished: reusing %s", k, self.task_dir(k))
                row = [np.nan if v is None else v for v in state["accuracy_row"]]
                matrix[k, :len(row)] = row  # a run extended by a task later (soundcl.extend) has more columns
                memory_ids, policy_state = state["memory"], state["policy_state"]
                per_task.append(state["stats"])
                self.run_metrics.load_task_state(k, state)
                continue

            if k > 0 and loaded_task != k - 1:
                self.load_final_weights(k - 1)
            if policy_state is not None:
                self.memory.load_state_dict(policy_state)

            self.run_metrics.start_task()
            stats = self._run_task(k, seen, memory_ids, matrix)
            loaded_task = k
            memory_ids = self._update_memory(k, seen, memory_ids, stats)
            policy_state = self.memory.state_dict()
            self.run_metrics.end_task(stats, memory_ids)

            per_task.append(stats)
            if if_main_process():
                write_json_atomic(os.path.join(self.task_dir(k), TASK_STATE_FILE), {
                    "finished": True,
                    "accuracy_row": [None if math.isnan(v) else float(v) for v in matrix[k]],
                    "memory": memory_ids,
                    "policy_state": policy_state,
                    "stats": stats,
                    **self.run_metrics.task_state(k),
                }, indent=1)
                self._write_results(matrix, per_task, partial=k < n - 1)
            sb.utils.distributed.ddp_barrier()
            if self.stop_after_task is not None and k >= self.stop_after_task and k < n - 1:
                logger.info("stopping after task %d as asked (stop_after_task); rerun to continue", k)
                return self._write_results(matrix, per_task, partial=True, announce=True)

        return self._write_results(matrix, per_task, partial=False, announce=True)

    def _update_memory(self, k, seen, memory_ids, stats):
        """The memory for the next task, chosen after testing task ``k``."""
        start = time.time()
        context = MemoryContext(k, self.brain, self.rows_by_id, seen, self.brain.make_task_dataset,
                                self.eval_loader_kwargs, np.random.RandomState(derive_seed(self.seed, k, "memory")))
        memory_ids = list(self.memory.select(memory_ids, self.task_rows["train"][k], context))
        if len(set(memory_ids)) != len(memory_ids):
            raise RuntimeError(f"memory policy {self.memory!r} returned duplicate clips")
        # The main process decides: every process trains on the same memory.
        memory_ids = sb.utils.distributed.ddp_broadcast(memory_ids, src=0)
        self._record_rank_memory(k, memory_ids)
        stats["memory_update_s"] = time.time() - start
        stats["memory_size"] = len(memory_ids)
        stats["memory_per_class"] = _count_per_class(memory_ids, self.rows_by_id)
        return memory_ids

    def _record_rank_memory(self, k, memory_ids):
        """In DDP runs, each process notes the memory it holds (a digest): are all training on the same data?"""
        if not self.brain.distributed_launch:
            return
        digest = hashlib.sha1("\n".join(memory_ids).encode()).hexdigest()
        rank = torch.distributed.get_rank()
        path = os.path.join(self.task_dir(k), f"memory_rank{rank}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"rank": rank, "n_clips": len(memory_ids), "sha1": digest}, f)

    def _fresh_task_objects(self):
        fresh = {name: copy.deepcopy(obj) for name, obj in self.pristine.items()}
        for name, obj in fresh.items():
            setattr(self.brain.hparams, name, obj)
        return fresh

    def _run_task(self, k, seen, memory_ids, matrix):
        brain = self.brain
        logger.info("=== task %d/%d: classes %s (memory: %d clips) ===",
                    k, self.n_tasks - 1, self.task_classes[k], len(memory_ids))
        seed_everything(derive_seed(self.seed, k))
        brain.begin_task(k, seen)
        fresh = self._fresh_task_objects()
        os.makedirs(self.task_dir(k), exist_ok=True)
        checkpointable = {name: obj for name, obj in fresh.items() if get_default_hook(obj, DEFAULT_SAVE_HOOKS)}
        brain.checkpointer = SafeCheckpointer(
            self.task_dir(k), recoverables={**self.recoverables, **checkpointable, "rng": RandomState()}
        )
        # SpeechBrain registers the brain itself as a recoverable only at init.
        brain.checkpointer.add_recoverable("brain", brain)

        task_data = self.task_data.select(k, memory_ids, self.task_rows, self.seed)
        start = time.time()
        brain.prepare_task_data(self.task_dir(k), task_data)
        prepare_time = time.time() - start

        check_training_batches(k, len(task_data.train), self.train_loader_kwargs)
        start = time.time()
        brain.fit(
            brain.hparams.epoch_counter,
            brain.make_task_dataset(task_data.train, train=True),
            brain.make_task_dataset(task_data.valid, train=False) if task_data.valid else None,
            train_loader_kwargs=dict(self.train_loader_kwargs),
            valid_loader_kwargs=dict(self.eval_loader_kwargs),
        )
        train_time = time.time() - start
        fit_report = brain.fit_report()  # before the best checkpoint (and its state) is reloaded
        best_meta = self._keep_best_as_final(brain.checkpointer)
        brain.end_task(self.task_dir(k), task_data)

        start = time.time()
        brain.before_testing([row for j in range(k + 1) for row in self.task_rows["train"][j]], self.eval_loader_kwargs)
        confusions = []
        for j in task_data.test_tasks:  # also task-IL (R_til), and task k+1 before training it
            matrix[k, j], self.run_metrics.til[k, j], confusion = self.run_metrics.score(task_data.test[j],
                                                                                         self.task_classes[j])
            confusions.append(confusion.tolist())
        self.run_metrics.score_future_task(k, task_data)
        test_time = time.time() - start
        logger.info("task %d: test accuracy per task %s", k,
                    " ".join(f"{100 * matrix[k, j]:.1f}" for j in task_data.test_tasks))
        if if_main_process():
            write_json_atomic(os.path.join(self.task_dir(k), "test_stats.json"), {
                "accuracy": [matrix[k, j] for j in task_data.test_tasks],
                "tasks": task_data.test_tasks,
                "confusion": confusions,
            })
            if self.confusion_png and confusions:
                plot_task_confusion(self.task_dir(k), k, task_data, confusions)
        return {
            "task": k,
            "classes": list(self.task_classes[k]),
            "n_train": len(task_data.train),
            "n_valid": len(task_data.valid),
            "tested_tasks": list(task_data.test_tasks),
            "seen_classes": [int(c) for c in brain.seen_classes],  # what the test scored over (inference)
            "prepare_time_s": prepare_time,
            "train_time_s": train_time,
            "test_time_s": test_time,
            "best_valid": {key: v for key, v in best_meta.items()
                           if isinstance(v, (int, float)) and key != FINAL_CKPT_NAME},
            **fit_report, **brain.test_report(),
        }

    def _write_results(self, matrix, per_task, partial, announce=False):
        if not if_main_process():
            return None
        extra = {
            "finished_tasks": len(per_task),
            "partial": partial,
            "time_spent_s": float(sum(
                t.get("prepare_time_s", 0) + t.get("train_time_s", 0) + t.get("test_time_s", 0)
                + t.get("memory_update_s", 0)
                for t in per_task
            )),
            "per_task": per_task,
            # Wall time of each memory update (published replay results report it).
            "memory_update_s": [t.get("memory_update_s") for t in per_task],
            # CPU results are bit-identical only for the same thread count (reductions split by thread).
            "torch_num_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "task_data_policy": repr(self.task_data),
            "memory_policy": repr(self.memory),
        }
        if per_task and all("best_test_epoch" in t for t in per_task):
            # Two model selections, each named: the matrix's and ASC-CL's published one.
            extra["model_selection"] = "best validation epoch of each task (accuracy_matrix and its statistics)"
            extra["best_test_epoch"] = metrics.best_test_epoch_summary([t["best_test_epoch"] for t in per_task])
        done = len(per_task)  # statistics of the tasks finished so far
        extra.update(self.run_metrics.results(matrix, done, per_task))
        results = metrics.write_results(self.output_folder, matrix[:done, :done], extra=extra, plot=not partial)
        if announce:
            table = metrics.format_matrix_table(matrix[:done, :done], metrics.cl_summary(matrix[:done, :done]))
            table += "\nmemory update time per task (s): " + " ".join(
                f"{t.get('memory_update_s', 0.0):.2f}" for t in per_task
            )
            logger.info("results in %s\n%s\n%s", self.output_folder, table, summary_line(results))
        return results


def check_training_batches(k, n_clips, loader_kwargs):
    """Stop in one line when task ``k``'s training set gives no batch (``drop_last`` with fewer
    clips per process than ``batch_size``, e.g. a small one-class task): it would not train at all."""
    batch_size = int(loader_kwargs.get("batch_size", 1))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if loader_kwargs.get("drop_last") and n_clips // world < batch_size:
        raise ValueError(
            f"task {k} has {n_clips} training clips ({n_clips // world} per process), fewer than batch_size="
            f"{batch_size} with drop_last=True in train_dataloader_opts: no training batch at all; "
            f"lower batch_size (or give the task more clips)"
        )


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


def _count_per_class(ids, rows_by_id):
    counts = {}
    for i in ids:
        c = str(rows_by_id[i]["class_idx"])
        counts[c] = counts.get(c, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: int(kv[0])))
