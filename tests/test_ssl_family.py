"""MoCo, Barlow Twins, SupSiam and CaSSLe (cssl_sound's SSL family): defining behaviour and resume."""
import math
import os
import re

import pytest
import torch

from conftest import recipe_argv, run_recipe
from soundcl.methods.ssl.barlow import barlow_twins_loss
from soundcl.methods.ssl.cassle import CassleSimCLR, distillation_cost
from soundcl.methods.ssl.moco import MoCo, MomentumKeyEncoder, moco_loss

# Tiny runs: 2 tasks of 2 classes, 2 epochs (a kill after task 1's first epoch is mid-task).
FAMILY_TINY = [
    "--task_classes=[[0,1],[2,3]]",
    "--number_of_epochs=2",
    "--warmup_epochs=0",
    "--lr_per_256=0.5",
    "--train_duration=0.5",
    "--knn_k=5",
    "--moco_dict_size=32",
    "--train_folds=[1,2]",  # 32 clips per task: 2 batches of 16 per epoch
]


def _run(recipe, brain_name, brain_class, output_base, data_folder, *extra):
    # One audio cache for every run here: clips are decoded once.
    cache = os.path.join(os.path.dirname(str(data_folder)), "ssl_family_audio_cache")
    argv = recipe_argv(f"hparams/synth/{recipe}.yaml", str(output_base), data_folder, *FAMILY_TINY,
                       f"--audio_cache={cache}", *extra)
    argv = [a for a in argv if not a.startswith(("--lr=", "--lr_final="))]
    if recipe != "moco_train" and recipe != "cassle_moco":
        argv = [a for a in argv if not a.startswith("--moco_")]
    return run_recipe(recipe, argv, replace={brain_name: brain_class})


def _killed_at(base_class, task_epoch):
    """``base_class`` that stops (as a kill would) right after ``task_epoch``'s checkpoint."""

    class Killed(base_class):
        def on_stage_end(self, stage, stage_loss, epoch=None):
            super().on_stage_end(stage, stage_loss, epoch)
            if (self.task_id, epoch) == task_epoch and stage.name == "VALID":
                raise KeyboardInterrupt("simulated kill")

    return Killed


def _final_weights(output_folder, task, name="embedding_model"):
    return torch.load(output_folder / "save" / f"task{task}" / "CKPT+final" / f"{name}.ckpt", map_location="cpu")


def _train_parts(log_path, part):
    """[(task, epoch, train <part>)] of a train_log.txt."""
    found = []
    for line in open(log_path, encoding="utf-8"):
        m = re.search(rf"task: (\d+), epoch: (\d+), .*train {part}: ([-0-9.e+]+)", line)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), float(m.group(3))))
    return found


# ------------------------------------------------------------------ units
def test_barlow_twins_loss_on_a_hand_computed_case():
    # Standardised over the batch of 2, both columns of z1 are [-1, 1] / sqrt(2); z2's
    # columns are [-1, 1] / sqrt(2) and [1, -1] / sqrt(2): C = [[0.5, -0.5], [0.5, -0.5]].
    z1 = torch.tensor([[0.0, 0.0], [2.0, 1.0]])
    z2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    on_diag = (0.5 - 1) ** 2 + (-0.5 - 1) ** 2  # 2.5
    off_diag = 0.5 ** 2 + 0.5 ** 2  # 0.5
    for lambda_rr, scale in ((0.005, 1.0), (0.1, 2.0)):
        expected = scale * (on_diag + lambda_rr * off_diag)
        assert barlow_twins_loss(z1, z2, lambda_rr, scale).item() == pytest.approx(expected, rel=1e-6)
    # Identical, decorrelated views: no off-diagonal term; with the original's unbiased
    # standard deviation each C_ii is (B - 1) / B = 3 / 4, not 1.
    z = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    assert barlow_twins_loss(z, z, 0.005).item() == pytest.approx(2 * (1 - 3 / 4) ** 2, rel=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        barlow_twins_loss(z[:1], z[:1])


def test_moco_momentum_update_and_queue():
    torch.manual_seed(0)
    encoder, projector = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
    keys = MomentumKeyEncoder(encoder, projector, dim=2, queue_size=5)
    # A frozen copy of the query encoder; a queue of random unit columns.
    assert all(not p.requires_grad for p in keys.parameters())
    assert torch.equal(keys.embedding_model.weight, encoder.weight)
    assert torch.allclose(keys.queue.norm(dim=0), torch.ones(5))

    old_key = keys.embedding_model.weight.clone()
    with torch.no_grad():
        encoder.weight.add_(1.0)
    keys.momentum_update(encoder, projector, momentum=0.9)
    assert torch.allclose(keys.embedding_model.weight, 0.9 * old_key + 0.1 * encoder.weight)
    assert torch.allclose(keys.projector.weight, projector.weight)  # unchanged query: unchanged key

    old_queue = keys.queue.clone()
    batch_keys = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    keys.enqueue(batch_keys)
    # The 2 oldest columns leave, the batch's keys come in last.
    assert torch.equal(keys.queue[:, :3], old_queue[:, 2:])
    assert torch.equal(keys.queue[:, 3:], batch_keys.t())
    with pytest.raises(ValueError, match="moco_dict_size"):
        keys.enqueue(torch.zeros(6, 2))


def test_moco_loss_is_infonce_with_the_positive_first():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.5, 0.5]])
    queue = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # negatives (0, 1) and (-1, 0)
    t = 0.5
    logits = torch.tensor([0.5, 0.0, -1.0]) / t
    expected = -(logits[0] - torch.logsumexp(logits, 0))
    assert moco_loss(q, k, queue, t).item() == pytest.approx(expected.item(), rel=1e-6)


def test_distillation_costs():
    a, b = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert distillation_cost(a, b, "mse").item() == pytest.approx((0 + 1 + 0 + 1) / 4)
    assert distillation_cost(a, b, "neg_cosine").item() == pytest.approx(-(1 / math.sqrt(2) + 1) / 2)
    with pytest.raises(ValueError, match="dist_cost"):
        distillation_cost(a, b, "l1")


# ------------------------------------------------------------- end to end
class InspectedCassle(CassleSimCLR):
    """CaSSLe-SimCLR that checks, at each task-1 optimizer step (gradients computed, not yet
    applied), that the frozen previous encoder has no gradient while the predictor mapping to it has."""

    last = None
    checked_updates = 0

    def on_fit_start(self):
        InspectedCassle.last = self
        super().on_fit_start()

    def optimizers_step(self):
        prev = self.prev_embedding_model
        if prev is not None:
            assert all(p.grad is None and not p.requires_grad for p in prev.parameters())
            assert all(p.grad is not None for p in self.modules.prev_predictor.parameters())
            before = {k: v.clone() for k, v in prev.state_dict().items()}
        super().optimizers_step()
        if prev is not None:
            assert all(torch.equal(before[k], v) for k, v in prev.state_dict().items())
            InspectedCassle.checked_updates += 1


CASSLE_SSL = ("--ssl_weight=1", "--sup_weight=0")


@pytest.fixture(scope="module")
def cassle_run(tmp_path_factory, synth_data_folder):
    """An uninterrupted CaSSLe-SimCLR run (inspected), shared by the tests below."""
    base = tmp_path_factory.mktemp("cassle")
    InspectedCassle.checked_updates = 0
    results = _run("cassle_simclr", "CassleSimCLR", InspectedCassle, base / "full", synth_data_folder, *CASSLE_SSL)
    return base, results, InspectedCassle.last


def test_cassle_frozen_previous_encoder_and_zero_distillation_at_task_0(cassle_run):
    base, results, brain = cassle_run
    assert not results["partial"]
    out = base / "full" / "cassle_simclr_replay0" / "1986"
    dist = _train_parts(out / "train_log.txt", "dist")
    assert [d for t, _, d in dist if t == 0] == [0.0, 0.0], dist  # no previous encoder at task 0
    assert all(d > 0 for t, _, d in dist if t == 1), dist
    assert InspectedCassle.checked_updates > 0
    # The frozen copy holds task 0's final encoder, untouched by task 1's training.
    task0 = _final_weights(out, 0)
    prev = brain.prev_embedding_model.state_dict()
    assert all(torch.equal(prev[name].cpu(), task0[name]) for name in task0)
    task1 = _final_weights(out, 1)
    assert not all(torch.equal(task1[name], task0[name]) for name in task0)


def _resume_case(recipe, brain_name, brain_class, extra, base, data_folder, full=None):
    """Run, kill after task 1's first epoch and rerun; return the two output folders and results."""
    if full is None:
        full = _run(recipe, brain_name, brain_class, base / "full", data_folder, *extra)
    with pytest.raises(KeyboardInterrupt):
        _run(recipe, brain_name, _killed_at(brain_class, (1, 1)), base / "killed", data_folder, *extra)
    resumed = _run(recipe, brain_name, brain_class, base / "killed", data_folder, *extra)
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]
    return [base / run / f"{recipe}_replay0" / "1986" for run in ("full", "killed")]


def _assert_same_final_weights(runs, names):
    for name in names:
        a, b = (_final_weights(run, 1, name) for run in runs)
        assert all(torch.equal(a[key], b[key]) for key in a), name


def test_killed_moco_run_resumes_to_the_identical_result(tmp_path, synth_data_folder):
    runs = _resume_case("moco_train", "MoCo", MoCo, (), tmp_path, synth_data_folder)
    # The key encoder and queue are restored, not restarted, by the resumed task.
    _assert_same_final_weights(runs, ["embedding_model", "projector", "moco_key_encoder"])
    # The queue of task 1 holds keys, not the random unit columns it started with.
    queue = _final_weights(runs[0], 1, "moco_key_encoder")["queue"]
    assert not torch.allclose(queue.norm(dim=0), torch.ones(queue.shape[1]))


def test_killed_cassle_run_resumes_to_the_identical_result(cassle_run, synth_data_folder):
    base, full, _ = cassle_run
    runs = _resume_case("cassle_simclr", "CassleSimCLR", CassleSimCLR, CASSLE_SSL, base, synth_data_folder, full)
    _assert_same_final_weights(runs, ["embedding_model", "projector", "prev_predictor"])
