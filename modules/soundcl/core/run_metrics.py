"""What the task loop measures beside the class-incremental accuracy matrix.

* task-incremental accuracy: every test set the loop scores is also scored with the
  predictions restricted to its task's classes (the task id given), the matrix ``R_til``;
* the accuracy on task ``k+1`` after task ``k``, before training it (``eval_future_tasks``),
  scored over the classes of tasks ``0..k+1`` (the label space the model will have once it
  trains task ``k+1``): the cells ``R[k, k+1]`` of forward transfer;
* the model before task 0 (its initialisation, random unless the recipe loads pretrained
  weights) scored once on every task ``j``'s test set, over the classes of tasks ``0..j``:
  the reference ``b_j`` of forward transfer, kept in ``save/initial_model_reference.json``
  so that a resumed run reads it back instead of measuring another model. The input
  normaliser has no statistics before training (it cannot run): for this pass only they
  are estimated on task 0's training clips (full clips, as the first epoch would), then
  emptied again, so that training starts as it would without the reference;
* each task's resources: peak RSS (and GPU memory), the replay memory's bytes as stored,
  the update time (:mod:`soundcl.results.resources`).

A Brain whose test cannot score a task it has not trained (kNN over a bank of the seen
tasks, iCaRL's exemplar means ...) says why in ``future_eval_unsupported``; its forward
transfer is then null with that reason. A Brain whose test path records no class scores
(:meth:`ContinualBrain.record_predictions`) has a null task-IL block with the reason.
"""
import contextlib
import json
import logging
import math
import os

import numpy as np
import torch

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process

from soundcl.base.atomic import write_json_atomic
from soundcl.results import metrics
from soundcl.results.resources import PeakMeter, audio_nbytes, resources_summary

logger = logging.getLogger(__name__)

REFERENCE_FILE = "initial_model_reference.json"
#: How the replay memory is stored: clip ids whose decoded audio the audio cache holds.
MEMORY_STORED_AS = "audio (float32 waveform of each full clip at sample_rate)"


def _json_value(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


class RunMetrics:
    """Task-IL matrix, accuracies before training, the initial model's reference and resources of a run."""

    def __init__(self, loop, eval_future_tasks=True):
        self.loop = loop
        self.brain = loop.brain
        n = loop.n_tasks
        self.til = np.full((n, n), np.nan)
        self.before = np.full(n, np.nan)  # before[j] = R[j-1, j] scored by the extra test (class-IL)
        self.before_til = np.full(n, np.nan)
        self.eval_future_tasks = bool(eval_future_tasks)
        self.til_unsupported = None
        self.reference = None  # {"accuracy": [b_j], "task_il_accuracy": [...]} or {"unavailable": reason}
        self.meter = None

    # ------------------------------------------------------------------ scoring
    def score(self, rows, classes):
        """Class-IL accuracy, task-IL accuracy (None if the Brain cannot) and confusion of ``rows``."""
        brain = self.brain
        brain.eval_task_classes, brain.til_predictions = list(classes), []
        try:
            acc, confusion = brain.evaluate_accuracy(brain.make_task_dataset(rows, train=False),
                                                     self.loop.eval_loader_kwargs)
            til = brain.task_il_accuracy()
        finally:
            brain.eval_task_classes = None
        if til is None:
            self.til_unsupported = (f"{type(brain).__name__}'s test records no class scores "
                                    "(ContinualBrain.record_predictions): no task-incremental accuracy")
        return acc, (np.nan if til is None else til), confusion

    def _score_over(self, seen, rows, classes):
        """:meth:`score` with the Brain's seen classes temporarily ``seen`` (the label space scored over)."""
        kept = self.brain.seen_classes
        self.brain.seen_classes = sorted(int(c) for c in seen)
        try:
            acc, til, _ = self.score(rows, classes)
        finally:
            self.brain.seen_classes = kept
        return acc, til

    def _classes_up_to(self, j):
        return sorted({int(c) for t in range(j + 1) for c in self.loop.task_classes[t]})

    def future_unsupported(self):
        """Why the accuracy before training cannot be measured in this run; None when it can."""
        if not self.eval_future_tasks:
            return "eval_future_tasks is False"
        if self.loop.n_tasks < 2:
            return "a single task"
        return self.brain.future_eval_unsupported

    def score_future_task(self, k, task_data):
        """Score task ``k+1``'s test set after task ``k`` (before training it), unless the policy tests it."""
        j = k + 1
        if j >= self.loop.n_tasks or j in task_data.test_tasks or self.future_unsupported():
            return
        self.before[j], self.before_til[j] = self._score_over(
            self._classes_up_to(j), self.loop.task_rows["test"][j], self.loop.task_classes[j])
        logger.info("task %d: accuracy on task %d before training it %.1f (task-IL %.1f)",
                    k, j, 100 * self.before[j], 100 * self.before_til[j])

    def measure_reference(self, task0_finished):
        """``b_j`` of the model before task 0, measured once (before task 0) and kept in ``save/``."""
        path = os.path.join(self.loop.save_folder, REFERENCE_FILE)
        exists = os.path.exists(path)
        sb.utils.distributed.ddp_barrier()  # every DDP process decides before the main one writes it
        if exists:
            with open(path, encoding="utf-8") as f:
                self.reference = json.load(f)
            return
        reason = self.future_unsupported()
        if reason is None and task0_finished:
            reason = f"task 0 was finished before {REFERENCE_FILE} existed: the initial model is gone"
        if reason is not None:
            self.reference = {"unavailable": reason}
            return
        accuracy, til = [], []
        # The Brain's own task-0 state (BiC's bias layer ...); the loop calls begin_task(0) again after reseeding.
        self.brain.begin_task(0, self._classes_up_to(0))
        with self._normaliser_ready() as normaliser:
            for j in range(self.loop.n_tasks):
                acc, acc_til = self._score_over(self._classes_up_to(j), self.loop.task_rows["test"][j],
                                                self.loop.task_classes[j])
                accuracy.append(_json_value(acc))
                til.append(_json_value(acc_til))
        self.reference = {
            "model": "the model before task 0 (its initialisation: random unless the recipe loads weights)",
            "input_normaliser": normaliser,
            "scored_over": "task j's test set, over the classes of tasks 0..j",
            "accuracy": accuracy,
            "task_il_accuracy": til,
        }
        logger.info("model before task 0: accuracy per task %s", " ".join(f"{100 * a:.1f}" for a in accuracy))
        if if_main_process():
            write_json_atomic(path, self.reference, indent=1)

    @contextlib.contextmanager
    def _normaliser_ready(self):
        """Statistics for an input normaliser that has none (before any training), emptied afterwards."""
        brain = self.brain
        norm = getattr(brain.modules, "mean_var_norm", None) if "mean_var_norm" in brain.modules else None
        if norm is None or getattr(norm, "count", None) != 0 or not hasattr(brain, "compute_feats"):
            yield "as initialised"
            return
        loader = sb.dataio.dataloader.make_dataloader(
            brain.make_task_dataset(self.loop.task_rows["train"][0], train=False), **dict(self.loop.eval_loader_kwargs))
        norm.train()
        try:
            with torch.no_grad():
                for batch in loader:
                    batch = batch.to(brain.device)
                    wavs, lens = batch.sig
                    brain.compute_feats(wavs, lens, sb.Stage.VALID)
            norm.eval()
            yield "statistics estimated on task 0's training clips for this measurement only"
        finally:
            norm.glob_mean, norm.glob_std, norm.count = torch.empty(0), torch.empty(0), 0

    # ------------------------------------------------------------- resources
    def start_task(self):
        self.meter = PeakMeter(getattr(self.brain, "device", None)).start()

    def end_task(self, stats, memory_ids):
        """Add ``stats["resources"]``: the task's peaks, the memory's bytes and the update time."""
        measured = self.meter.stop()
        online = stats.get("online") or {}  # online mode measured its memory itself (with DER++'s logits)
        stats["resources"] = {
            "peak_rss_bytes": measured["peak_rss_bytes"],
            "peak_rss_scope": measured["peak_rss_scope"],
            "peak_gpu_bytes": measured["peak_gpu_bytes"],
            "memory_bytes": online["memory_bytes_end"] if online else audio_nbytes(
                memory_ids, self.loop.rows_by_id, self.brain.hparams.audio.sample_rate),
            "memory_stored_as": MEMORY_STORED_AS + ("; online DER++: + float32 logits" if online else ""),
            # What a model update costs: training plus the memory update (the test is not part of it).
            "update_time_s": stats.get("train_time_s", 0.0) + stats.get("memory_update_s", 0.0),
        }

    # ------------------------------------------------------------ persistence
    def task_state(self, k):
        """Entries of ``task<k>/task_state.json``."""
        j = k + 1
        before = None
        if j < self.loop.n_tasks and not math.isnan(self.before[j]):
            before = {"class_il": _json_value(self.before[j]), "task_il": _json_value(self.before_til[j])}
        return {"task_il_row": [_json_value(v) for v in self.til[k]], "accuracy_before_next": before,
                "task_il_unsupported": self.til_unsupported}

    def load_task_state(self, k, state):
        """Read back what :meth:`task_state` wrote (a run started before these entries has none)."""
        row = [np.nan if v is None else v for v in state.get("task_il_row") or []]
        self.til[k, :len(row)] = row
        self.til_unsupported = state.get("task_il_unsupported", self.til_unsupported)
        before = state.get("accuracy_before_next")
        if before and k + 1 < self.loop.n_tasks:
            self.before[k + 1] = np.nan if before["class_il"] is None else before["class_il"]
            self.before_til[k + 1] = np.nan if before["task_il"] is None else before["task_il"]

    # --------------------------------------------------------------- results
    def results(self, matrix, done, per_task):
        """The results.json entries: plasticity and FWT (class-IL), ``task_il``, the reference, ``resources``."""
        reference = self.reference or {"unavailable": "not measured"}
        reason = reference.get("unavailable")

        def transfer(full, key):
            b = np.full(done, np.nan)  # a run extended by a task later (soundcl.extend) has no b_j for it
            if reason is None:
                values = [np.nan if v is None else v for v in reference[key]][:done]
                b[:len(values)] = values
            out = metrics.transfer_summary(full, b)
            if reason is not None:
                out["FWT_unavailable"] = reason
            return out

        out = transfer(metrics.future_matrix(matrix[:done, :done], self.before[:done]), "accuracy")
        if self.til_unsupported is not None and np.isnan(self.til[:done, :done]).all():
            out["task_il"] = {"unavailable": self.til_unsupported}
        else:
            til = self.til[:done, :done]
            out["task_il"] = {"accuracy_matrix": til.tolist(), **metrics.cl_summary(til),
                              **transfer(metrics.future_matrix(til, self.before_til[:done]), "task_il_accuracy")}
        out["initial_model_reference"] = reference
        out["resources"] = resources_summary(per_task)
        return out


def summary_line(results):
    """One log line of the task-IL accuracy, forward transfer, plasticity and peak RSS."""
    til = results.get("task_il", {})

    def pct(value, fmt=".1f"):
        return "n/a" if value is None else format(100 * value, fmt) + "%"

    peak = results["resources"]["peak_rss_bytes_max"]
    return (f"task-IL A_last={pct(til.get('A_last'))}  FWT={pct(results.get('FWT'), '+.1f')} "
            f"(task-IL {pct(til.get('FWT'), '+.1f')})  plasticity={pct(results.get('plasticity_mean'))}  "
            f"peak RSS={'n/a' if peak is None else f'{peak / 2**20:.0f} MiB'}")


def plot_task_confusion(task_dir, k, task_data, confusions):
    """``task<k>/confusion_matrix.png``: the confusion summed over the tested tasks, on their classes
    (and any other class predicted)."""
    from soundcl.results.report_plots import plot_confusion_matrix

    total = np.sum(np.asarray(confusions), axis=0)
    names = {int(r["class_idx"]): str(r.get("label", r["class_idx"]))
             for j in task_data.test_tasks for r in task_data.test[j]}
    classes = sorted(set(names) | set(np.flatnonzero(total.sum(axis=0)).tolist()))
    labels = [f"{c}: {names[c]}" if c in names else str(c) for c in classes]
    plot_confusion_matrix(os.path.join(task_dir, "confusion_matrix.png"),
                          total[np.ix_(classes, classes)], labels,
                          f"after task {k}: test sets of tasks {task_data.test_tasks}")
