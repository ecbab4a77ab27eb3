"""The PNGs of :mod:`soundcl.results.report` (A_k per task, final matrices side by side, linear / kNN protocols)
and the per-task confusion matrix of the task loop."""
import json
import math

import numpy as np

from soundcl.base.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=100)
    _pyplot().close(fig)


def plot_acc_per_task(path, experiments):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for experiment in experiments:
        if not experiment.finished:
            continue
        mean, std = experiment.summary()["acc_per_task"]
        x = np.arange(len(mean))
        line, = ax.plot(x, 100 * mean, marker="o", label=f"{experiment.label} (n={len(experiment.finished)})")
        ax.fill_between(x, 100 * (mean - std), 100 * (mean + std), color=line.get_color(), alpha=0.2)
    ax.set_xticks(range(max((len(e.summary()["acc_per_task"][0]) for e in experiments if e.finished), default=1)))
    ax.set_xlabel("after training task k")
    ax.set_ylabel("A_k: mean accuracy on tasks 0..k (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_matrices(path, experiments):
    plt = _pyplot()
    shown = [e for e in experiments if e.finished]
    fig, axes = plt.subplots(1, len(shown), figsize=(0.5 + 3.6 * len(shown), 3.8), squeeze=False)
    for ax, experiment in zip(axes[0], shown):
        matrix = experiment.summary()["matrix"]
        n = matrix.shape[0]
        ax.imshow(np.ma.masked_invalid(matrix), vmin=0.0, vmax=1.0, cmap="viridis")
        for k in range(n):
            for j in range(n):
                if not math.isnan(matrix[k, j]):
                    ax.text(j, k, f"{100 * matrix[k, j]:.0f}", ha="center", va="center", fontsize=8,
                            color="black" if matrix[k, j] > 0.6 else "white")
        ax.set_title(f"{experiment.label}\n(mean of {len(experiment.finished)})", fontsize=9)
        ax.set_xlabel("test set of task")
        ax.set_ylabel("after training task")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
    fig.tight_layout()
    _save(fig, path)


def protocol_of(experiment):
    """``(kind, protocol)`` of a linear / kNN evaluation experiment, else None."""
    config = dict(experiment.key)
    if "linclf_train_type" not in config:
        return None
    kind = "kNN" if "knn_k" in config else "linear"
    return kind, json.loads(config["linclf_train_type"])


def plot_protocols(path, experiments):
    """A_last and A_avg per protocol (x) of every linear / kNN experiment (bars)."""
    evaluated = [(e, protocol_of(e)) for e in experiments if e.finished and protocol_of(e)]
    if not evaluated:
        return False
    plt = _pyplot()
    protocols = sorted({p for _, (_, p) in evaluated}, key=lambda p: ["seen", "subset", "buffer", "full"].index(p)
                       if p in ("seen", "subset", "buffer", "full") else 9)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, key in zip(axes, ("A_last", "A_avg")):
        by_protocol = {p: [(e, k) for e, (k, q) in evaluated if q == p] for p in protocols}
        width = 0.8 / max(len(v) for v in by_protocol.values())
        for i, protocol in enumerate(protocols):
            for j, (experiment, kind) in enumerate(by_protocol[protocol]):
                mean, std, n = experiment.summary()[key]
                ax.bar(i - 0.4 + (j + 0.5) * width, 100 * mean, width, yerr=0 if math.isnan(std) else 100 * std,
                       color="tab:blue" if kind == "linear" else "tab:orange", capsize=3)
                ax.text(i - 0.4 + (j + 0.5) * width, 2, experiment.label, rotation=90, fontsize=7, ha="center")
        ax.set_xticks(range(len(protocols)))
        ax.set_xticklabels(protocols)
        ax.set_title(f"{key} (blue: linear, orange: kNN)")
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("%")
    fig.tight_layout()
    _save(fig, path)
    return True


def plot_confusion_matrix(path, confusion, labels, title):
    """Confusion counts as a PNG (rows: true class, columns: predicted class; cssl_sound's create_cm_fig).

    Drawn once per task by every recipe, so kept cheap (no pyplot state, fixed margins).

    Arguments
    ---------
    path : str, the PNG
    confusion : numpy array [n, n] of counts
    labels : list of n class names (tick labels)
    title : str
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    confusion = np.asarray(confusion)
    n = confusion.shape[0]
    side = min(16.0, 3.0 + 0.4 * n)
    fig = Figure(figsize=(side, side))
    FigureCanvasAgg(fig)
    margin = 1.6 / side  # room for the class names
    fig.subplots_adjust(left=margin, bottom=margin, right=0.97, top=1.0 - 0.5 / side)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(confusion, cmap="Oranges")
    if n <= 40:  # counts stay readable
        threshold = confusion.max() / 2.0 if confusion.size else 0
        for i, j in zip(*np.nonzero(confusion)):
            ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if confusion[i, j] > threshold else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=9)
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=80)
