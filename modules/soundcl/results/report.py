"""Report over several runs: mean ± std over seeds, per experiment.

    python -m soundcl.report results/synth --out results/report
    python -m soundcl.report "results/synth/sup_train_replay*" results/other --out results/report

Reads every run folder (one with ``results.json`` or ``run_config.json``) below
the given folders (or glob patterns) and groups the runs by experiment: runs
whose ``run_config.json`` (every hparam, written at start by
:func:`soundcl.core.recipe.create_experiment_directory`) is the same except for the
seed. Only ``seed``, ``__set_seed`` and the seed as a path component (e.g. the
``.../<seed>`` of ``output_folder``, ``save_folder``, ``train_log``) are
ignored; runs differing in any other key are never averaged together, and the
report names the keys that tell the experiments apart.

Statistics are recomputed from each run's accuracy matrix
(:func:`soundcl.results.metrics.cl_summary`): A_last, A_avg, BWT (Lopez-Paz: last row)
and BWT_all (Díaz-Rodríguez: every row), forgetting; plus the training time
(sum of the tasks' ``train_time_s``) and the memory-update time (sum of
``memory_update_s``); in a second table, the task-incremental A_last / A_avg, forward
transfer (class- and task-IL), plasticity, intransigence (against a ``joint_incremental``
experiment of the same data among the runs, named in the report) and the resources
(:mod:`soundcl.results.report_transfer`). Each is given as mean ± sample standard deviation
(``n - 1`` in the denominator; ``n/a`` for a single seed) with the number of
seeds. Unfinished runs (``partial: true`` in results.json, or no results.json
yet) are listed apart and never enter a mean.

Written to ``--out``: ``report.md``, ``report.csv``, ``acc_per_task.png`` (A_k
after each task, one line per experiment, shaded ± std),
``accuracy_matrices.png`` (mean final accuracy matrices side by side) and,
when linear / kNN evaluation runs are among them, ``protocols.png`` (A_last and
A_avg per protocol, ``linclf_train_type``).
"""
import argparse
import csv
import glob
import json
import math
import os
import re
import sys

import numpy as np

from soundcl.results import metrics
from soundcl.base.atomic import atomic_write_text
from soundcl.results.report_plots import protocol_of, plot_acc_per_task, plot_matrices, plot_protocols
from soundcl.results.report_transfer import TRANSFER_STATS, add_intransigence, joint_reference, transfer_stats

RESULTS_FILE = "results.json"
RUN_CONFIG_FILE = "run_config.json"
#: run_config.json keys that are the seed itself.
SEED_KEYS = ("seed", "__set_seed")
#: (key, column title, scale): statistics reported per experiment.
STATS = (
    ("A_last", "A_last (%)", 100),
    ("A_avg", "A_avg (%)", 100),
    ("BWT", "BWT (%)", 100),
    ("BWT_all", "BWT_all (%)", 100),
    ("forgetting", "forgetting (%)", 100),
    ("train_time_s", "train time (s)", 1),
    ("memory_update_s", "memory update (s)", 1),
)


# ------------------------------------------------------------------ reading
class Run:
    """One run folder: its config (run_config.json), results (results.json) and seed."""

    def __init__(self, folder):
        self.folder = folder
        self.config = _read_json(os.path.join(folder, RUN_CONFIG_FILE))
        self.results = _read_json(os.path.join(folder, RESULTS_FILE))
        seed = None
        if self.config is not None and "seed" in self.config:
            seed = json.loads(self.config["seed"])
        self.seed = seed if seed is not None else os.path.basename(os.path.normpath(folder))

    @property
    def status(self):
        """``finished``, ``partial`` (some tasks finished) or ``started`` (no task finished)."""
        if self.results is None:
            return "started"
        return "partial" if self.results.get("partial") else "finished"

    @property
    def experiment_name(self):
        if self.config is not None and "experiment_name" in self.config:
            return str(json.loads(self.config["experiment_name"]))
        return os.path.basename(os.path.dirname(os.path.normpath(self.folder)))

    def experiment_key(self):
        """The run's hparams without the seed: runs with equal keys are one experiment."""
        return config_without_seed(self.config, self.seed)

    def stats(self):
        """The reported statistics of this run (floats, NaN if undefined)."""
        matrix = np.array([[np.nan if v is None else v for v in row] for row in self.results["accuracy_matrix"]],
                          dtype=float)
        summary = metrics.cl_summary(matrix)
        per_task = self.results.get("per_task") or []
        memory = [t for t in (self.results.get("memory_update_s") or []) if t is not None]
        return {
            **{key: summary[key] for key in ("A_last", "A_avg", "BWT", "BWT_all", "forgetting")},
            "acc_per_task": summary["acc_per_task"],
            "matrix": matrix,
            "train_time_s": float(sum(t.get("train_time_s", 0.0) or 0.0 for t in per_task)) if per_task else math.nan,
            "memory_update_s": float(sum(memory)) if memory else math.nan,
            **transfer_stats(self.results, matrix),
        }


def _read_json(path):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fin:
        return json.load(fin)


def config_without_seed(config, seed):
    """``config`` (run_config.json: key -> JSON text) without the seed, as a hashable tuple.

    ``seed`` and ``__set_seed`` are dropped; the seed as a whole path component
    (``.../sup_train_replay0/<seed>/save``) becomes ``<seed>``.
    """
    if config is None:
        return None
    pattern = re.compile(rf"(?<=/){re.escape(str(seed))}(?=[/\"]|$)")
    return tuple(sorted((key, pattern.sub("<seed>", value)) for key, value in config.items() if key not in SEED_KEYS))


def find_runs(paths):
    """Run folders below ``paths`` (folders or glob patterns), sorted; a path matching nothing is an error."""
    folders = set()
    for path in paths:
        matches = sorted(glob.glob(path)) or ([path] if os.path.exists(path) else [])
        if not matches:
            raise SystemExit(f"error: {path} matches no file or folder")
        for match in matches:
            for root, dirs, files in os.walk(match):
                if RESULTS_FILE in files or RUN_CONFIG_FILE in files:
                    folders.add(os.path.normpath(root))
                    dirs[:] = [d for d in dirs if d != "save"]
    return [Run(folder) for folder in sorted(folders)]


# ----------------------------------------------------------------- grouping
class Experiment:
    """Runs with the same hparams except the seed."""

    def __init__(self, key, runs):
        self.key = key
        self.runs = sorted(runs, key=lambda r: (str(r.seed), r.folder))
        self.name = self.runs[0].experiment_name
        self.label = self.name  # made unique by group_runs
        self.differing = {}  # key -> value (JSON text) telling this experiment apart from the others
        self.nearest = None  # (closest other experiment, {key: value of this one where they differ})
        self.joint = None  # the joint_incremental experiment of the same data: the intransigence reference

    @property
    def finished(self):
        """Finished runs, one per seed (a seed found twice counts once: the first folder)."""
        by_seed = {}
        for run in self.runs:
            if run.status == "finished":
                by_seed.setdefault(str(run.seed), run)
        return list(by_seed.values())

    @property
    def duplicate_seeds(self):
        seeds = [str(r.seed) for r in self.runs if r.status == "finished"]
        return sorted({s for s in seeds if seeds.count(s) > 1})

    @property
    def unfinished(self):
        return [r for r in self.runs if r.status != "finished"]

    def summary(self):
        """``{stat: (mean, std, n)}`` over the finished runs, plus A_k and matrix mean/std."""
        per_run = [run.stats() for run in self.finished]
        add_intransigence(self, per_run, self.joint)
        out = {}
        for key, _, _ in STATS + TRANSFER_STATS:
            out[key] = mean_std([s[key] for s in per_run])
        if per_run:
            acc = np.array([s["acc_per_task"] for s in per_run], dtype=float)
            out["acc_per_task"] = (acc.mean(axis=0), _std(acc))
            out["matrix"] = np.mean([s["matrix"] for s in per_run], axis=0)
        return out


def mean_std(values):
    """``(mean, sample std (n - 1), n)`` of the defined values; NaN where undefined (std of one value)."""
    values = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    return float(values.mean()), float(values.std(ddof=1)) if n > 1 else math.nan, n


def _std(array):
    return array.std(axis=0, ddof=1) if array.shape[0] > 1 else np.zeros(array.shape[1:])


def _without_name(config, name):
    """``config`` with the experiment name in other keys' values replaced by ``<experiment_name>``."""
    return {k: (v if k == "experiment_name" else v.replace(str(name), "<experiment_name>")) for k, v in config.items()}


def group_runs(runs):
    """Experiments (runs equal but for the seed) and the runs without run_config.json."""
    groups, no_config = {}, []
    for run in runs:
        if run.config is None:
            no_config.append(run)
        else:
            groups.setdefault(run.experiment_key(), []).append(run)
    experiments = [Experiment(key, members) for key, members in groups.items()]
    experiments.sort(key=lambda e: (e.name, e.runs[0].folder))
    # What tells the experiments apart: keys whose value is not the same in all.
    # Shown without the values that only repeat the experiment name (output_folder ...).
    configs = [_without_name(dict(e.key), e.name) for e in experiments]
    all_keys = sorted(set().union(*configs)) if configs else []
    varying = [k for k in all_keys if len({c.get(k) for c in configs}) > 1]
    for experiment, config in zip(experiments, configs):
        experiment.differing = {k: config.get(k, "absent") for k in varying}
    # For reading: each experiment against the one closest to it (fewest differing keys).
    for i, (experiment, config) in enumerate(zip(experiments, configs)):
        others = [(sorted(k for k in varying if config.get(k) != other.get(k)), j)
                  for j, other in enumerate(configs) if j != i]
        if others:
            keys, j = min(others, key=lambda o: (len(o[0]), o[1]))
            experiment.nearest = (experiments[j], {k: config.get(k, "absent") for k in keys})
    for experiment in experiments:
        experiment.joint = joint_reference(experiment, experiments)
    # Unique labels: experiments sharing an experiment_name get #1, #2 ...
    for name in {e.name for e in experiments}:
        same = [e for e in experiments if e.name == name]
        if len(same) > 1:
            for i, experiment in enumerate(same, 1):
                experiment.label = f"{name}#{i}"
    return experiments, no_config


# ------------------------------------------------------------------ writing
def _fmt(mean, std, n, scale):
    digits = 1 if scale == 100 else 2  # percentages, seconds
    if n == 0 or math.isnan(mean):
        return "n/a"
    text = f"{scale * mean:.{digits}f}"
    return text + (f" ± {scale * std:.{digits}f}" if not math.isnan(std) else " ± n/a")


def _short(text, limit=50):
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def markdown(experiments, no_config, sources):
    """The text of report.md."""
    lines = ["# soundcl report", "",
             f"Runs read below: {', '.join(f'`{s}`' for s in sources)}. Mean ± sample standard deviation "
             "(n - 1) over seeds, n = number of finished seeds; BWT: Lopez-Paz (last row), "
             "BWT_all: Díaz-Rodríguez (every row); times summed over tasks.", ""]
    lines.append("| experiment | n | seeds | " + " | ".join(title for _, title, _ in STATS) + " |")
    lines.append("|---|---|---|" + "---|" * len(STATS))
    for experiment in experiments:
        finished = experiment.finished
        if not finished:
            continue
        summary = experiment.summary()
        cells = [_fmt(*summary[key], scale) for key, _, scale in STATS]
        seeds = ", ".join(str(r.seed) for r in finished)
        lines.append(f"| {experiment.label} | {len(finished)} | {seeds} | " + " | ".join(cells) + " |")
    lines += ["", "## Task-incremental accuracy, transfer, resources", "",
              "Task-IL: the argmax over the tested task's classes; FWT: mean of R[j-1, j] - b_j (b: the model "
              "before task 0); plasticity: mean R[k, k]; intransigence: mean a*_k - R[k, k], a* the diagonal of "
              "the joint_incremental experiment named below; resources: largest per-task peak, update time "
              "(training + memory update) summed over tasks.", ""]
    lines.append("| experiment | n | " + " | ".join(title for _, title, _ in TRANSFER_STATS) + " |")
    lines.append("|---|---|" + "---|" * len(TRANSFER_STATS))
    for experiment in experiments:
        if experiment.finished:
            summary = experiment.summary()
            cells = [_fmt(*summary[key], scale) for key, _, scale in TRANSFER_STATS]
            lines.append(f"| {experiment.label} | {len(experiment.finished)} | " + " | ".join(cells) + " |")
    lines.append("")
    for experiment in experiments:
        if experiment.finished and experiment.joint is not None:
            lines.append(f"- intransigence of {experiment.label}: against {experiment.joint.label} "
                         f"(joint_incremental, {len(experiment.joint.finished)} seed(s))")
    lines += ["", "## How the experiments differ", ""]
    if len(experiments) < 2:
        lines.append("One experiment.")
    for experiment in experiments:
        if experiment.nearest is None:
            continue
        other, keys = experiment.nearest
        shown = ", ".join(f"`{k}={_short(v)}`" for k, v in keys.items())
        lines.append(f"- **{experiment.label}** ({len(experiment.runs)} run(s)), against the closest, "
                     f"{other.label}: {shown}")
    if len(experiments) > 1:
        lines.append("- every differing hparam of each experiment: `differing_hparams` in report.csv")
    same_name = sorted({e.name for e in experiments if e.label != e.name})
    for name in same_name:
        same = [dict(e.key) for e in experiments if e.name == name]
        keys = sorted(k for k in set().union(*same) if len({c.get(k) for c in same}) > 1)
        lines.append(f"- runs named `{name}` differ in more than the seed ({', '.join(keys)}): "
                     "they are not averaged together")
    for experiment in experiments:
        for seed in experiment.duplicate_seeds:
            folders = [r.folder for r in experiment.runs if str(r.seed) == seed and r.status == "finished"]
            lines.append(f"- {experiment.label}: seed {seed} finished in {len(folders)} folders "
                         f"({', '.join(folders)}); only the first is counted")
    unfinished = [(e.label, r) for e in experiments for r in e.unfinished] + [("?", r) for r in no_config]
    lines += ["", "## Unfinished or unusable runs (left out of the means)", ""]
    if not unfinished:
        lines.append("None.")
    else:
        lines.append("| folder | experiment | seed | status | finished tasks |")
        lines.append("|---|---|---|---|---|")
        for label, run in unfinished:
            status = run.status if run.config is not None else "no run_config.json: cannot be grouped"
            done = (run.results or {}).get("finished_tasks", len((run.results or {}).get("accuracy_matrix", [])))
            lines.append(f"| {run.folder} | {label} | {run.seed} | {status} | {done} |")
    lines += ["", "## Figures", "", "- `acc_per_task.png`: A_k after each task (mean, shaded ± std)",
              "- `accuracy_matrices.png`: mean final accuracy matrix of each experiment"]
    if any(protocol_of(e) for e in experiments):
        lines.append("- `protocols.png`: linear / kNN evaluation, A_last and A_avg per protocol")
    return "\n".join(lines) + "\n"


def write_csv(path, experiments):
    """report.csv: one row per experiment with finished runs; fractions (not %), ``null`` if undefined."""
    def cell(value):
        return "null" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6g}"

    def write(f):
        writer = csv.writer(f)
        header = ["experiment", "n_seeds", "seeds"]
        for key, _, _ in STATS + TRANSFER_STATS:
            header += [f"{key}_mean", f"{key}_std"]
        writer.writerow(header + ["intransigence_reference", "differing_hparams", "unfinished_runs"])
        for experiment in experiments:
            finished = experiment.finished
            if not finished:
                continue
            summary = experiment.summary()
            row = [experiment.label, len(finished), " ".join(str(r.seed) for r in finished)]
            for key, _, _ in STATS + TRANSFER_STATS:
                row += [cell(summary[key][0]), cell(summary[key][1])]
            row.append(experiment.joint.label if experiment.joint is not None else "")
            row.append(json.dumps({k: json.loads(v) if v != "absent" else None
                                   for k, v in experiment.differing.items()}, sort_keys=True))
            row.append(len(experiment.unfinished))
            writer.writerow(row)

    atomic_write_text(path, write)


def write_report(paths, out):
    """Read the runs below ``paths``, write the report into ``out``; returns the experiments."""
    runs = find_runs(paths)
    if not runs:
        raise SystemExit(f"error: no {RESULTS_FILE} or {RUN_CONFIG_FILE} below {' '.join(paths)}")
    experiments, no_config = group_runs(runs)
    os.makedirs(out, exist_ok=True)
    atomic_write_text(os.path.join(out, "report.md"), markdown(experiments, no_config, paths))
    write_csv(os.path.join(out, "report.csv"), experiments)
    if any(e.finished for e in experiments):
        plot_acc_per_task(os.path.join(out, "acc_per_task.png"), experiments)
        plot_matrices(os.path.join(out, "accuracy_matrices.png"), experiments)
        plot_protocols(os.path.join(out, "protocols.png"), experiments)
    return experiments, no_config


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m soundcl.report", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="RUN_DIR_OR_GLOB",
                        help="folders (or glob patterns) holding run folders, searched recursively")
    parser.add_argument("--out", default="report", help="folder of report.md, report.csv and the PNGs")
    args = parser.parse_args(argv)
    experiments, no_config = write_report(args.paths, args.out)
    print(open(os.path.join(args.out, "report.md"), encoding="utf-8").read())
    finished = sum(len(e.finished) for e in experiments)
    print(f"{len(experiments)} experiment(s), {finished} finished run(s), "
          f"{sum(len(e.unfinished) for e in experiments) + len(no_config)} left out; written to {args.out}/",
          file=sys.stderr)


if __name__ == "__main__":
    main()
