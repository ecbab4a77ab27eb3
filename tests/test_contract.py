"""The recipe contract: what a method needs is declared, checked at start, and a rerun
into an existing output folder resumes only the same run."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, recipe_argv, run_recipe
from soundcl.core.brains import SupervisedBrain
from soundcl.core.recipe import KEYS_ADDED_LATER
from soundcl.base.contract import REQUIRED, ConfigError, check_declared, declared_hparams
from soundcl.methods.evaluation.knn_eval import KnnEvalBrain
from soundcl.methods.evaluation.linear_eval import LinearEvalSets


def test_declarations_merge_over_base_classes_and_subclasses_may_give_defaults():
    declared = declared_hparams(KnnEvalBrain, LinearEvalSets)
    assert declared["linclf_train_type"][0] is REQUIRED  # from LinearEvalSets and LinearEvalBrain
    assert declared["knn_k"][0] is REQUIRED
    assert declared["lr_annealing"][0] is None  # required by ClassifierStages, not by kNN
    assert declared["seed"] == (REQUIRED, "ContinualBrain")


def test_missing_key_fails_naming_it_and_the_near_miss():
    with pytest.raises(ConfigError, match="lacks the key 'use_mixup' that SupervisedBrain needs.*use_mixp"):
        check_declared({"seed": 1, "n_classes": 2, "audio": None, "pad_short_crops": "batch", "epoch_counter": None,
                        "lr_annealing": None, "train_logger": None, "use_mixp": True, "mixup_alpha": 0.2},
                       [SupervisedBrain], "x.yaml")


def _yaml_without(tmp_path, source, key):
    """A copy of ``source`` (in hparams/) without the top-level ``key`` line."""
    lines = open(os.path.join(REPO_ROOT, source), encoding="utf-8").read().split("\n")
    kept = [line for line in lines if not line.startswith(f"{key}:")]
    assert len(kept) == len(lines) - 1, key
    path = tmp_path / os.path.basename(source)
    path.write_text("\n".join(kept).replace(f"<{key}>", "x"), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("recipe, key", [
    ("linclf_train", "linclf_train_type"),
    ("knn_eval", "replay_num_keep"),
    ("replay_train", "mem_manage"),
    ("sup_train", "replay_num_keep"),
])
def test_a_yaml_without_a_protocol_key_stops_at_start_naming_it(tmp_path, recipe, key):
    hparams = _yaml_without(tmp_path, f"hparams/tau19/{recipe}.yaml", key)
    argv = [hparams, "--data_folder=/nonexistent", f"--output_base={tmp_path}"]
    if recipe in ("linclf_train", "knn_eval"):
        argv.append(f"--ssl_checkpoints_dir={tmp_path}")
    with pytest.raises(SystemExit, match=f"lacks the key '{key}'"):
        run_recipe(recipe, argv)


@pytest.mark.parametrize("script, option, expected", [
    ("replay_train", "--mem_manage=fifo", "mem_manage='fifo' is not valid"),
    ("replay_train", "--mode=replay_all", "mode='replay_all' is not valid"),
    ("replay_train", "--memry_size=4", "unknown hparam 'memry_size'.*memory_size"),
    ("dsmn_train", "--number_of_epochs=0", "number_of_epochs=0 is not valid"),
    ("sit_train", "--batch_size=0", "batch_size=0 is not valid"),
])
def test_bad_values_end_in_one_line_without_a_traceback(tmp_path, script, option, expected):
    done = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "recipes", f"{script}.py"),
         os.path.join(REPO_ROOT, "hparams", "synth", f"{script}.yaml"), f"--output_base={tmp_path}", option],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode != 0
    last = done.stderr.strip().split("\n")[-1]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert last.startswith("error: ") and __import__("re").search(expected, last), last


def test_balanced_random_can_be_selected(tmp_path, synth_data_folder):
    argv = recipe_argv("hparams/synth/replay_train.yaml", str(tmp_path), synth_data_folder,
                       "--mem_manage=balanced_random", "--memory_size=8", "--task_classes=[[0,1],[2,3]]",
                       "--number_of_epochs=1", "--emb_dim=16", "--bcresnet_c=0.5", "--train_duration=0.5")
    # The tiny CNN sizes of the shared overrides do not apply to BC-ResNet.
    results = run_recipe("replay_train", [a for a in argv if not a.startswith("--encoder_channels")])
    assert results["memory_policy"] == "ClassBalancedRandomMemory(memory_size=8)"
    assert results["per_task"][0]["memory_per_class"] == {"0": 4, "1": 4}


def test_a_rerun_with_other_hparams_stops_naming_them_and_the_same_command_resumes(tmp_path, synth_data_folder):
    argv = recipe_argv("hparams/synth/sup_train.yaml", str(tmp_path), synth_data_folder,
                       "--task_classes=[[0,1],[2,3]]", "--number_of_epochs=1", "--stop_after_task=0")
    first = run_recipe("sup_train", argv)
    assert first["partial"] and first["finished_tasks"] == 1
    with pytest.raises(SystemExit, match=r"other hparams: batch_size \(16 -> 8\)"):
        run_recipe("sup_train", [a for a in argv if not a.startswith("--batch_size")] + ["--batch_size=8"])
    # A run folder of an older soundcl lacks the keys added since: at the values that compute what it
    # computed, it resumes; at another value it refuses, naming the key.
    config_path = next(tmp_path.rglob("run_config.json"))
    config = json.loads(config_path.read_text())
    assert {key: config[key] for key in KEYS_ADDED_LATER} == KEYS_ADDED_LATER
    config_path.write_text(json.dumps({k: v for k, v in config.items() if k not in KEYS_ADDED_LATER}))
    with pytest.raises(SystemExit, match=r"other hparams: eval_future_tasks \(absent -> false\)"):
        run_recipe("sup_train", argv + ["--eval_future_tasks=False"])
    # stop_after_task may change: the same run goes on.
    resumed = run_recipe("sup_train", [a for a in argv if not a.startswith("--stop_after_task")])
    assert not resumed["partial"] and resumed["accuracy_matrix"][0][0] == first["accuracy_matrix"][0][0]
    assert resumed["torch_num_threads"] == 1


@pytest.mark.parametrize("hparams, expected", [
    ({"replay_encoder": "bcresnet3"}, "replay_encoder='bcresnet3' is not valid"),
    ({"backbone": "vit"}, "backbone='vit' is not valid"),
    ({"passt_pretrained_path": "/nonexistent/passt.pt"}, "passt_pretrained_path='/nonexistent/passt.pt' is not valid: expected the path of a local checkpoint"),
])
def test_model_choices_and_missing_weights_fail_at_the_config_check(hparams, expected):
    from soundcl.core import config
    from soundcl.base.contract import ConfigError

    with pytest.raises(ConfigError, match=expected):
        config.validate(hparams)
    config.validate({"replay_encoder": "ascl_bcresnet", "backbone": "dsmn", "passt_pretrained_path": None})
