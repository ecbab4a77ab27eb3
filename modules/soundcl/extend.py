"""One more task, later: append a task of new classes from a folder to a finished run.

    python -m soundcl.extend RUN_DIR NEW_CLASSES_FOLDER [--valid_fraction=0.15] [--test_fraction=0.2]
        [--split_seed=0] [--key=value ...]

``NEW_CLASSES_FOLDER`` holds one subfolder per new class (:mod:`soundcl.data.folder`). The
run's own recipe, YAML and overrides (``train_hparams.yaml``, ``train_overrides.json``)
train task ``K`` (``K`` = the run's task count) on them, with the run's method and its replay
memory, into ``save/task<K>/`` of the same run folder: the task loop skips the finished tasks,
so rows ``0..K-1`` of the accuracy matrix stay as they were and row ``K`` is added. An
interrupted extension resumes when the same command is rerun, like any task.

What changes: ``n_classes`` grows by the new classes (the classifier's new outputs start at
zero; the finished tasks' final checkpoints get those rows too, so they still load and classify
as before over their classes), ``task_classes`` gets task ``K``, and ``prepare_data`` reads the
run's manifests (task ``K``'s are written here from the folder). Any other hparam that differs
from the run's (``--key=value`` given here) is refused by the recipe's usual check, as for any
rerun. Brains whose state depends on the class count beyond the classifier (EWC's Fisher
information, LwF's teacher, DER++'s stored logits, iCaRL) are not supported.
"""
import argparse
import json
import os
import runpy
import sys

import torch

# soundcl internals: the only imports of this module (paths may change with the package layout).
from soundcl.core import config
from soundcl.core import recipe
from soundcl.base.atomic import write_json_atomic
from soundcl.data.folder import FolderDataError, scan, split_rows, clip_ids
from soundcl.data.manifest import task_manifest_path, write_manifest
from soundcl.data.probe import probe_rows
from soundcl.data.skeleton import SPLITS
from soundcl.inference import TRAIN_CONFIG_FILE, read_inference_yaml, RunNotReady, finished_tasks

#: Record of an extension, in the run's save folder: a rerun of the same command resumes it.
EXTENSION_FILE = "extend_task{}.json"
#: Recipes whose Brains an extension supports (state beyond the classifier is sized by n_classes elsewhere).
SUPPORTED_BRAINS = ("soundcl.core.brains.SupervisedBrain", "soundcl.methods.supervised.replay.ReplayBrain")


def read_prepared(save_folder):
    """``prepare_data`` of an extended run: the manifests already in ``save_folder``, tasks 0, 1 ..."""
    n_tasks = 0
    while all(os.path.isfile(task_manifest_path(save_folder, split, n_tasks)) for split in SPLITS):
        n_tasks += 1
    return {"manifests": {split: [task_manifest_path(save_folder, split, k) for k in range(n_tasks)]
                          for split in SPLITS}}


def plan(run_dir, new_folder, valid_fraction=0.15, test_fraction=0.2, split_seed=0):
    """Set up task ``K`` of ``run_dir`` from ``new_folder`` (or find the one set up before).

    Returns the extension record: ``task``, ``folder``, ``classes`` (new names), ``overrides``
    (the run's, with the changed keys) and ``recipe``.
    """
    run_dir, new_folder = os.path.abspath(run_dir), os.path.abspath(new_folder)
    info = read_inference_yaml(run_dir)
    save = os.path.join(run_dir, "save")
    for k in range(len(info["task_classes"]) + 1):
        path = os.path.join(save, EXTENSION_FILE.format(k))
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fin:
                record = json.load(fin)
            if record["folder"] == new_folder:
                return record  # set up before: rerunning resumes it
    if info["brain"] not in SUPPORTED_BRAINS:
        raise RunNotReady(f"extending a run of {info['brain']} is not supported (only {', '.join(SUPPORTED_BRAINS)})")
    n_tasks = len(info["task_classes"])
    done = finished_tasks(run_dir, info)
    if done != list(range(n_tasks)):
        raise RunNotReady(f"{run_dir} is not finished (finished tasks: {done} of {n_tasks}): finish it first "
                          f"(rerun its command)")
    with open(os.path.join(run_dir, TRAIN_CONFIG_FILE), encoding="utf-8") as fin:
        trained = json.load(fin)
    entries, new_classes = scan(new_folder)
    old_classes = list(info["classes"])
    clash = sorted(set(new_classes) & set(old_classes))
    if clash:
        raise FolderDataError(f"class {clash[0]!r} of {new_folder} is already a class of the run: new classes only")
    n_old = int(info["n_classes"])
    index = {name: n_old + i for i, name in enumerate(new_classes)}
    ids = [f"task{n_tasks}__{clip_id}" for clip_id in clip_ids([e["path"] for e in entries], new_folder)]
    rows = [{"ID": clip_id, "duration": 0.0, "wav": e["path"], "class_idx": index[e["label"]], "label": e["label"],
             "fold": 0, "group": e["group"], "split": e["split"]} for clip_id, e in zip(ids, entries)]
    rows, _ = probe_rows(rows, "audio files", "error", expected=f"under {new_folder}")
    for split, split_rows_ in split_rows(rows, valid_fraction, test_fraction, split_seed).items():
        write_manifest(task_manifest_path(save, split, n_tasks), split_rows_)
    overrides = dict(trained["overrides"])
    overrides.update({"output_folder": run_dir,  # wherever the run folder is now
                      "n_classes": n_old + len(new_classes),
                      "task_classes": [list(t) for t in info["task_classes"]] + [sorted(index.values())],
                      "prepare_data": f"!name:{__name__}.read_prepared"})
    record = {"task": n_tasks, "folder": new_folder, "classes": new_classes, "overrides": overrides,
              "overrides_before": trained["overrides"], "recipe": trained["recipe"], "n_classes_before": n_old}
    grow_classifiers(save, info, n_old, overrides["n_classes"])
    write_json_atomic(os.path.join(save, EXTENSION_FILE.format(n_tasks)), record, indent=1)
    return record


def grow_classifiers(save, info, n_old, n_new):
    """Give the classifier of every checkpoint of the finished tasks ``n_new`` outputs (new rows zero)."""
    for k in range(len(info["task_classes"])):
        task_dir = os.path.join(save, info["task_dir_format"].format(k))
        for name in sorted(os.listdir(task_dir)):
            path = os.path.join(task_dir, name, "classifier.ckpt")
            if not (name.startswith("CKPT") and os.path.isfile(path)):
                continue
            state = torch.load(path, map_location="cpu")
            grown = {key: _grow(value, n_old, n_new) for key, value in state.items()}
            tmp = path + ".tmp"
            torch.save(grown, tmp)
            os.replace(tmp, path)


def _grow(tensor, n_old, n_new):
    if not torch.is_tensor(tensor) or tensor.dim() == 0 or tensor.shape[0] != n_old:
        return tensor
    return torch.cat([tensor, tensor.new_zeros((n_new - n_old, *tensor.shape[1:]))])


def allow_changes(run_dir, record):
    """Write into run_config.json the new values of the hparams that the extension changes (the
    n_classes, task_classes, prepare_data and what is built from them, e.g. the classifier), so that the recipe's
    check refuses only other differences."""
    hparams_file = os.path.join(run_dir, "train_hparams.yaml")
    old, new = (recipe.run_description(config.preview_hparams(hparams_file, _yaml_overrides(record[key])))
                for key in ("overrides_before", "overrides"))
    path = os.path.join(run_dir, recipe.RUN_CONFIG_FILE)
    with open(path, encoding="utf-8") as fin:
        stored = json.load(fin)
    stored.update({key: value for key, value in new.items() if old.get(key) != value})
    write_json_atomic(path, stored, indent=1)


def _yaml_overrides(overrides):
    """The overrides as one YAML string (tags such as ``!name:`` kept)."""
    lines = []
    for key, value in overrides.items():
        text = value if isinstance(value, str) and value.startswith("!") else json.dumps(value)
        lines.append(f"{key}: {text}")
    return "\n".join(lines)


def recipe_argv(run_dir, record, extra=()):
    """argv of the run's recipe that trains the new task (``extra`` options replace those of the same name)."""
    options = {f"--{key}": f"--{key}={_yaml_overrides({key: value}).split(': ', 1)[1]}"
               for key, value in record["overrides"].items()}
    options.update({option.split("=", 1)[0]: option for option in extra})
    return [os.path.join(run_dir, "train_hparams.yaml"), *options.values()]


def run(run_dir, new_folder, extra=(), **split_options):
    """Set up (or find) the extension and train it with the run's recipe; returns its results."""
    record = plan(run_dir, new_folder, **split_options)
    allow_changes(os.path.abspath(run_dir), record)
    script = record["recipe"]
    if not os.path.isfile(script):
        raise RunNotReady(f"the run's recipe {script} is not there: cannot train the new task")
    main = runpy.run_path(script, run_name="soundcl_extend")["main"]
    return main(recipe_argv(os.path.abspath(run_dir), record, extra))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m soundcl.extend", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("new_folder", help="one subfolder per new class")
    parser.add_argument("--valid_fraction", type=float, default=0.15)
    parser.add_argument("--test_fraction", type=float, default=0.2)
    parser.add_argument("--split_seed", type=int, default=0)
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args.run_dir, args.new_folder, extra, valid_fraction=args.valid_fraction,
                   test_fraction=args.test_fraction, split_seed=args.split_seed)
    except (RunNotReady, FolderDataError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
