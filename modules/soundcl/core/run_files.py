"""The files a run writes for the inference interface (:mod:`soundcl.inference` reads them).

``save_training_config`` (at the experiment folder's creation: the recipe's YAML as given and
its overrides) and ``write_inference_yaml`` (by the task loop, before the first task: the
Brain, class names and task split), so that any run, even a partly finished one, can be
loaded by ``soundcl.inference.ContinualClassifier.from_hparams(source=<run folder>)``.
"""
import json
import os
import sys

import ruamel.yaml

from soundcl.base.atomic import atomic_write_text

#: Written into every run's output folder: what the inference interface needs.
INFERENCE_FILE = "inference.yaml"
#: The recipe's YAML as given (references unresolved), copied into the output folder.
TRAIN_HPARAMS_FILE = "train_hparams.yaml"
#: The command-line overrides of the run and where it ran (relative paths of the YAML).
TRAIN_CONFIG_FILE = "train_overrides.json"


def save_training_config(output_folder, hparams_file, overrides):
    """Copy the recipe's YAML (unresolved) and record its overrides; called when the experiment
    folder is created, on the main process."""
    with open(hparams_file, encoding="utf-8") as fin:
        atomic_write_text(os.path.join(output_folder, TRAIN_HPARAMS_FILE), fin.read())
    record = {"hparams_file": os.path.abspath(hparams_file), "overrides": _overrides_dict(overrides),
              "cwd": os.getcwd(), "recipe": _calling_recipe()}
    atomic_write_text(os.path.join(output_folder, TRAIN_CONFIG_FILE), json.dumps(record, indent=1, default=str))


def write_inference_yaml(loop):
    """``<output_folder>/inference.yaml`` of a task loop: its Brain, class names and task split.

    Called by :meth:`soundcl.core.task_loop.TaskLoop.run` on the main process, before the first task,
    so a partly finished run can classify too. Nothing is written for a run made without
    :func:`save_training_config` (no ``train_overrides.json``).
    """
    config_path = os.path.join(loop.output_folder, TRAIN_CONFIG_FILE)
    if not os.path.isfile(config_path):
        return
    with open(config_path, encoding="utf-8") as fin:
        config = json.load(fin)
    names = {}
    for split in loop.task_rows.values():
        for rows in split:
            for row in rows:
                names.setdefault(int(row["class_idx"]), str(row.get("label", row["class_idx"])))
    brain = importable_class(type(loop.brain))
    n_classes = int(loop.brain.hparams.n_classes)
    info = {
        "interface": "soundcl.inference.ContinualClassifier",
        "brain": f"{brain.__module__}.{brain.__name__}",
        "recipe": config["recipe"],
        "hparams_file": TRAIN_HPARAMS_FILE,
        "overrides": config["overrides"],
        "training_cwd": config["cwd"],
        "task_dir_format": loop.task_dir_format,
        "n_classes": n_classes,
        "task_classes": [[int(c) for c in task] for task in loop.task_classes],
        "classes": [names.get(i, f"class_{i}") for i in range(n_classes)],
    }
    header = (
        "# Inference interface of this run (soundcl.inference), written by the task loop:\n"
        "#   from soundcl.inference import ContinualClassifier\n"
        "#   classifier = ContinualClassifier.from_hparams(source=\"<this folder>\")  # task=K: after task K\n"
        "#   classifier.classify_file(\"clip.wav\")\n"
        "#   python -m soundcl.predict <this folder> clip.wav <folder> --top_k=3 --csv=predictions.csv\n"
    )

    def write(fout):
        fout.write(header)
        ruamel.yaml.YAML(typ="safe", pure=True).dump(info, fout)

    atomic_write_text(os.path.join(loop.output_folder, INFERENCE_FILE), write)


def importable_class(cls):
    """The first class of ``cls``'s MRO importable by its name from a soundcl module (a Brain a recipe
    or test derived on the fly, e.g. a strategy with early stopping, is recorded as the soundcl
    Brain it derives from)."""
    for klass in cls.__mro__:
        module = sys.modules.get(klass.__module__)
        if klass.__module__.startswith("soundcl.") and getattr(module, klass.__name__, None) is klass:
            return klass
    return cls


def _overrides_dict(overrides):
    """SpeechBrain's overrides (a YAML string or a dict) as plain data; a tagged value (``!name:...``)
    becomes the text ``"<tag> <value>"``."""
    if isinstance(overrides, str):
        overrides = ruamel.yaml.YAML(typ="rt").load(overrides) or {}
    return {str(key): _plain(value) for key, value in dict(overrides or {}).items()}


def _plain(value):
    tag = getattr(getattr(value, "tag", None), "value", None)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if tag and str(tag).startswith("!"):
        return f"{tag} {getattr(value, 'value', '')}".strip()
    if isinstance(value, bool) or value is None:
        return value
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return str(value)


def _calling_recipe():
    """The recipe script (``recipes/<name>.py``) that is running, else the program."""
    frame = sys._getframe()
    while frame is not None:
        path = frame.f_code.co_filename
        if path.endswith(".py") and os.path.basename(os.path.dirname(os.path.abspath(path))) == "recipes":
            return os.path.abspath(path)
        frame = frame.f_back
    return os.path.abspath(sys.argv[0])
