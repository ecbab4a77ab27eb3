"""Continual-learning metrics over an accuracy matrix, and how they are reported.

The accuracy matrix ``R`` has shape ``[n_tasks, n_tasks]``: ``R[k, j]`` is the
accuracy on the test set of task ``j`` after training on task ``k``. Cells that
were not evaluated (``j > k`` in class-incremental learning) hold NaN.
Undefined statistics (BWT and forgetting of a single task ...) are NaN in
Python, ``null`` in results.json and results.csv and ``n/a`` in printed tables.
"""
import csv
import json
import logging
import math
import os

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from soundcl.results import curves, tensorboard_log

logger = logging.getLogger(__name__)


def _seen_row(matrix, k):
    """Accuracies of row ``k`` on tasks ``0..k`` (the tasks seen so far)."""
    return np.asarray(matrix, dtype=float)[k, : k + 1]


def average_accuracy_per_task(matrix):
    """Average accuracy ``A_k = mean_{j<=k} R[k, j]`` after each task ``k``.

    Arguments
    ---------
    matrix : array-like, shape [n_tasks, n_tasks]

    Returns
    -------
    numpy.ndarray, shape [n_tasks]
    """
    matrix = np.asarray(matrix, dtype=float)
    return np.array([_seen_row(matrix, k).mean() for k in range(matrix.shape[0])])


def backward_transfer(matrix):
    """BWT = mean over j < T-1 of ``R[T-1, j] - R[j, j]`` (negative = forgetting).

    Undefined (NaN) for a single task.
    """
    matrix = np.asarray(matrix, dtype=float)
    last = matrix.shape[0] - 1
    if last < 1:
        return float("nan")
    return float(np.mean([matrix[last, j] - matrix[j, j] for j in range(last)]))


def backward_transfer_all_steps(matrix):
    """BWT over every step (Díaz-Rodríguez et al. 2018, "Don't forget, there is more than forgetting").

    ``BWT_all = mean over all pairs k > j of R[k, j] - R[j, j]``: the drop of
    each task from its diagonal, after *every* later task, not only the last
    (:func:`backward_transfer`, Lopez-Paz & Ranzato 2017, uses row ``T-1`` only).
    Undefined (NaN) for a single task.
    """
    matrix = np.asarray(matrix, dtype=float)
    n = matrix.shape[0]
    if n < 2:
        return float("nan")
    return float(np.mean([matrix[k, j] - matrix[j, j] for k in range(1, n) for j in range(k)]))


def backward_transfer_ascl(acc_per_task):
    """ASC-CL's "BWT": mean over t = 1..T-1 of ``(A_t - A_0) / t``.

    ``A_t`` is the accuracy after task t on the test clips of tasks 0..t
    (ASC-CL's ``task_acc``; its main.py averages, at each t, the successive
    differences ``A_{i+1} - A_i`` for i < t, which telescope to ``(A_t - A_0) / t``,
    then averages over t). It measures how the accuracy over the growing set of
    classes moves, not how much each task is forgotten: it is not Lopez-Paz's
    :func:`backward_transfer`. Undefined (NaN) for a single task.
    """
    acc = np.asarray(acc_per_task, dtype=float)
    if acc.shape[0] < 2:
        return float("nan")
    return float(np.mean([(acc[t] - acc[0]) / t for t in range(1, acc.shape[0])]))


def best_test_epoch_summary(per_task):
    """The published ASC-CL numbers from each task's best test epoch.

    per_task : list of dicts with ``acc`` (pooled accuracy on the test clips of tasks
    0..t at the task's best test epoch) -> dict with ``selection``, ``acc_per_task``,
    ``A_last``, ``A_avg`` and ``BWT_ascl`` (:func:`backward_transfer_ascl`).
    """
    acc = [float(t["acc"]) for t in per_task]
    return {
        "selection": "best test epoch of each task (ASC-CL's published protocol; optimistic: "
                     "selected on the test set)",
        "acc_per_task": acc,
        "A_last": acc[-1] if acc else float("nan"),
        "A_avg": float(np.mean(acc)) if acc else float("nan"),
        "BWT_ascl": backward_transfer_ascl(acc),
    }


def forgetting(matrix):
    """Average forgetting: mean over j < T-1 of ``max_{l<T-1} R[l, j] - R[T-1, j]``.

    The best accuracy a task ever had before the last task, minus its final
    accuracy. Undefined (NaN) for a single task.
    """
    matrix = np.asarray(matrix, dtype=float)
    last = matrix.shape[0] - 1
    if last < 1:
        return float("nan")
    drops = [np.nanmax(matrix[j:last, j]) - matrix[last, j] for j in range(last)]
    return float(np.mean(drops))


def cl_summary(matrix):
    """All continual-learning statistics of an accuracy matrix, as plain floats.

    Returns
    -------
    dict with ``acc_per_task`` (A_k for each k), ``A_last``, ``A_avg``,
    ``BWT`` (Lopez-Paz: last row only), ``BWT_all`` (Díaz-Rodríguez: every
    row), ``BWT_ascl`` (ASC-CL's, on the ``A_k``) and ``forgetting`` (not clamped:
    a task that improves after its best earlier accuracy gives a negative drop).
    """
    acc = average_accuracy_per_task(matrix)
    return {
        "acc_per_task": [float(a) for a in acc],
        "A_last": float(acc[-1]),
        "A_avg": float(acc.mean()),
        "BWT": backward_transfer(matrix),
        "BWT_all": backward_transfer_all_steps(matrix),
        "BWT_ascl": backward_transfer_ascl(acc),
        "forgetting": forgetting(matrix),
    }


def plasticity(matrix):
    """Plasticity ``P_k = R[k, k]``: the accuracy on task ``k`` right after training it.

    Arguments
    ---------
    matrix : array-like, shape [n_tasks, n_tasks]

    Returns
    -------
    numpy.ndarray, shape [n_tasks] (NaN where the diagonal was not evaluated).
    """
    return np.diag(np.asarray(matrix, dtype=float)).copy()


def forward_transfer_per_task(matrix, reference):
    """``R[j-1, j] - b_j`` for each task ``j`` (NaN for ``j = 0``), Lopez-Paz & Ranzato 2017 (GEM).

    Arguments
    ---------
    matrix : array-like, shape [n_tasks, n_tasks]
        Needs the cells just above the diagonal, ``R[j-1, j]``: the accuracy on task ``j``
        before training it (after task ``j-1``).
    reference : array-like, shape [n_tasks]
        ``b_j``: the accuracy on task ``j`` of the model before task 0 (random initialisation).

    Returns
    -------
    numpy.ndarray, shape [n_tasks]; a cell is NaN where ``R[j-1, j]`` or ``b_j`` is.
    """
    matrix = np.asarray(matrix, dtype=float)
    reference = np.asarray(reference, dtype=float)
    out = np.full(matrix.shape[0], np.nan)
    for j in range(1, matrix.shape[0]):
        out[j] = matrix[j - 1, j] - reference[j]
    return out


def forward_transfer(matrix, reference):
    """FWT = mean over j = 1..T-1 of ``R[j-1, j] - b_j`` (Lopez-Paz & Ranzato 2017, GEM).

    How much learning tasks ``0..j-1`` helps task ``j`` before it is trained, against the
    untrained model ``b``. NaN for a single task, and NaN (never a mean over fewer tasks)
    when one of the needed cells is missing.
    """
    per_task = forward_transfer_per_task(matrix, reference)[1:]
    return float(np.mean(per_task)) if per_task.size else float("nan")


def intransigence_per_task(matrix, joint_reference):
    """Intransigence ``I_k = a*_k - R[k, k]`` (Chaudhry et al. 2018, RWalk).

    Arguments
    ---------
    matrix : array-like, shape [n_tasks, n_tasks]
        The continual run's matrix (its diagonal ``R[k, k]`` is used).
    joint_reference : array-like, shape [n_tasks]
        ``a*_k``: the accuracy on task ``k`` of a model trained jointly on tasks ``0..k``
        (a ``joint_incremental`` run's diagonal, :func:`plasticity` of its matrix).

    Returns
    -------
    numpy.ndarray, shape [n_tasks]: positive = the continual model learns task ``k``
    less well than joint training on the same classes.
    """
    joint = np.asarray(joint_reference, dtype=float)
    own = plasticity(matrix)
    if joint.shape != own.shape:
        raise ValueError(f"joint reference has {joint.shape[0]} tasks, the matrix {own.shape[0]}")
    return joint - own


def intransigence(matrix, joint_reference):
    """Mean of :func:`intransigence_per_task` over the tasks (NaN if one is undefined)."""
    return float(np.mean(intransigence_per_task(matrix, joint_reference)))


def task_il_predictions(scores, classes):
    """Task-incremental predictions: the argmax of ``scores`` over ``classes`` only.

    Arguments
    ---------
    scores : torch.Tensor, shape [batch, n_classes] (logits or class scores)
    classes : list of int, the task's classes (the task id gives them)

    Returns
    -------
    torch.Tensor, shape [batch] (long): class indices, each one of ``classes``.
    """
    index = torch.as_tensor(sorted(int(c) for c in classes), dtype=torch.long, device=scores.device)
    return index[scores.index_select(-1, index).argmax(dim=-1)]


def future_matrix(matrix, before):
    """``matrix`` with the cells ``R[j-1, j]`` that it lacks taken from ``before[j]`` (NaN where absent).

    ``before``: shape [n_tasks], the accuracy on task ``j`` after task ``j-1``, before training ``j``.
    """
    full = np.array(matrix, dtype=float)
    for j in range(1, full.shape[0]):
        if math.isnan(full[j - 1, j]) and j < len(before):
            full[j - 1, j] = before[j]
    return full


def transfer_summary(matrix, reference):
    """Plasticity and forward transfer of ``matrix`` (with its ``R[j-1, j]`` cells) against ``reference``.

    Returns a dict: ``plasticity`` (``R[k, k]`` per task), ``plasticity_mean``,
    ``accuracy_before_training`` (``R[j-1, j]``, null for task 0), ``FWT_per_task``, ``FWT``.
    """
    matrix = np.asarray(matrix, dtype=float)
    plastic = plasticity(matrix)
    n = matrix.shape[0]
    return {
        "plasticity": [float(v) for v in plastic],
        "plasticity_mean": float(np.mean(plastic)) if n else float("nan"),
        "accuracy_before_training": [float("nan")] + [float(matrix[j - 1, j]) for j in range(1, n)],
        "FWT_per_task": [float(v) for v in forward_transfer_per_task(matrix, reference)],
        "FWT": forward_transfer(matrix, reference),
    }


def confusion_matrix(targets, predictions, n_classes):
    """Confusion counts ``C[true, predicted]``, shape [n_classes, n_classes] (numpy int64)."""
    targets = torch.as_tensor(list(targets), dtype=torch.long)
    predictions = torch.as_tensor(list(predictions), dtype=torch.long)
    conf = multiclass_confusion_matrix(predictions, targets, num_classes=n_classes)
    return conf.numpy().astype(np.int64)


def _undefined(value):
    return isinstance(value, float) and math.isnan(value)


def _nan_to_none(value):
    """``value`` with every NaN float (also inside lists and dicts) replaced by None (JSON null)."""
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return None if _undefined(value) else value


def _percent(value, fmt, unit=""):
    """``100 * value`` formatted with ``fmt`` and ``unit``, or ``n/a`` for an undefined (NaN) value."""
    return "n/a" if _undefined(float(value)) else format(100 * float(value), fmt) + unit


def _csv_value(value):
    """A CSV cell: ``null`` for an undefined (NaN) value, as results.json has."""
    return "null" if _undefined(float(value)) else f"{value:.6f}"


def format_matrix_table(matrix, summary=None):
    """Human-readable table of the accuracy matrix (percent) and the statistics.

    Cells not evaluated show ``-``; undefined statistics (BWT and forgetting of a
    single task ...) show ``n/a``.
    """
    matrix = np.asarray(matrix, dtype=float)
    n = matrix.shape[0]
    header = "after \\ test " + "".join(f"{f'task{j}':>8}" for j in range(n)) + f"{'A_k':>8}"
    lines = [header]
    acc = average_accuracy_per_task(matrix)
    for k in range(n):
        cells = "".join(f"{'-':>8}" if math.isnan(matrix[k, j]) else f"{100 * matrix[k, j]:8.1f}" for j in range(n))
        lines.append(f"{f'task{k}':<13}" + cells + f"{_percent(acc[k], '.1f'):>8}")
    if summary is not None:
        lines.append(
            f"A_last={_percent(summary['A_last'], '.1f', '%')}  A_avg={_percent(summary['A_avg'], '.1f', '%')}  "
            f"BWT={_percent(summary['BWT'], '+.1f', '%')}  forgetting={_percent(summary['forgetting'], '.1f', '%')}"
        )
    return "\n".join(lines)


def _atomic_write_text(path, text):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_results(output_folder, matrix, extra=None, plot=True):
    """Write ``results.json``, ``results.csv``, ``accuracy_matrix.png`` and ``curves.png``.

    Arguments
    ---------
    output_folder : str
        Where the files go.
    matrix : array-like, shape [n_tasks, n_tasks]
        The accuracy matrix, NaN for cells not evaluated.
    extra : dict, optional
        More JSON-serialisable entries (time spent, per-task details ...).
    plot : bool
        Whether to draw the PNGs: the heatmap, and the learning curves of
        ``<output_folder>/train_log.txt`` where there is one (:mod:`soundcl.results.curves`).

    Returns
    -------
    dict : the content of ``results.json``.
    """
    matrix = np.asarray(matrix, dtype=float)
    summary = cl_summary(matrix)
    results = {
        "accuracy_matrix": _nan_to_none(matrix.tolist()),
        **_nan_to_none(summary),
    }
    if extra:
        results.update(_nan_to_none(extra))
    os.makedirs(output_folder, exist_ok=True)
    _atomic_write_text(os.path.join(output_folder, "results.json"), json.dumps(results, indent=2))

    csv_path = os.path.join(output_folder, "results.csv")
    with open(csv_path + ".tmp", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        n = matrix.shape[0]
        writer.writerow(["after_task"] + [f"test_task{j}" for j in range(n)] + ["A_k"])
        for k in range(n):
            writer.writerow([k] + [_csv_value(v) for v in matrix[k]] + [_csv_value(summary["acc_per_task"][k])])
        for key in ("A_last", "A_avg", "BWT", "BWT_all", "BWT_ascl", "forgetting"):
            writer.writerow([key, _csv_value(summary[key])])
    os.replace(csv_path + ".tmp", csv_path)

    if plot:
        plot_matrix(matrix, os.path.join(output_folder, "accuracy_matrix.png"))
        train_log = os.path.join(output_folder, curves.TRAIN_LOG)
        if os.path.exists(train_log):
            curves.plot_curves(train_log, os.path.join(output_folder, curves.CURVES_PNG))
    tensorboard_log.log_results(output_folder, results)
    return results


def plot_matrix(matrix, path, title="Accuracy matrix"):
    """Save a heatmap of the accuracy matrix (percent in each evaluated cell)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix, dtype=float)
    n = matrix.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.8 * n))
    image = ax.imshow(np.ma.masked_invalid(matrix), vmin=0.0, vmax=1.0, cmap="viridis")
    for k in range(n):
        for j in range(n):
            if not math.isnan(matrix[k, j]):
                color = "black" if matrix[k, j] > 0.6 else "white"
                ax.text(j, k, f"{100 * matrix[k, j]:.0f}", ha="center", va="center", color=color)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("test set of task")
    ax.set_ylabel("after training task")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=100)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)
