"""Domain-incremental learning (issue 29, section 1): the same classes over recording domains.

The synthetic domains (soundcl.data.synthetic_domains) split by domain with every class in
every task; fine-tuning forgets the first domain, replay keeps it; the DCASE 2026 baseline
(domain BatchNorm + minimum-entropy selection) reports its domain-selection and oracle-domain
accuracies; the entropy selection picks the right set on a hand-made case; the TAU 2022 domain
YAMLs run on a miniature with every device; a strategy that needs new classes per task is
refused in one line.
"""
import os

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, recipe_argv, run_recipe
from soundcl.core.task_data import CurrentTaskWithMemory, DomainTasks
from soundcl.data import synthetic_domains
from soundcl.data.domains import validate_task_domains
from soundcl.data.manifest import read_manifest
from soundcl.inference import ContinualClassifier
from soundcl.methods.supervised.joint import JointTraining
from soundcl.models.domain_bn import (DomainBatchNorm, convert_batchnorm, copy_domain, prediction_entropy,
                                      select_by_entropy, set_domain)
from soundcl.models.encoders import CNNEncoder
from soundcl.testing import miniatures

SYNTH = "hparams/synth/sup_train_domain.yaml"
DCASE = "hparams/synth/dcase_domain.yaml"
#: Four classes whose cues the radio domain turns around (rising / falling sweeps, low / high noise).
CLASSES = "--task_classes=[[1,2,3,9]]"
DOMAINS = "--task_domains=[[studio],[radio]]"


def _matrix(results):
    return np.array([[np.nan if v is None else v for v in row] for row in results["accuracy_matrix"]])


def _run(hparams_rel, base, data_folder, *extra):
    argv = recipe_argv(hparams_rel, str(base), data_folder, CLASSES, DOMAINS, "--train_folds=[1,2,3,4]",
                       "--number_of_epochs=4", f"--domain_data_folder={base}/domain_data", *extra)
    return run_recipe("sup_train", argv)


def test_the_synthetic_domains_split_by_domain_with_every_class_in_every_task(tmp_path, synth_data_folder):
    info = synthetic_domains.prepare(synth_data_folder, str(tmp_path / "save"), str(tmp_path / "domains"),
                                     [["studio"], ["phone", "radio"]], task_classes=[[0, 1], [2]],
                                     train_folds=[1, 2], clips_per_class_per_fold=8)
    assert info["n_tasks"] == 2 and info["task_domains"] == [["studio"], ["phone", "radio"]]
    for split in ("train", "valid", "test"):
        tasks = [read_manifest(path) for path in info["manifests"][split]]
        assert [sorted({r["class_idx"] for r in rows}) for rows in tasks] == [[0, 1, 2], [0, 1, 2]]
        assert [sorted({r["domain"] for r in rows}) for rows in tasks] == [["studio"], ["phone", "radio"]]
        assert len(tasks[1]) == 2 * len(tasks[0])  # the same clips through two other chains
    radio = read_manifest(info["manifests"]["train"][1])[-1]
    assert radio["wav"].startswith(str(tmp_path / "domains" / "radio")) and os.path.isfile(radio["wav"])
    with pytest.raises(ValueError, match="'cellar'"):
        synthetic_domains.prepare(synth_data_folder, str(tmp_path / "s2"), str(tmp_path / "d2"), [["cellar"]])
    with pytest.raises(ValueError, match="listed twice"):
        validate_task_domains([["a"], ["A", "b"]])


def test_domain_tasks_give_every_task_all_classes_and_joint_merges_the_domains():
    rows = {split: [[{"ID": f"{split}{k}{c}", "class_idx": c} for c in (0, 1, 2)] for k in range(3)]
            for split in ("train", "valid", "test")}
    _, classes = DomainTasks(CurrentTaskWithMemory()).regroup(rows, [[0, 1, 2]])
    assert classes == [[0, 1, 2]] * 3
    merged, classes = DomainTasks(JointTraining()).regroup(rows, None)
    assert classes == [[0, 1, 2]] and len(merged["train"]) == 1 and len(merged["train"][0]) == 9


@pytest.fixture(scope="module")
def finetune_and_replay(tmp_path_factory, synth_data_folder):
    base = tmp_path_factory.mktemp("domain")
    finetune = _run(SYNTH, base, synth_data_folder, "--replay_num_keep=0", "--experiment_name=finetune")
    replay = _run(SYNTH, base, synth_data_folder, "--replay_num_keep=all", "--experiment_name=replay")
    return finetune, replay


def test_finetuning_forgets_the_first_domain_and_replay_keeps_it(finetune_and_replay):
    finetune, replay = (_matrix(r) for r in finetune_and_replay)
    print(f"\nfine-tuning R:\n{finetune}\nreplay (all) R:\n{replay}")
    assert finetune_and_replay[0]["per_task"][1]["classes"] == [1, 2, 3, 9]  # every class in every task
    assert finetune[0, 0] >= 0.7 and finetune[1, 1] >= 0.7, finetune  # each domain learnt (chance: 0.25)
    assert finetune[1, 0] < finetune[0, 0] - 0.25, finetune  # forgetting of the first domain
    assert replay[1, 0] > finetune[1, 0] + 0.2, (finetune, replay)  # replay keeps it


def test_the_dcase_baseline_reports_domain_selection_and_oracle_accuracy(tmp_path, synth_data_folder):
    results = _run(DCASE, tmp_path, synth_data_folder)
    matrix = _matrix(results)
    last = results["per_task"][-1]["domain_selection"]
    print(f"\nDCASE baseline R:\n{matrix}\nlast row: {last}")
    assert last["tested_tasks"] == [0, 1]
    assert np.allclose(last["accuracy_selected"], matrix[1], atol=1e-6)
    assert all(0.0 <= v <= 1.0 for v in last["selection_accuracy"] + last["accuracy_oracle"])
    # Frozen shared weights: the first domain's own set predicts as it did after its task.
    assert last["accuracy_oracle"][0] == pytest.approx(matrix[0, 0])
    assert [sum(counts) for counts in last["chosen_sets"]] == [32, 32]  # every test clip chose a set
    for j, counts in enumerate(last["chosen_sets"]):  # selection accuracy: the clips of domain j that chose set j
        assert last["selection_accuracy"][j] == pytest.approx(counts[j] / 32)
    # A finished run classifies new clips as its test loop did, BatchNorm set chosen per clip.
    run_folder = next(tmp_path.rglob("inference.yaml")).parent
    classifier = ContinualClassifier.from_hparams(source=str(run_folder))
    for j in range(2):
        rows = read_manifest(os.path.join(run_folder, "save", f"test_task{j}.csv"))
        predicted = classifier.classify_files([row["wav"] for row in rows]).class_idx
        accuracy = sum(p == row["class_idx"] for p, row in zip(predicted, rows)) / len(rows)
        assert accuracy == pytest.approx(matrix[1, j], abs=1e-6), (j, accuracy)
    # Not asserted: oracle >= selected. With frozen convolutions the radio domain's own set is weak (the
    # mirrored spectrum needs other filters), and the studio set, chosen for many radio clips, can score
    # better (seed 1: selected 75.0 %, oracle 67.2 % over the domains; docs/protocols.md).


def test_minimum_entropy_picks_the_confident_set():
    logits = torch.tensor([[[4.0, 0.0, 0.0], [0.1, 0.0, 0.2]],    # set 0: clip 0 sure, clip 1 unsure
                           [[0.2, 0.1, 0.0], [0.0, 0.0, 6.0]]])   # set 1: clip 0 unsure, clip 1 sure
    assert select_by_entropy(logits).tolist() == [0, 1]
    assert prediction_entropy(torch.zeros(1, 4)).item() == pytest.approx(np.log(4))


def test_domain_batchnorm_sets_switch_and_copy():
    torch.manual_seed(0)
    model = CNNEncoder(n_mels=8, channels=(4,), emb_dim=6)
    assert convert_batchnorm(model, 2) == 4 and convert_batchnorm(model, 2) == 0  # input, 2 conv, embedding
    feats = torch.randn(3, 20, 8)
    model.train()
    set_domain(model, 1)
    model(feats)  # set 1's statistics move, set 0's do not
    layer = model.input_bn
    assert isinstance(layer, DomainBatchNorm)
    assert not torch.equal(layer.sets[0].running_mean, layer.sets[1].running_mean)
    copy_domain(model, 1, 0)
    assert torch.equal(layer.sets[0].running_mean, layer.sets[1].running_mean)


@pytest.mark.parametrize("name", ["sup_train_domain", "dcase_domain"])
def test_the_tau22_domain_yamls_run_on_a_miniature_with_every_device(name, tmp_path):
    # Generated test rows (every device per scene), also where the real metadata is at hand.
    folder = miniatures.make_tau22(str(tmp_path / "tau22"), str(tmp_path / "no_shared_data"), train_clips_per_class=18,
                                   test_clips_per_class=9)
    argv = [os.path.join(REPO_ROOT, f"hparams/tau22/{name}.yaml"), f"--data_folder={folder}",
            f"--output_base={tmp_path}", "--task_classes=[[0,1,2,3]]", "--number_of_epochs=1",
            "--encoder_channels=[8,16]", "--emb_dim=32", "--n_mels=32", "--warmup_epochs=0",
            "--train_dataloader_opts={batch_size: 4, shuffle: True, num_workers: 0}",
            "--eval_dataloader_opts={batch_size: 4, num_workers: 0}", "--noprogressbar"]
    results = run_recipe("sup_train", argv)
    assert len(results["accuracy_matrix"]) == 3 and not results["partial"]
    assert [t["classes"] for t in results["per_task"]] == [[0, 1, 2, 3]] * 3
    save = tmp_path / ("sup_train_domain_replay0" if name == "sup_train_domain" else "dcase_domain_frozen") / "1986" / "save"
    devices = [{r["domain"] for r in read_manifest(str(save / f"train_task{k}.csv"))} for k in range(3)]
    assert devices == [{"a"}, {"b", "c"}, {"s1", "s2", "s3"}]
    if name == "dcase_domain":
        assert len(results["per_task"][2]["domain_selection"]["accuracy_oracle"]) == 3


def test_the_tau19_domain_yaml_runs_on_a_miniature_with_every_city(tmp_path):
    # Generated rows (every city per scene), also where the real metadata is at hand (sorted: one city first).
    folder = miniatures.make_tau19(str(tmp_path / "tau19"), str(tmp_path / "no_shared_data"), clips_per_class=10)
    argv = [os.path.join(REPO_ROOT, "hparams/tau19/sup_train_domain.yaml"), f"--data_folder={folder}",
            f"--output_base={tmp_path}", "--task_classes=[[0,1,2]]", "--number_of_epochs=1", "--train_duration=0.5",
            "--encoder_channels=[8,16]", "--emb_dim=32", "--n_mels=32", "--warmup_epochs=0",
            "--train_dataloader_opts={batch_size: 4, shuffle: True, num_workers: 0}",
            "--eval_dataloader_opts={batch_size: 4, num_workers: 0}", "--noprogressbar"]
    results = run_recipe("sup_train", argv)
    assert len(results["accuracy_matrix"]) == 3 and not results["partial"]
    save = tmp_path / "sup_train_domain_replay0" / "1986" / "save"
    cities = [{r["domain"] for r in read_manifest(str(save / f"test_task{k}.csv"))} for k in range(3)]
    assert cities == [{"barcelona", "helsinki", "lisbon"}, {"london", "lyon", "milan"},
                      {"paris", "prague", "stockholm", "vienna"}]


@pytest.mark.parametrize("strategy", ["icarl", "wa", "bic", "gdumb"])
def test_a_strategy_that_needs_new_classes_per_task_is_refused_in_one_line(strategy, tmp_path, synth_data_folder):
    argv = recipe_argv(SYNTH, str(tmp_path), synth_data_folder, f"--strategy={strategy}",
                       f"--domain_data_folder={tmp_path}/domain_data")
    with pytest.raises(SystemExit) as stop:
        run_recipe("sup_train", argv)
    message = str(stop.value)
    assert "\n" not in message and f"strategy={strategy}" in message and "task_domains" in message, message


def test_the_dcase_strategy_without_domains_is_refused(tmp_path, synth_data_folder):
    argv = recipe_argv("hparams/synth/sup_train.yaml", str(tmp_path), synth_data_folder, "--strategy=dcase_domain_bn")
    with pytest.raises(SystemExit, match="needs task_domains"):
        run_recipe("sup_train", argv)


@pytest.mark.parametrize("strategy", ["joint", "ewc", "lwf", "er_ace", "derpp"])
def test_the_strategies_for_shared_classes_run(strategy, tmp_path, synth_data_folder):
    results = _run(SYNTH, tmp_path, synth_data_folder, f"--strategy={strategy}", "--number_of_epochs=1",
                   "--train_folds=[1,2]", "--memory_size=16")
    matrix = _matrix(results)
    assert matrix.shape == ((1, 1) if strategy == "joint" else (2, 2)), matrix
    assert np.isfinite(np.diag(matrix)).all()
    assert all(t["classes"] == [1, 2, 3, 9] for t in results["per_task"])
    if strategy == "joint":  # one task of both domains
        assert results["per_task"][0]["n_train"] == 2 * 4 * 2 * 8
