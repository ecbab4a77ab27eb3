"""Learning curves of a run: train loss and valid accuracy across every task's epochs.

Read from SpeechBrain's ``FileTrainLogger`` file (``<output_folder>/train_log.txt``),
whose lines look like::

    task: 0, epoch: 1, lr: 2.00e-03 - train loss: 1.23 - valid loss: 1.10, valid acc: 5.00e-01

``curves.png`` puts the epochs of all tasks one after the other, the task
boundaries marked. A resumed run may have logged an epoch twice: the last line
of each ``(task, epoch)`` counts.
"""
import re

from soundcl.base.atomic import atomic_path

TRAIN_LOG = "train_log.txt"
CURVES_PNG = "curves.png"

_ITEM = re.compile(r"^\s*([A-Za-z_][A-Za-z_ ]*?)\s*:\s*(\S+)\s*$")


def parse_train_log(path):
    """Epoch records of a train log, in (task, epoch) order.

    Returns
    -------
    list of dicts ``{"task": int, "epoch": int, "train loss": float, "valid acc": float, ...}``
    (only the keys the line has; lines without ``epoch`` are skipped).
    """
    records = {}
    with open(path, encoding="utf-8") as fin:
        for line in fin:
            record = {}
            for part in line.strip().split(" - "):
                for item in part.split(", "):
                    match = _ITEM.match(item)
                    if not match:
                        continue
                    try:
                        record[match.group(1)] = float(match.group(2))
                    except ValueError:
                        continue
            if "epoch" not in record:
                continue
            task = int(record.get("task", 0))
            record["task"], record["epoch"] = task, int(record["epoch"])
            records[(task, record["epoch"])] = record
    return [records[key] for key in sorted(records)]


def plot_curves(train_log, path):
    """Write ``path`` (PNG): train loss (left axis) and valid accuracy (right axis) per epoch.

    Returns the parsed records (empty: nothing is drawn).
    """
    records = parse_train_log(train_log)
    if not records:
        return records
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(1, len(records) + 1))
    fig, ax = plt.subplots(figsize=(8, 4))
    loss = [(i, r["train loss"]) for i, r in zip(x, records) if "train loss" in r]
    if loss:
        ax.plot(*zip(*loss), color="tab:blue", marker=".", label="train loss")
    ax.set_xlabel("epoch (all tasks, in order)")
    ax.set_ylabel("train loss", color="tab:blue")
    acc = [(i, 100 * r["valid acc"]) for i, r in zip(x, records) if "valid acc" in r]
    if acc:
        ax2 = ax.twinx()
        ax2.plot(*zip(*acc), color="tab:orange", marker=".", label="valid acc")
        ax2.set_ylabel("valid accuracy (%)", color="tab:orange")
        ax2.set_ylim(0, 100)
    previous = None
    for i, record in zip(x, records):
        if record["task"] != previous:
            if previous is not None:
                ax.axvline(i - 0.5, color="grey", linestyle="--", linewidth=0.8)
            ax.annotate(f"task {record['task']}", (i - 0.4, 1.0), xycoords=("data", "axes fraction"),
                        va="bottom", fontsize=8)
            previous = record["task"]
    ax.set_title("Learning curves", pad=14)
    fig.tight_layout()
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return records
