"""The continual-learning strategies of recipes/sup_train.py (--strategy), tiny: 2 tasks."""
import json

import numpy as np
import pytest

from conftest import recipe_argv, run_recipe
from test_hparams_matrix import matrix_workspace  # noqa: F401  (fixture: the miniatures, made once)
from soundcl.core import config
from soundcl.methods.supervised.strategies import DOMAIN_ONLY, STRATEGIES

HPARAMS = "hparams/synth/sup_train.yaml"
TWO_TASKS = "--task_classes=[[0,1],[2,3]]"


def _run(base, data_folder, strategy, *extra, name=None):
    argv = recipe_argv(HPARAMS, str(base), data_folder, TWO_TASKS, f"--strategy={strategy}",
                       f"--experiment_name={name or strategy}", *extra)
    return run_recipe("sup_train", argv)


def _matrix(results):
    return np.array([[np.nan if v is None else v for v in row] for row in results["accuracy_matrix"]])


def _task_state(base, name, k):
    return json.loads((base / name / "1986" / "save" / f"task{k}" / "task_state.json").read_text())


def test_the_table_and_the_config_choices_name_the_same_strategies():
    assert tuple(STRATEGIES) == config.CHOICES["strategy"]
    assert list(STRATEGIES)[0] == "finetune_or_replay"


def test_an_unknown_strategy_stops_in_one_line(tmp_path, synth_data_folder):
    with pytest.raises(SystemExit, match="strategy='icarl2' is not valid"):
        _run(tmp_path, synth_data_folder, "icarl2")


def _resumes_identically(base, data_folder, strategy, *extra):
    """A full run, and one stopped after task 0 then rerun: the same matrix, bit for bit."""
    full = _run(base, data_folder, strategy, *extra)
    partial = _run(base, data_folder, strategy, *extra, "--stop_after_task=0", name=f"{strategy}_resumed")
    assert partial["partial"] and partial["finished_tasks"] == 1
    resumed = _run(base, data_folder, strategy, *extra, name=f"{strategy}_resumed")
    np.testing.assert_array_equal(_matrix(resumed), _matrix(full))
    return full


def test_joint_is_one_task_with_every_class(tmp_path, synth_data_folder):
    results = _run(tmp_path, synth_data_folder, "joint")
    assert _matrix(results).shape == (1, 1)
    assert results["per_task"][0]["classes"] == [0, 1, 2, 3]
    assert results["per_task"][0]["n_train"] == 4 * 8 * 8  # 4 classes x 8 clips x 8 training folds
    assert results["A_last"] >= 0.6, results["accuracy_matrix"]


def test_joint_incremental_trains_task_k_on_tasks_0_to_k_and_resumes(tmp_path, synth_data_folder):
    results = _resumes_identically(tmp_path, synth_data_folder, "joint_incremental")
    assert [t["n_train"] for t in results["per_task"]] == [2 * 64, 4 * 64]
    assert _matrix(results)[1, 0] >= 0.6, results["accuracy_matrix"]


class _Recording:
    """Mixin of a strategy's Brain that records ``(task, value of attribute)`` after each training batch."""

    attribute = None
    records = []

    def fit_batch(self, batch):
        loss = super().fit_batch(batch)
        type(self).records.append((self.task_id, getattr(self, self.attribute)))
        type(self).instance = self
        return loss


def _recording(monkeypatch, name, attribute):
    """Replace strategy ``name``'s Brain by one that records ``attribute``; returns that class."""
    spec = STRATEGIES[name]
    brain = type(f"Recording{spec.brain.__name__}", (_Recording, spec.brain), {"attribute": attribute, "records": []})
    monkeypatch.setitem(STRATEGIES, name, spec._replace(brain=brain))
    return brain


def test_lwf_distillation_is_zero_at_task_0_and_for_an_identical_teacher(tmp_path, synth_data_folder, monkeypatch):
    import torch
    from soundcl.methods.supervised.lwf import distillation_loss

    logits = torch.randn(5, 4)
    assert float(distillation_loss(logits, logits.clone(), [0, 1], 2.0)) == pytest.approx(0.0, abs=1e-7)
    assert float(distillation_loss(logits, torch.randn(5, 4), [0, 1], 2.0)) > 0
    records = _recording(monkeypatch, "lwf", "last_distillation").records
    _run(tmp_path, synth_data_folder, "lwf", "--number_of_epochs=1")
    assert {value for task, value in records if task == 0} == {0.0}
    assert max(value for task, value in records if task == 1) > 0


def test_lwf_resumes_identically(tmp_path, synth_data_folder):
    results = _resumes_identically(tmp_path, synth_data_folder, "lwf")
    assert results["per_task"][1]["n_train"] == 2 * 64  # no replay


def test_ewc_penalty_is_zero_at_the_anchor_and_positive_away_from_it(tmp_path, synth_data_folder, monkeypatch):
    import torch

    recording = _recording(monkeypatch, "ewc", "fisher")
    records = recording.records
    _run(tmp_path, synth_data_folder, "ewc", "--number_of_epochs=1", "--stop_after_task=0")
    assert {id(fisher) for task, fisher in records} == {id(None)}  # no penalty in task 0
    state = torch.load(tmp_path / "ewc" / "1986" / "save" / "task0" / "ewc.pt")
    assert set(state["fisher"]) == set(state["anchor"])
    assert sum(float(f.sum()) for f in state["fisher"].values()) > 0
    assert min(float(f.min()) for f in state["fisher"].values()) >= 0

    brain = recording.instance
    brain.begin_task(1, [0, 1, 2, 3])  # loads task 0's Fisher and anchor; the models hold task 0's final weights
    with torch.no_grad():
        for name, weight in brain.named_weights().items():
            weight.copy_(brain.anchor[name])
    with torch.no_grad():
        assert float(brain.penalty()) == 0.0
    with torch.no_grad():
        for weight in brain.named_weights().values():
            weight.add_(0.01)
    with torch.no_grad():
        assert float(brain.penalty()) > 0


def test_ewc_resumes_identically(tmp_path, synth_data_folder):
    _resumes_identically(tmp_path, synth_data_folder, "ewc")


def test_er_ace_masks_current_rows_to_the_current_task_and_memory_rows_to_every_seen_class():
    import types

    import torch
    import torch.nn.functional as F
    import speechbrain as sb
    from soundcl.methods.supervised.er_ace import ERACEBrain

    brain = types.SimpleNamespace(task_id=1, task_classes=[[0, 1], [2, 3]], buffer_ids={"new3b"})
    brain.memory_rows = lambda targets, ids: ERACEBrain.memory_rows(brain, targets, ids)
    logits = torch.randn(5, 6)
    logits[:, 4:] = -1e4  # unseen classes, masked as compute_forward does
    logits.requires_grad_(True)
    batch = types.SimpleNamespace(class_idx=torch.tensor([2, 3, 0, 1, 3]), id=["new2", "new3", "old0", "old1", "new3b"])
    loss = ERACEBrain.compute_objectives(brain, (logits, None, 1.0), batch, sb.Stage.TRAIN)
    from_memory, current_mask = brain.last_masks
    assert from_memory.tolist() == [False, False, True, True, True]
    assert current_mask.tolist() == [False, False, True, True, False, False]
    expected = (F.cross_entropy(logits[:2, 2:4], torch.tensor([0, 1]))
                + F.cross_entropy(logits[2:], torch.tensor([0, 1, 3])))
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    loss.backward()
    assert (logits.grad[:2, :2] == 0).all()  # current rows do not push old classes down
    assert (logits.grad[2:, :4] != 0).all()  # memory-batch rows: every seen class competes


def test_er_ace_keeps_a_fixed_size_memory_and_resumes(tmp_path, synth_data_folder):
    results = _resumes_identically(tmp_path, synth_data_folder, "er_ace", "--memory_size=8")
    assert results["memory_policy"] == "ReservoirMemory(memory_size=8)"
    assert results["per_task"][0]["memory_size"] == 8
    assert results["per_task"][1]["n_train"] == 2 * 64 + 8
    assert results["accuracy_matrix"][1][1] >= 0.5  # the new task is learnt against the old classes


def test_er_ace_refuses_mixup_in_one_line(tmp_path, synth_data_folder):
    with pytest.raises(SystemExit, match="use_mixup=True is not supported by strategy=er_ace"):
        _run(tmp_path, synth_data_folder, "er_ace", "--use_mixup=True")


def test_derpp_stored_logits_are_those_at_insertion_and_unchanged_by_later_training(tmp_path, synth_data_folder,
                                                                                    monkeypatch):
    records = _recording(monkeypatch, "derpp", "last_mse").records
    results = _resumes_identically(tmp_path, synth_data_folder, "derpp", "--memory_size=8")
    assert results["memory_policy"] == "LogitMemory(ReservoirMemory(memory_size=8))"
    after0 = _task_state(tmp_path, "derpp", 0)["policy_state"]["logits"]
    after1 = _task_state(tmp_path, "derpp", 1)["policy_state"]["logits"]
    assert len(after0) == len(after1) == 8 and all(len(v) == 10 for v in after0.values())
    kept = set(after0) & set(after1)
    assert kept and kept != set(after1)  # task 0 clips kept, task 1 clips added
    assert all(after0[i] == after1[i] for i in kept)  # bit for bit, after training task 1
    assert {value for task, value in records if task == 0} == {0.0}  # no memory in task 0
    assert max(value for task, value in records if task == 1) > 0


def test_gdumb_memory_is_greedy_and_class_balanced():
    from soundcl.methods.supervised.gdumb import gdumb_memory

    rows = [{"ID": f"c{c}_{i}", "class_idx": c} for c in range(3) for i in range(10)]
    class_of = {r["ID"]: r["class_idx"] for r in rows}
    first = gdumb_memory([], rows[:20], class_of, 8, np.random.RandomState(0))  # classes 0, 1
    assert len(first) == 8 and sorted(class_of[i] for i in first) == [0] * 4 + [1] * 4
    second = gdumb_memory(first, rows[20:], class_of, 8, np.random.RandomState(1))  # class 2 arrives
    counts = np.bincount([class_of[i] for i in second], minlength=3)
    assert len(second) == 8 and counts.max() - counts.min() <= 1 and counts[2] == 8 // 3


def test_gdumb_trains_from_scratch_on_its_memory_only_and_resumes(tmp_path, synth_data_folder, monkeypatch):
    import torch

    recording = _recording(monkeypatch, "gdumb", "task_id")
    results = _resumes_identically(tmp_path, synth_data_folder, "gdumb", "--memory_size=8")
    assert [t["n_train"] for t in results["per_task"]] == [8, 8]
    assert [t["memory_per_class"] for t in results["per_task"]] == [{"0": 4, "1": 4}, {str(c): 2 for c in range(4)}]
    brain = recording.instance
    brain.begin_task(1, [0, 1, 2, 3])
    for name, state in brain.initial_state.items():
        for key, value in brain.modules[name].state_dict().items():
            assert torch.equal(value, state[key]), (name, key)


def test_icarl_nme_predicts_the_nearest_class_mean():
    import torch
    from soundcl.methods.supervised.icarl import class_means, nearest_mean

    emb = torch.tensor([[2.0, 0.0], [1.0, 0.1], [0.0, 3.0], [0.1, 1.0], [-1.0, 0.0], [-2.0, 0.2]])
    means = class_means(emb, [7, 7, 2, 2, 5, 5], [2, 5, 7])
    assert torch.allclose(means.norm(dim=-1), torch.ones(3))
    queries = torch.tensor([[5.0, 0.5], [0.2, 4.0], [-3.0, 0.1], [1.0, 1.2], [-1.0, 0.9]])
    expected = [int(torch.tensor([2, 5, 7])[torch.cdist(torch.nn.functional.normalize(q[None], dim=-1),
                                                         means).argmin()]) for q in queries]
    assert nearest_mean(queries, means, [2, 5, 7]).tolist() == expected == [7, 2, 5, 2, 5]


def test_icarl_distillation_is_zero_at_task_0_nme_matrix_linear_stats_and_resume(tmp_path, synth_data_folder,
                                                                                 monkeypatch):
    import torch
    from soundcl.methods.supervised.icarl import distillation_bce

    logits = torch.randn(5, 4)
    assert float(distillation_bce(logits, logits.clone(), [0, 1])) == pytest.approx(0.0, abs=1e-5)
    assert float(distillation_bce(logits, torch.randn(5, 4), [0, 1])) > 0
    recording = _recording(monkeypatch, "icarl", "last_distillation")
    records = recording.records
    results = _resumes_identically(tmp_path, synth_data_folder, "icarl", "--memory_size=8")
    # the exemplars of the class means (task 1 of the resumed run) are the memory the loop kept after testing
    assert recording.instance.exemplars == _task_state(tmp_path, "icarl_resumed", 1)["memory"]
    assert {value for task, value in records if task == 0} == {0.0}
    assert max(value for task, value in records if task == 1) > 0
    assert results["memory_policy"] == "IcarlMemory(memory_size=8)"
    assert [t["memory_per_class"] for t in results["per_task"]] == [{"0": 4, "1": 4}, {str(c): 2 for c in range(4)}]
    assert results["per_task"][1]["n_train"] == 2 * 64 + 8
    for k in (0, 1):
        linear = json.loads((tmp_path / "icarl" / "1986" / "save" / f"task{k}" / "test_stats_linear.json").read_text())
        assert linear["tasks"] == list(range(k + 1)) and all(0 <= a <= 1 for a in linear["accuracy"])
    assert results["accuracy_matrix"][1][1] >= 0.5


# ------------------------------------------------------------- every data set's YAMLs
#: Data sets with hparams/<dataset>/sup_train.yaml and replay_train.yaml (the hparams matrix's miniatures).
DATASETS = ["us8k", "tau19", "esc50", "vgg", "cochl", "tau22", "synth"]
#: The strategies beyond today's default (the hparams matrix runs finetune_or_replay on every YAML).
#: The domain-incremental-only strategies run in tests/test_domain_incremental.py.
NEW_STRATEGIES = [name for name in STRATEGIES if name not in ("finetune_or_replay", *DOMAIN_ONLY)]


def _rotation(i):
    """Strategy i runs on data set i mod 7, on sup_train.yaml or replay_train.yaml in turn."""
    dataset = DATASETS[i % len(DATASETS)]
    yaml_name = ("sup_train", "replay_train")[(i + i // len(DATASETS)) % 2]
    return f"hparams/{dataset}/{yaml_name}.yaml"


@pytest.mark.parametrize("hparams_rel",
                         [f"hparams/{d}/{y}.yaml" for d in DATASETS for y in ("sup_train", "replay_train")])
def test_every_sup_and_replay_yaml_has_every_strategys_keys(hparams_rel):
    import os

    from conftest import REPO_ROOT
    from soundcl.base.contract import check_declared, with_defaults
    from soundcl.core.task_loop import TaskLoop
    from soundcl.core import recipe
    from soundcl.methods.supervised import strategies

    path = os.path.join(REPO_ROOT, hparams_rel)
    preview = config.preview_hparams(path, {"data_folder": "/nonexistent"})
    assert preview["strategy"] == "finetune_or_replay"
    for name, strategy in STRATEGIES.items():
        needs = [recipe, TaskLoop, strategies, *strategy.parts]
        check_declared(preview, needs, path)  # raises on a missing key
        domains = {"task_domains": [["a"]]} if name in DOMAIN_ONLY else {}
        assert strategies.chosen(with_defaults(dict(preview, strategy=name, **domains), needs)) is strategy


@pytest.mark.parametrize("i", range(len(NEW_STRATEGIES)), ids=NEW_STRATEGIES)
def test_each_strategy_runs_on_a_data_sets_miniature(i, matrix_workspace, request, tmp_path):
    """Strategy i, tiny, on one data set's sup_train.yaml or replay_train.yaml miniature (in
    rotation: over the strategies every data set and both encoders, CNN and BC-ResNet, run)."""
    import math

    from test_hparams_matrix import _tiny_argv

    name, hparams_rel = NEW_STRATEGIES[i], _rotation(i)
    argv = _tiny_argv(hparams_rel, matrix_workspace, tmp_path, request,
                      {"strategy": name, "memory_size": "4", "experiment_name": name})
    results = run_recipe("sup_train", argv)
    assert not results["partial"], results
    matrix = results["accuracy_matrix"]
    assert len(matrix) == (1 if name == "joint" else 2), (hparams_rel, matrix)
    for k, row in enumerate(matrix):
        assert row[k] is not None and math.isfinite(row[k]) and 0.0 <= row[k] <= 1.0, (hparams_rel, matrix)
    assert all(task["n_train"] > 0 for task in results["per_task"]), (hparams_rel, results["per_task"])
    if name in ("er_ace", "derpp", "gdumb", "icarl"):
        assert all(0 < task["memory_size"] <= 4 for task in results["per_task"]), (hparams_rel, results["per_task"])


def test_the_rotation_covers_every_data_set_and_both_yamls():
    assert {_rotation(i).split("/")[1] for i in range(len(NEW_STRATEGIES))} == set(DATASETS)
    assert {_rotation(i).split("/")[2] for i in range(len(NEW_STRATEGIES))} == {"sup_train.yaml", "replay_train.yaml"}


def test_the_replay_yamls_early_stopping_is_honoured_by_every_strategy():
    from soundcl.methods.supervised.replay import PatienceCounter, ReplayBrain
    from speechbrain.utils.epoch_loop import EpochCounter

    for name, strategy in STRATEGIES.items():
        assert strategy.brain_class({"epoch_counter": EpochCounter(3)}) is strategy.brain
        patient = strategy.brain_class({"epoch_counter": PatienceCounter(3, 1)})
        assert issubclass(patient, ReplayBrain) and issubclass(patient, strategy.brain), name
        assert patient.on_stage_end is ReplayBrain.on_stage_end


def test_sup_train_refuses_cross_validation_in_one_line(tmp_path, synth_data_folder):
    import os

    from conftest import REPO_ROOT

    argv = [os.path.join(REPO_ROOT, "hparams/synth/replay_train.yaml"), f"--output_base={tmp_path}",
            f"--data_folder={synth_data_folder}", "--strategy=ewc", "--cross_validate=True"]
    with pytest.raises(SystemExit, match="cross_validate=True is not supported by recipes/sup_train.py"):
        run_recipe("sup_train", argv)
