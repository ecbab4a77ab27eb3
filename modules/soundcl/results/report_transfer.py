"""The report's second table: task-incremental accuracy, transfer and resources of each run.

Recomputed from each run's results.json (:mod:`soundcl.results.metrics`):

* ``A_last_til`` / ``A_avg_til``: the statistics of the task-IL matrix (``task_il`` block);
* ``FWT`` / ``FWT_til`` (Lopez-Paz & Ranzato 2017): ``R[j-1, j] - b_j`` averaged over
  ``j >= 1``, ``b_j`` the model before task 0 (``initial_model_reference``);
* ``plasticity``: the mean of the diagonal ``R[k, k]``;
* ``intransigence`` (Chaudhry et al. 2018): ``a*_k - R[k, k]`` averaged over tasks, ``a*_k``
  the mean diagonal of a ``joint_incremental`` experiment of the same data (the model trained
  jointly on tasks ``0..k``) among the reported runs: :func:`joint_reference` names it;
* resources: the largest per-task peak RSS, peak GPU memory and replay-memory bytes
  (MiB), and the update time (training + memory update) summed over tasks.
"""
import json
import math

import numpy as np

from soundcl.results import metrics

#: (key, column title, scale) of the second table.
TRANSFER_STATS = (
    ("A_last_til", "task-IL A_last (%)", 100),
    ("A_avg_til", "task-IL A_avg (%)", 100),
    ("FWT", "FWT (%)", 100),
    ("FWT_til", "task-IL FWT (%)", 100),
    ("plasticity", "plasticity (%)", 100),
    ("intransigence", "intransigence (%)", 100),
    ("peak_rss_mib", "peak RSS (MiB)", 1),
    ("peak_gpu_mib", "peak GPU (MiB)", 1),
    ("memory_mib", "memory (MiB)", 1),
    ("update_time_s", "update time (s)", 1),
)
#: Hparams a joint_incremental reference must share with the experiment (where the experiment has them).
SAME_DATA_KEYS = ("data_folder", "task_classes", "n_classes", "prepare_data", "train_folds", "valid_folds",
                  "test_folds", "sample_rate")
MIB = 2 ** 20


def _matrix(rows):
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)


def _vector(values, n):
    values = list(values or [])[:n]
    return np.array([np.nan if v is None else v for v in values] + [np.nan] * (n - len(values)), dtype=float)


def _fwt(matrix, before, reference):
    n = matrix.shape[0]
    return metrics.forward_transfer(metrics.future_matrix(matrix, _vector(before, n)), _vector(reference, n))


def _max_mib(values):
    defined = [v for v in values or [] if v is not None]
    return max(defined) / MIB if defined else math.nan


def transfer_stats(results, matrix):
    """The second table's statistics of one run (NaN where its results.json has no such entry)."""
    til_block = results.get("task_il") or {}
    reference = results.get("initial_model_reference") or {}
    resources = results.get("resources") or {}
    out = {key: math.nan for key, _, _ in TRANSFER_STATS}
    out["plasticity"] = float(np.mean(metrics.plasticity(matrix)))
    out["FWT"] = _fwt(matrix, results.get("accuracy_before_training"), reference.get("accuracy"))
    if "accuracy_matrix" in til_block:
        til = _matrix(til_block["accuracy_matrix"])
        summary = metrics.cl_summary(til)
        out["A_last_til"], out["A_avg_til"] = summary["A_last"], summary["A_avg"]
        out["FWT_til"] = _fwt(til, til_block.get("accuracy_before_training"), reference.get("task_il_accuracy"))
    out["peak_rss_mib"] = _max_mib(resources.get("peak_rss_bytes"))
    out["peak_gpu_mib"] = _max_mib(resources.get("peak_gpu_bytes"))
    out["memory_mib"] = _max_mib(resources.get("memory_bytes"))
    times = [t for t in resources.get("update_time_s") or [] if t is not None]
    out["update_time_s"] = float(sum(times)) if times else math.nan
    return out


def _value(config, key):
    return json.loads(config[key]) if key in config else None


def joint_reference(experiment, experiments):
    """The ``joint_incremental`` experiment whose runs are the intransigence reference of ``experiment``:
    same data (:data:`SAME_DATA_KEYS`) and number of tasks, finished runs, and the fewest other
    differing hparams; None when there is none (or ``experiment`` is one)."""
    config = dict(experiment.key)
    if _value(config, "strategy") == "joint_incremental" or not experiment.finished:
        return None
    candidates = []
    for other in experiments:
        other_config = dict(other.key)
        if other is experiment or _value(other_config, "strategy") != "joint_incremental" or not other.finished:
            continue
        if any(other_config.get(key) != config[key] for key in SAME_DATA_KEYS if key in config):
            continue
        differing = sum(other_config.get(key) != value for key, value in config.items())
        candidates.append((differing, other.label, other))
    return min(candidates, key=lambda c: c[:2])[2] if candidates else None


def add_intransigence(experiment, per_run, reference):
    """Set ``intransigence`` in each of ``per_run`` (the runs' stats with their ``matrix``) against the
    mean diagonal of ``reference``'s finished runs (NaN when the numbers of tasks differ)."""
    if reference is None:
        return
    diagonals = [metrics.plasticity(s["matrix"]) for s in (r.stats() for r in reference.finished)]
    joint = np.mean(diagonals, axis=0)
    for stats in per_run:
        if stats["matrix"].shape[0] == joint.shape[0]:
            stats["intransigence"] = metrics.intransigence(stats["matrix"], joint)
