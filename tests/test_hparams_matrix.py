"""The hparams matrix: every ``hparams/<dataset>/<recipe>.yaml`` runs end to end.

Each YAML found on disk is one cell. It runs through its recipe script
(``recipes/<recipe>.py``, in-process, as ``python recipes/<recipe>.py <yaml> ...``
would) with ``data_folder`` pointed at a generated miniature of its data set
(:mod:`soundcl.testing.miniatures`, made once per session) and tiny overrides
(1 epoch, 2-block CNN, 2 tasks of 2 classes). An override is passed only when the
YAML has the key, so YAMLs of any recipe, added by anyone, are picked up as they are.

Recipes that evaluate another run's encoder (``ssl_checkpoints_dir``) get the
``save`` folder of a tiny ``sup_train`` run on the same data set, made once.
"""

import glob
import json
import math
import os
import runpy
import sys

import pytest
import ruamel.yaml
import torch

import speechbrain as sb

from conftest import REPO_ROOT
from soundcl.core import config
from soundcl.data import folder as folder_data
from soundcl.testing import miniatures

HPARAMS_FILES = sorted(
    os.path.relpath(path, REPO_ROOT).replace(os.sep, "/")
    for path in glob.glob(os.path.join(REPO_ROOT, "hparams", "*", "*.yaml"))
)

#: Data-set folder name -> maker of its miniature in ``folder`` (``synth`` uses the
#: ``synth_data_folder`` fixture). Sizes are the smallest that give every split of
#: every task at least a couple of clips.
MINIATURE_MAKERS = {
    "us8k": lambda folder, shared: miniatures.make_us8k(folder, shared),
    "esc50": lambda folder, shared: miniatures.make_esc50(folder, shared, n_classes=4),
    # 5 clips per scene: 7 and 8 training clips per task, so batches of 4 are never empty
    # with drop_last (contrastive recipes) nor of one clip (BatchNorm) without it.
    "tau19": lambda folder, shared: miniatures.make_tau19(folder, shared, clips_per_class=5),
    "tau22": lambda folder, shared: miniatures.make_tau22(folder, shared),
    "cochl": lambda folder, shared: miniatures.make_cochl(folder),
    "vgg": lambda folder, shared: miniatures.make_vgg(folder, shared, n_classes=VGG_MINIATURE_CLASSES),
    # Your own sounds (soundcl.data.folder): class subfolders of mixed formats, rates and channels.
    "folder": lambda folder, shared: folder_data.write_example_folder(folder, n_classes=4, clips_per_class=6),
}

#: The VGGSound miniature keeps 6 of the 309 classes; its cells size the classifier
#: (and the 309 x 309 confusion matrices written per task) to those.
VGG_MINIATURE_CLASSES = 6

#: Two tasks of two classes; indices exist in every miniature (for VGGSound they
#: index the miniature's own sorted classes).
TASK_CLASSES = [[0, 1], [2, 3]]

#: Tiny values, each passed only when the YAML has the key.
TINY_VALUES = {
    "number_of_epochs": "1",
    "encoder_channels": "[8,16]",
    "emb_dim": "32",
    "n_mels": "32",
    "bcresnet_c": "1",  # BC-ResNet width (emb_dim 32 = 32 * c)
    "ecapa_channels": "[8,8,8,8,24]",  # ECAPA-TDNN (simclr / simsiam): 8-wide blocks, 3 x 8 aggregated
    "task_classes": json.dumps(TASK_CLASSES).replace(" ", ""),
    "n_tasks": str(len(TASK_CLASSES)),
    "train_folds": "[1,2]",  # fold-based sets (UrbanSound8K layout): 2 of the 8 training folds
    "batch_size": "4",
    "train_duration": "0.5",
    "warmup_epochs": "0",
    "knn_k": "3",
    "ranpac_M": "64",  # RanPAC's random projection (YAMLs: the original's 10000, a 10000 x 10000 Gram matrix)
    "ckpt_interval_minutes": "0",
    "stop_after_task": "null",
    # PaSST (sit_train): a 1-layer, 32-wide transformer; structured patchout that leaves patches
    # in the 2 x 4 grid of 32 mels x 0.5 s.
    "passt_depth": "1",
    "passt_embed_dim": "32",
    "passt_heads": "2",
    "s_patchout_t": "1",
    "s_patchout_f": "1",
}

#: Encoder recipes whose ``save`` folder an ``ssl_checkpoints_dir`` can point to, in
#: order of preference.
ENCODER_RECIPES = ("sup_train", "simclr_train", "supclr_train", "simsiam_train")


#: The continual-SSL family of cssl_sound (MoCo, Barlow Twins, SupSiam, CaSSLe): each runs on
#: synth and on one other data set (rotating, so every data set runs some); on the other data
#: sets its cell checks the YAML with the recipe's start-up check only (the matrix stays fast).
SSL_FAMILY_RECIPES = ("moco_train", "supmoco_train", "barlowtwins_train", "supsiam_train",
                      "cassle_simclr", "cassle_moco", "cassle_barlowtwins", "cassiam_train")


def _runs_end_to_end(hparams_rel):
    dataset, name = hparams_rel.split("/")[-2:]
    recipe = name[:-len(".yaml")]
    if recipe not in SSL_FAMILY_RECIPES or dataset == "synth":
        return True
    others = sorted({rel.split("/")[-2] for rel in HPARAMS_FILES} - {"synth"})
    return dataset == others[SSL_FAMILY_RECIPES.index(recipe) % len(others)]


#: Evaluation recipes (linear / kNN on another run's encoder): each data set's cell runs
#: one protocol of ``linclf_train_type``, cycling so that every protocol runs on both
#: recipes; ``subset`` / ``buffer`` keep this many clips per earlier task.
EVAL_RECIPES = ("linclf_train", "knn_eval")
EVAL_PROTOCOLS = ("seen", "subset", "buffer", "full")
EVAL_NUM_KEEP = 2


def _eval_protocol(hparams_rel):
    dataset, name = hparams_rel.split("/")[-2:]
    datasets = sorted({rel.split("/")[-2] for rel in HPARAMS_FILES})
    shift = EVAL_RECIPES.index(name[:-len(".yaml")])
    return EVAL_PROTOCOLS[(datasets.index(dataset) + shift) % len(EVAL_PROTOCOLS)]


def _expected_eval_n_train(protocol, train_counts, k):
    """Training clips of task ``k`` under ``protocol``, from the per-task training counts."""
    kept = [min(EVAL_NUM_KEEP, n) for n in train_counts]
    if protocol == "seen":
        return sum(train_counts[: k + 1])
    if protocol == "subset":
        return sum(kept[: k + 1])
    if protocol == "buffer":
        return train_counts[k] + sum(kept[:k])
    return sum(train_counts)


def _train_counts(output_folder, n_tasks):
    """Training clips per task, from the manifests the recipe's prepare wrote."""
    counts = []
    for k in range(n_tasks):
        with open(os.path.join(output_folder, "save", f"train_task{k}.csv"), encoding="utf-8") as fin:
            counts.append(sum(1 for _ in fin) - 1)
    return counts


def _recipe_of(hparams_rel):
    """The recipe that runs ``hparams/<ds>/<name>.yaml``: ``recipes/<name>.py``, else the one recipe
    whose docstring names ``<name>.yaml`` (e.g. supclr_train.py for supclr_train_10task.yaml)."""
    name = os.path.basename(hparams_rel)[:-len(".yaml")]
    if os.path.isfile(os.path.join(REPO_ROOT, "recipes", f"{name}.py")):
        return name
    found = []
    for script in sorted(glob.glob(os.path.join(REPO_ROOT, "recipes", "*.py"))):
        with open(script, encoding="utf-8") as fin:
            text = fin.read()
        docstring = text.split('"""')[1] if text.count('"""') >= 2 else ""
        if f"{name}.yaml" in docstring:
            found.append(os.path.basename(script)[:-len(".py")])
    assert len(found) == 1, f"{hparams_rel}: no recipes/{name}.py and recipes naming {name}.yaml: {found}"
    return found[0]


#: Recipes of issue 13's tools (A-GEM, label distillation, embedding maps) and the 10-task YAMLs:
#: each runs end to end on one data set (rotating); on the others the YAML passes the recipe's
#: start-up check only (the matrix stays fast). The tools' own tests run them on synth.
ROTATING_CELLS = ("supclr_train_agem", "sup_labeldist", "visualize",
                  "knn_eval_10task", "linclf_train_10task", "supclr_train_10task")
TESTED_ON_SYNTH = ("supclr_train_agem", "sup_labeldist", "visualize")
#: The 10-task YAMLs run two tasks of one class each (what can break with one class per task).
ONE_CLASS_TASKS = [[0], [1]]


def _rotating_cell_runs(hparams_rel):
    dataset, name = hparams_rel.split("/")[-2:]
    name = name[:-len(".yaml")]
    if name not in ROTATING_CELLS:
        return True
    candidates = sorted({rel.split("/")[-2] for rel in HPARAMS_FILES if rel.endswith(f"/{name}.yaml")}
                        - ({"synth"} if name in TESTED_ON_SYNTH else set()))
    return dataset == candidates[ROTATING_CELLS.index(name) % len(candidates)]


def _cell_id(hparams_rel):
    dataset, name = hparams_rel.split("/")[-2:]
    return f"{dataset}-{name[:-len('.yaml')]}"


def _top_level_keys(hparams_path):
    """Top-level keys of a YAML, read as text (no tag or reference is resolved)."""
    with open(hparams_path, encoding="utf-8") as fin:
        return [line.split(":", 1)[0] for line in fin if line[:1].isalpha() and ":" in line]


def _placeholders(hparams_path):
    with open(hparams_path, encoding="utf-8") as fin:
        return [line.split(":", 1)[0] for line in fin
                if line[:1].isalpha() and "!PLACEHOLDER" in line.split("#", 1)[0]]


def _yaml_flow(value):
    """A plain previewed value as a one-line YAML flow value."""
    return json.dumps(json.loads(json.dumps(value, default=str)))


@pytest.fixture(scope="session")
def matrix_workspace(tmp_path_factory):
    """Session state shared by the cells: miniature folders, encoder runs, audio cache."""
    root = tmp_path_factory.mktemp("matrix")
    return {"root": root, "miniatures": {}, "encoders": {}, "audio_cache": str(root / "audio_cache")}


def _miniature(workspace, dataset, request):
    """The folder of ``dataset``'s miniature, made on first use."""
    if dataset not in workspace["miniatures"]:
        if dataset == "synth":
            folder = request.getfixturevalue("synth_data_folder")
        elif dataset in MINIATURE_MAKERS:
            target = str(workspace["root"] / "data" / dataset)
            folder = MINIATURE_MAKERS[dataset](target, miniatures.default_shared_data_dir())
        else:
            pytest.fail(f"hparams/{dataset}/: no miniature maker for data set {dataset!r}; "
                        f"add it to MINIATURE_MAKERS in {__file__}")
        workspace["miniatures"][dataset] = str(folder)
    return workspace["miniatures"][dataset]


def _tiny_argv(hparams_rel, workspace, output_base, request, extra=()):
    """argv of a tiny run of ``hparams_rel``: every applicable override, nothing else."""
    hparams_path = os.path.join(REPO_ROOT, hparams_rel)
    dataset = hparams_rel.split("/")[-2]
    keys = set(_top_level_keys(hparams_path))
    options = {"output_base": str(output_base)}
    if "audio_cache" in keys:
        options["audio_cache"] = workspace["audio_cache"]
    # data_folder is this data set; <name>_folder keys (e.g. cochl_folder of a transfer
    # recipe) are the data set called <name>.
    if "data_folder" in keys:
        options["data_folder"] = _miniature(workspace, dataset, request)
    for key in keys:
        name = key[:-len("_folder")] if key.endswith("_folder") else None
        if name in MINIATURE_MAKERS or name == "synth":
            options[key] = _miniature(workspace, name, request)
    options.update({key: value for key, value in TINY_VALUES.items() if key in keys})
    if hparams_rel.endswith("_10task.yaml"):
        options["task_classes"] = json.dumps(ONE_CLASS_TASKS).replace(" ", "")
        # A miniature's one-class task holds 2+ training clips: batches of 2 keep drop_last training.
        options["batch_size"] = "2"
        if "n_tasks" in keys:
            options["n_tasks"] = str(len(ONE_CLASS_TASKS))
    if dataset == "vgg" and "n_classes" in keys:
        options["n_classes"] = str(VGG_MINIATURE_CLASSES)
    if dataset == "synth" and "clips_per_class_per_fold" in keys:
        options["clips_per_class_per_fold"] = "4"  # the fixture's data, not a regeneration
    options.update(extra)
    unfilled = [key for key in _placeholders(hparams_path) if key not in options]
    if unfilled:
        pytest.skip(f"{hparams_rel}: no miniature for the !PLACEHOLDER keys {unfilled}")

    # Loader options are whole mappings: keep the YAML's, with no worker processes.
    argv = [f"--{key}={value}" for key, value in options.items()]
    preview = _preview(hparams_path, argv)
    for key in keys:
        if key.endswith("_dataloader_opts") and isinstance(preview.get(key), dict):
            loader = dict(preview[key], num_workers=0)
            argv.append(f"--{key}={_yaml_flow(loader)}")
    return [hparams_path, *argv, "--noprogressbar"]


def _preview(hparams_path, argv):
    _, _, overrides = sb.parse_arguments([hparams_path, *argv])
    return config.preview_hparams(hparams_path, overrides)


def _run_cell(hparams_rel, argv):
    """Run ``recipes/<recipe>.py`` in-process on ``argv``; return (results.json, output folder)."""
    recipe = _recipe_of(hparams_rel)
    script = os.path.join(REPO_ROOT, "recipes", f"{recipe}.py")
    saved_argv, saved_threads = sys.argv, torch.get_num_threads()
    sys.argv = [script, *argv]
    # Tiny models run faster on one thread than on several (less sync overhead).
    torch.set_num_threads(1)
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (None, 0):
            pytest.fail(f"{hparams_rel}: the recipe exited with {stop.code}")
    finally:
        sys.argv = saved_argv
        torch.set_num_threads(saved_threads)
    output_folder = str(_preview(argv[0], [a for a in argv[1:] if a != "--noprogressbar"])["output_folder"])
    results_file = os.path.join(output_folder, "results.json")
    assert os.path.isfile(results_file), f"{hparams_rel}: no results.json in {output_folder}"
    with open(results_file, encoding="utf-8") as fin:
        return json.load(fin), output_folder


def _encoder_save_folder(dataset, workspace, request):
    """``save`` folder of a tiny encoder run on ``dataset`` (run once per session)."""
    if dataset not in workspace["encoders"]:
        candidates = [f"hparams/{dataset}/{name}.yaml" for name in ENCODER_RECIPES]
        available = [rel for rel in candidates if os.path.isfile(os.path.join(REPO_ROOT, rel))]
        if not available:
            pytest.skip(f"hparams/{dataset}/ has no encoder recipe ({', '.join(ENCODER_RECIPES)}) "
                        "whose checkpoints ssl_checkpoints_dir could point to")
        output_base = workspace["root"] / "encoders" / dataset
        _, output_folder = _run_cell(available[0], _tiny_argv(available[0], workspace, output_base, request))
        workspace["encoders"][dataset] = os.path.join(output_folder, "save")
    return workspace["encoders"][dataset]


@pytest.mark.parametrize("hparams_rel", HPARAMS_FILES, ids=[_cell_id(p) for p in HPARAMS_FILES])
def test_cell_runs_end_to_end_on_its_miniature(hparams_rel, matrix_workspace, request, tmp_path):
    dataset = hparams_rel.split("/")[-2]
    keys = set(_top_level_keys(os.path.join(REPO_ROOT, hparams_rel)))
    recipe = os.path.basename(hparams_rel)[:-len(".yaml")]
    extra = {}
    if "ssl_checkpoints_dir" in keys:
        extra["ssl_checkpoints_dir"] = _encoder_save_folder(dataset, matrix_workspace, request)
    protocol = _eval_protocol(hparams_rel) if recipe in EVAL_RECIPES else None
    if protocol is not None:
        # batches no larger than the kept clips: the published drop_last would leave a subset task no batch
        extra.update(linclf_train_type=protocol, replay_num_keep=str(EVAL_NUM_KEEP), batch_size=str(EVAL_NUM_KEEP))

    argv = _tiny_argv(hparams_rel, matrix_workspace, tmp_path, request, extra)
    # Domain-incremental YAMLs (task_domains) run here on synth; the other miniatures lack clips of some
    # domains (tests/test_domain_incremental.py runs them on a miniature with every device).
    domain_check_only = "task_domains" in keys and dataset != "synth"
    if domain_check_only or not (_rotating_cell_runs(hparams_rel) and _runs_end_to_end(hparams_rel)):
        from soundcl.core.recipe import check_config

        needs = runpy.run_path(os.path.join(REPO_ROOT, "recipes", f"{_recipe_of(hparams_rel)}.py"),
                               run_name="matrix_check")["NEEDS"]
        check_config(argv[0], sb.parse_arguments([a for a in argv if a != "--noprogressbar"])[2], needs)
        return
    results, output_folder = _run_cell(hparams_rel, argv)

    assert not results["partial"], results
    matrix = results["accuracy_matrix"]
    n_tasks = len(matrix)
    if "task_classes" in keys and not keys & {"stage_n_classes", "task_domains"}:  # transfer: a task per stage
        assert n_tasks == len(TASK_CLASSES), matrix
    for k, row in enumerate(matrix):
        # Every task is tested on itself once learnt: a real number, not NaN.
        assert row[k] is not None and math.isfinite(row[k]) and 0.0 <= row[k] <= 1.0, matrix

    # The protocol: which tasks row k tests, and how many clips task k trains on.
    per_task = results["per_task"]
    for k, task in enumerate(per_task):
        tested = list(range(n_tasks)) if protocol == "full" else list(range(k + 1))
        assert task["tested_tasks"] == tested, f"{hparams_rel} ({protocol}): row {k} tested {task['tested_tasks']}"
        assert task["n_train"] > 0, f"task {k} trained on no clip of the miniature"
    if protocol is not None:
        counts = _train_counts(output_folder, n_tasks)
        n_train = [task["n_train"] for task in per_task]
        expected = [_expected_eval_n_train(protocol, counts, k) for k in range(n_tasks)]
        assert n_train == expected, f"{hparams_rel} ({protocol}, per-task clips {counts}): n_train {n_train}"
        assert f"LinearEvalSets(train_type='{protocol}'" in results["task_data_policy"], results["task_data_policy"]
    elif recipe in ("sup_train", "simclr_train", "simsiam_train", "supclr_train", "replay_train", *SSL_FAMILY_RECIPES):
        # Training recipes: task k trains on its own clips plus the memory.
        counts = _train_counts(output_folder, n_tasks)
        memory = [0] + [task["memory_size"] for task in per_task[:-1]]
        assert [t["n_train"] for t in per_task] == [c + m for c, m in zip(counts, memory)], per_task


def test_every_data_set_folder_has_a_miniature():
    datasets = {rel.split("/")[-2] for rel in HPARAMS_FILES}
    assert datasets >= {"synth", "us8k", "vgg", "cochl", "tau22"}, datasets
    assert datasets - {"synth"} <= set(MINIATURE_MAKERS), datasets - set(MINIATURE_MAKERS)


def test_readme_lists_every_cell_with_its_command():
    """Each YAML's command is in README.md or in its data set's hparams/<dataset>/README.md."""
    for rel in HPARAMS_FILES:
        recipe = _recipe_of(rel)
        texts = []
        for readme in ("README.md", os.path.join(os.path.dirname(rel), "README.md")):
            path = os.path.join(REPO_ROOT, readme)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as fin:
                    texts.append(fin.read())
        assert any(f"recipes/{recipe}.py {rel}" in text for text in texts), (
            f"neither README.md nor {os.path.dirname(rel)}/README.md has the command of {rel}")


def test_new_data_set_yamls_have_the_data_sets_properties():
    """Sample rate, class count and clip length of each data set, as the corpora have them."""
    expected = {"vgg": (16000, 309, 10.0), "cochl": (44100, 13, 10.0), "tau22": (44100, 10, 1.0)}
    for rel in HPARAMS_FILES:
        dataset = rel.split("/")[-2]
        if dataset not in expected or os.path.basename(rel)[:-5] not in ENCODER_RECIPES:
            continue
        with open(os.path.join(REPO_ROOT, rel), encoding="utf-8") as fin:
            raw = ruamel.yaml.YAML(typ="rt").load(fin)
        sample_rate, n_classes, clip_seconds = expected[dataset]
        assert raw["sample_rate"] == sample_rate, rel
        assert raw["n_classes"] == n_classes, rel
        assert 0 < raw["train_duration"] <= clip_seconds, rel
        assert raw["on_bad_audio"] == "error" and raw["check_audio"] is True, rel
        assert raw["deterministic"] is False, rel


#: Data sets whose miniature a tiny CNN learns in a few epochs (each task's own row above chance).
#: The real-layout miniatures of the other data sets hold 1-2 test clips per class of generated
#: tones (accuracy moves in steps of 0.5): their cells check the protocol, not learning.
LEARNABLE_MINIATURES = ("synth",)


@pytest.mark.parametrize("dataset", LEARNABLE_MINIATURES)
def test_finetune_forgets_and_replay_keeps_old_classes(dataset, matrix_workspace, request, tmp_path):
    """The class-incremental protocol of sup_train.yaml: fine-tuning forgets task 0 once task 1 is
    learnt; replaying every clip of task 0 keeps it above fine-tuning."""
    hparams_rel = f"hparams/{dataset}/sup_train.yaml"
    matrices = {}
    for name, keep in (("finetune", "0"), ("replay", "all")):
        argv = _tiny_argv(hparams_rel, matrix_workspace, tmp_path / name, request,
                          {"replay_num_keep": keep, "number_of_epochs": "3"})
        results, _ = _run_cell(hparams_rel, argv)
        matrices[name] = results["accuracy_matrix"]
    finetune, replay = matrices["finetune"], matrices["replay"]
    chance = 1.0 / len(TASK_CLASSES[0])
    for matrix in (finetune, replay):
        assert matrix[0][0] > chance and matrix[1][1] > chance, matrices  # each task learnt
    assert finetune[1][0] < finetune[0][0] - 0.25, matrices  # forgetting
    assert replay[1][0] > finetune[1][0] + 0.25, matrices  # replay keeps old classes
