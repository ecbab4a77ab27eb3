"""Files of an online run (``online: True``, :mod:`soundcl.methods.supervised.online`).

``anytime_accuracy.csv`` / ``.png``: accuracy on the test clips of every class seen so far,
evaluated every ``anytime_eval_every`` training batches and at each task's end, against the
number of stream clips seen (replayed clips not counted). ``online_batches.csv``: one row per
training batch: clips seen, memory size and bytes, and the wall time of the update
(replay draw, training step, memory update).
"""
import csv
import os

import numpy as np

from soundcl.base.atomic import atomic_path

ANYTIME_CSV = "anytime_accuracy.csv"
ANYTIME_PNG = "anytime_accuracy.png"
BATCHES_CSV = "online_batches.csv"

#: Columns of online_batches.csv (one row per training batch).
BATCH_FIELDS = ("task", "batch", "clips_seen", "n_incoming", "n_replayed", "memory_clips", "memory_bytes",
                "replay_s", "step_s", "memory_s", "update_s")


def time_summary(values):
    """Mean, median, 95th percentile and max of per-batch seconds (None for no batch)."""
    if not len(values):
        return None
    values = np.asarray(values, dtype=float)
    return {"n": int(values.size), "mean": float(values.mean()), "median": float(np.median(values)),
            "p95": float(np.percentile(values, 95)), "max": float(values.max())}


def _write_csv(path, fields, rows):
    with atomic_path(path, suffix=".tmp.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fout:
            writer = csv.DictWriter(fout, fieldnames=list(fields), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def write_batches_csv(folder, batches):
    """``<folder>/online_batches.csv`` from per-batch dicts with :data:`BATCH_FIELDS`."""
    path = os.path.join(folder, BATCHES_CSV)
    _write_csv(path, BATCH_FIELDS, batches)
    return path


def write_anytime_curve(folder, points, plot=True):
    """``<folder>/anytime_accuracy.csv`` (and ``.png``) from the evaluation points of the run.

    Arguments
    ---------
    points : list of dicts ``{"task", "batch", "clips_seen", "accuracy", "per_task": [acc of task j]}``,
        in stream order (tasks 0..k).

    Returns the CSV path.
    """
    n_tasks = max((len(p["per_task"]) for p in points), default=0)
    fields = ["task", "batch", "clips_seen", "accuracy", "n_test"] + [f"acc_task{j}" for j in range(n_tasks)]
    rows = [{**{key: p[key] for key in fields[:5]}, **{f"acc_task{j}": a for j, a in enumerate(p["per_task"])}}
            for p in points]
    path = os.path.join(folder, ANYTIME_CSV)
    _write_csv(path, fields, rows)
    if plot and points:
        plot_anytime(points, os.path.join(folder, ANYTIME_PNG))
    return path


def plot_anytime(points, path):
    """Accuracy over the seen classes (and per task, thin lines) against stream clips seen; task starts marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    x = [p["clips_seen"] for p in points]
    n_tasks = max(len(p["per_task"]) for p in points)
    for j in range(n_tasks):
        curve = [(p["clips_seen"], 100 * p["per_task"][j]) for p in points if len(p["per_task"]) > j]
        ax.plot(*zip(*curve), linewidth=0.8, alpha=0.6, label=f"task {j}")
    ax.plot(x, [100 * p["accuracy"] for p in points], color="black", marker=".", linewidth=1.8,
            label="all seen classes")
    previous = None
    for p in points:
        if p["task"] != previous and previous is not None:
            first = min(q["clips_seen"] for q in points if q["task"] == p["task"])
            ax.axvline(first - 0.5 * (first - max(q["clips_seen"] for q in points if q["task"] == previous)),
                       color="grey", linestyle="--", linewidth=0.8)
        previous = p["task"]
    ax.set_xlabel("stream clips seen (each once)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Anytime accuracy (online: one pass over the stream)")
    fig.tight_layout()
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
