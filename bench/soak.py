#!/usr/bin/env python3
"""Interruption soak: SIGKILL a recipe at random moments, restart it, compare.

Runs a synthetic 3-task replay recipe once uninterrupted, then again under
fire, each run in a folder of its own from scratch (synthetic data generation,
audio cache, checkpoints), so kills also land during data preparation. Every
attempt of the soaked run is killed with SIGKILL and restarted with the same
command, until ``--kills`` kills have been made; the last attempt then runs to
the end. The final accuracy matrix and replay memories must equal the
uninterrupted ones, and the requested number of kills must have happened.

Kill moments are drawn within the work that remains, not in wall-clock time
since the start: while the uninterrupted run works, a watcher records when each
file or folder first appears (its *timeline*, in seconds of the reference
run). While the soaked run works, the same watcher tells how far it got (the
latest timeline moment among the files it has made). Kill i of n picks a
target moment at random in the i-th n-th of the timeline, or in the next
``1 / kills left`` of the remaining timeline once the run is past that slice;
never before the point reached. It fires at whichever comes first: the
expected wall time of that moment (so kills land mid-epoch, mid-write ...) or
the soaked attempt making a file that the reference made at or after that
moment. The second trigger is what makes the count exact on a loaded machine:
targets stop short of the last files the reference made well before exiting,
so an attempt cannot finish before its kill. About one kill in ``start-up /
run time`` instead lands during start-up (imports, experiment folder, logs).

    python bench/soak.py --kills 20 [--seed 0]

Exit status 0 only when every requested kill was made and the results are
identical; otherwise a message says what went wrong (e.g. how many kills were
made).
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(REPO_ROOT, "recipes", "sup_train.py")
HPARAMS = os.path.join(REPO_ROOT, "hparams", "synth", "sup_train.yaml")
TINY = [
    "--task_classes=[[0,1],[2,3],[4,5]]", "--encoder_channels=[8,16]", "--emb_dim=32", "--n_mels=32",
    "--number_of_epochs=3", "--lr=0.005", "--lr_final=0.001", "--batch_size=16", "--replay_num_keep=8",
    "--clips_per_class_per_fold=3", "--noprogressbar",
]
#: Seconds between two looks at the run's folder.
POLL_S = 0.05
#: An intermediate checkpoint folder (time-stamped name); ``CKPT+final`` is not one.
_CKPT_NAME = re.compile(r"^CKPT\+(?!final$).+$")


def _command(root):
    """The recipe with everything (data, cache, outputs) under ``root``."""
    return [
        sys.executable, RECIPE, HPARAMS, f"--output_base={root}", f"--data_folder={root}/data",
        f"--audio_cache={root}/cache", "--experiment_name=run", *TINY,
    ]


def _outcome(root):
    out = os.path.join(root, "run", "1986")
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    memories = []
    for k in range(3):
        with open(os.path.join(out, "save", f"task{k}", "task_state.json"), encoding="utf-8") as f:
            memories.append(json.load(f)["memory"])
    return results["accuracy_matrix"], memories


class TreeWatcher:
    """Looks at a run's folder and names every path it sees appear for the first time.

    The name (key) is the path relative to the folder, where a time-stamped
    checkpoint folder ``CKPT+<date>`` becomes ``CKPT#<n>``: the n-th such folder
    seen in its parent (n from 0), so the reference and the soaked run, whose
    checkpoints are stamped at other times, give the same keys.
    """

    def __init__(self, root):
        self.root = root
        self.keys = {}  # raw relative path -> key
        self.checkpoints = {}  # raw parent -> CKPT+ names seen there, in order

    def _key(self, rel):
        parent, name = os.path.split(rel)
        parent_key = self.keys.get(parent, parent)
        if _CKPT_NAME.match(name):
            names = self.checkpoints.setdefault(parent, [])
            names.append(name)
            name = f"CKPT#{len(names) - 1}"
        return os.path.join(parent_key, name) if parent_key else name

    def poll(self):
        """Keys of the paths that appeared since the last call."""
        new = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            rel_dir = "" if rel_dir == "." else rel_dir
            # Folders first (sorted: time stamps in order), so a folder is named before its content.
            for name in sorted(dirnames) + sorted(filenames):
                rel = os.path.join(rel_dir, name)
                if rel not in self.keys:
                    self.keys[rel] = self._key(rel)
                    new.append(self.keys[rel])
        return new


class Timeline:
    """When each key first appeared in the uninterrupted run (seconds from its start)."""

    def __init__(self, times, total_s, margin_s=None):
        self.times = dict(times)
        self.total_s = float(total_s)
        if not self.times:
            raise RuntimeError("the uninterrupted run wrote nothing that the watcher saw")
        #: Start-up: until the first file appears (imports, experiment folder).
        self.startup_s = min(self.times.values())
        margin_s = max(0.5, 0.05 * self.total_s) if margin_s is None else margin_s
        #: Kill targets stay at or before the last file made at least margin_s before the run ended.
        early = [t for t in self.times.values() if t <= self.total_s - margin_s]
        self.horizon_s = max(early) if early else self.startup_s

    def progress(self, keys, current=0.0):
        """Furthest timeline moment among ``keys`` (unknown keys count for nothing)."""
        return max([current] + [self.times[k] for k in keys if k in self.times])


def _watch(proc, watcher, on_new, poll_s=POLL_S):
    """Poll until the process ends or ``on_new(new_keys, elapsed)`` returns True (then it still runs)."""
    start = time.monotonic()
    while True:
        finished = proc.poll() is not None
        new = watcher.poll()
        if finished:
            on_new(new, time.monotonic() - start)
            return False
        if on_new(new, time.monotonic() - start):
            return True
        time.sleep(poll_s)


def plan_kill(rng, timeline, progress, kill_index, n_kills):
    """(kind, target moment on the timeline or None, wall seconds after the attempt starts).

    Kill ``kill_index`` (0-based) of ``n_kills`` aims at its own slice of the
    work (start-up to horizon cut in ``n_kills`` equal slices, in order), so kills
    cover every phase even when interrupted work is redone; a slice already
    passed gives way to the next ``1 / kills left`` of the remaining work. The
    target is never before ``progress``.
    """
    base = max(progress, timeline.startup_s)
    remaining = timeline.horizon_s - base
    if remaining <= 0 or rng.random() < timeline.startup_s / timeline.total_s:
        return "startup", None, rng.uniform(0.05, 0.95) * timeline.startup_s
    work = timeline.horizon_s - timeline.startup_s
    low = timeline.startup_s + work * kill_index / n_kills
    high = timeline.startup_s + work * (kill_index + 1) / n_kills
    if high <= base:
        low, high = base, base + remaining / (n_kills - kill_index)
    target = rng.uniform(max(low, base), high)
    return "work", target, timeline.startup_s + (target - base)


def soak(n_kills, seed=0, work=None, log=print, poll_s=POLL_S):
    """Returns a dict: kills requested and made, attempts, whether results were identical."""
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "modules"))
    own_work = work is None
    work = work or tempfile.mkdtemp(prefix="soak_")
    rng = random.Random(seed)
    logs = os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)

    def launch(root, attempt):
        with open(os.path.join(logs, f"{os.path.basename(root)}_{attempt}.log"), "w") as out:
            return subprocess.Popen(_command(root), env=env, stdout=out, stderr=subprocess.STDOUT)

    def check(proc, root, attempt):
        if proc.returncode != 0:
            with open(os.path.join(logs, f"{os.path.basename(root)}_{attempt}.log"), errors="replace") as f:
                tail = f.read()[-3000:]
            raise RuntimeError(f"{os.path.basename(root)} attempt {attempt} failed with exit code "
                               f"{proc.returncode}:\n{tail}")

    try:
        # Uninterrupted reference, from scratch, watched to build the timeline.
        reference_root = os.path.join(work, "reference")
        watcher, times = TreeWatcher(reference_root), {}

        def record(new, elapsed):
            for key in new:
                times.setdefault(key, elapsed)
            return False

        start = time.monotonic()
        proc = launch(reference_root, 1)
        _watch(proc, watcher, record, poll_s)
        proc.wait()
        reference_time = time.monotonic() - start
        check(proc, reference_root, 1)
        timeline = Timeline(times, reference_time)
        log(f"uninterrupted run: {reference_time:.1f} s, {len(times)} paths, start-up {timeline.startup_s:.1f} s, "
            f"kill targets up to {timeline.horizon_s:.1f} s")

        soaked_root = os.path.join(work, "soaked")
        watcher = TreeWatcher(soaked_root)
        state = {"progress": 0.0}
        kills, attempts, kill_log = 0, 0, []
        while True:
            attempts += 1
            state["progress"] = timeline.progress(watcher.poll(), state["progress"])
            plan = plan_kill(rng, timeline, state["progress"], kills, n_kills) if kills < n_kills else None
            trigger = {}

            def on_new(new, elapsed, plan=plan, trigger=trigger):
                state["progress"] = timeline.progress(new, state["progress"])
                if plan is None:
                    return False
                kind, target, when = plan
                if elapsed >= when:
                    trigger.update(by="time", elapsed=elapsed)
                    return True
                reached = [k for k in new if k in timeline.times and (target is None or timeline.times[k] >= target)]
                if reached:
                    trigger.update(by=f"file {reached[0]}", elapsed=elapsed)
                    return True
                return False

            proc = launch(soaked_root, attempts)
            if _watch(proc, watcher, on_new, poll_s):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                state["progress"] = timeline.progress(watcher.poll(), state["progress"])
                if proc.returncode == -signal.SIGKILL:
                    kills += 1
                    kind, target, when = plan
                    entry = {"attempt": attempts, "kind": kind, "at_s": round(trigger["elapsed"], 2),
                             "target_s": None if target is None else round(target, 2), "trigger": trigger["by"],
                             "progress_after_s": round(state["progress"], 2)}
                    kill_log.append(entry)
                    log(f"kill {kills}/{n_kills}: attempt {attempts}, {kind}, {entry['at_s']:.2f} s in"
                        + ("" if target is None else f", target {target:.2f} s of the reference")
                        + f", by {trigger['by']}; progress {state['progress']:.2f} s")
                    continue
            else:
                proc.wait()
            check(proc, soaked_root, attempts)  # finished on its own (a kill that came too late included)
            break
        reference, soaked = _outcome(reference_root), _outcome(soaked_root)
        summary = {
            "kills_requested": n_kills,
            "kills": kills,
            "attempts": attempts,
            "recovered": True,
            "identical_matrix": reference[0] == soaked[0],
            "identical_memory": reference[1] == soaked[1],
            "reference_time_s": round(reference_time, 2),
            "seed": seed,
            "kill_log": kill_log,
        }
        summary["ok"] = kills == n_kills and summary["identical_matrix"] and summary["identical_memory"]
        return summary
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="keep the runs in this folder (default: a temporary one)")
    args = parser.parse_args()
    if args.kills < 0:
        parser.error("--kills must be >= 0")
    summary = soak(args.kills, args.seed, work=args.work)
    print(json.dumps(summary, indent=2))
    problems = []
    if summary["kills"] != summary["kills_requested"]:
        problems.append(f"only {summary['kills']} of the {summary['kills_requested']} requested kills were made "
                        f"(the run finished first)")
    if not summary["identical_matrix"]:
        problems.append("the accuracy matrix differs from the uninterrupted run's")
    if not summary["identical_memory"]:
        problems.append("the replay memory differs from the uninterrupted run's")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    if not problems:
        print(f"OK: {summary['kills']} kills, each recovered, identical results")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
