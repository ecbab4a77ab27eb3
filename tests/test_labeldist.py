"""Label distillation next to SupCLR (soundcl.methods.ssl.labeldist, recipes/sup_labeldist.py)."""

import pytest
import torch

from conftest import recipe_argv, run_recipe
from soundcl.methods.ssl.labeldist import SupCLRLabelDist

HPARAMS = "hparams/synth/sup_labeldist.yaml"
TINY = ["--task_classes=[[0,1],[2,3]]", "--train_folds=[1,2,3]", "--number_of_epochs=1", "--warmup_epochs=0",
        "--train_duration=0.5", "--knn_k=5"]


class RecordingLabelDist(SupCLRLabelDist):
    steps = []  # (task, teacher logits, student raw logits of view 1, dist part)
    teachers = {}  # task -> teacher embedding_model state at begin_task

    def begin_task(self, task_id, seen_classes):
        super().begin_task(task_id, seen_classes)
        if self.teacher is not None:
            self.teachers[task_id] = {k: v.clone() for k, v in self.teacher["embedding_model"].state_dict().items()}

    def ssl_objectives(self, outputs, batch, stage):
        loss, parts = super().ssl_objectives(outputs, batch, stage)
        if stage.name == "TRAIN":
            teacher = None if self.teacher_logits is None else self.teacher_logits.detach().clone()
            self.steps.append((self.task_id, teacher, outputs["raw_logits"].chunk(2)[0].detach().clone(),
                               float(parts["dist"])))
        return loss, parts


def test_distils_the_previous_tasks_frozen_model_with_the_originals_kl(tmp_path, synth_data_folder):
    RecordingLabelDist.steps, RecordingLabelDist.teachers = [], {}
    argv = [a for a in recipe_argv(HPARAMS, str(tmp_path), synth_data_folder, *TINY)
            if not a.startswith(("--lr=", "--lr_final="))]
    run_recipe("sup_labeldist", argv, replace={"SupCLRLabelDist": RecordingLabelDist})
    steps = RecordingLabelDist.steps
    assert {task for task, *_ in steps} == {0, 1}
    for task, teacher, student, dist in steps:
        if task == 0:
            assert teacher is None and dist == 0.0  # no previous model at task 0
            continue
        # KL(softmax(teacher / 2) || softmax(student / 2)) over every output, summed, / batch.
        p = torch.softmax(teacher / 2.0, dim=-1)
        expected = float((p * (torch.log(p) - torch.log_softmax(student.float() / 2.0, dim=-1))).sum() / len(p))
        assert dist == pytest.approx(expected, rel=1e-4, abs=1e-6)
        assert dist > 0.0
    # Every recipe's task loop draws the confusion matrix next to test_stats.json.
    save = tmp_path / "sup_labeldist_replay0" / "1986" / "save"
    for k in (0, 1):
        assert (save / f"task{k}" / "test_stats.json").exists()
        assert (save / f"task{k}" / "confusion_matrix.png").stat().st_size > 1000
    # The teacher of task 1 is task 0's final model, as saved (a resumed run loads the same one).
    saved = torch.load(next((tmp_path / "sup_labeldist_replay0" / "1986" / "save" / "task0").glob("CKPT+final*"))
                       / "embedding_model.ckpt")
    teacher = RecordingLabelDist.teachers[1]
    assert all(torch.equal(saved[k].cpu(), teacher[k].cpu()) for k in saved)
