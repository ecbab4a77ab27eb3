"""WA, weight aligning (Zhao et al. 2020, "Maintaining Discrimination and Fairness in Class Incremental Learning").

Replay as ``finetune_or_replay``. Once task ``k``'s best weights are loaded (``end_task``, from
task 1 on), the head's weight rows of the task's (new) classes are scaled by
``gamma = mean ||w_old|| / mean ||w_new||`` (L2 norms of the rows of the old and of the new
classes; the bias is left as it is, as in PyCIL's ``weight_align``), so the new classes no longer
win by the size of their weights. The aligned head is written back into the task's
``CKPT+final`` (atomically), so the next task, a resumed run and the inference model start from
it; aligning an aligned head is the identity (gamma = 1), so a rerun of the step changes nothing.
"""
import torch

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process

from soundcl.base.atomic import atomic_path
from soundcl.core.brains import SupervisedBrain
from soundcl.core.ddp import unwrap
from soundcl.core.task_loop import FINAL_CKPT_NAME


def align_weights(weight, new_classes, old_classes):
    """Scale the rows ``new_classes`` of ``weight`` [n_classes, emb_dim] so their mean L2 norm equals
    that of the rows ``old_classes``; returns (aligned copy [n_classes, emb_dim], gamma)."""
    new, old = list(new_classes), list(old_classes)
    if not new or not old:
        raise ValueError(f"weight aligning needs old and new classes, got old {old}, new {new}")
    norms = weight.detach().norm(dim=1)
    gamma = norms[old].mean() / norms[new].mean().clamp(min=1e-12)
    aligned = weight.detach().clone()
    aligned[new] = aligned[new] * gamma
    return aligned, float(gamma)


class WABrain(SupervisedBrain):
    HPARAMS = {}

    gamma = None  # scale of the new classes' weights at the last end_task

    def head(self):
        """The classifier's ``nn.Linear`` (weight [n_classes, emb_dim])."""
        classifier = unwrap(self.modules.classifier)
        linear = getattr(classifier, "linear", classifier)
        if not isinstance(linear, torch.nn.Linear):
            raise TypeError(f"strategy=wa aligns an nn.Linear head; the classifier is {type(classifier).__name__}")
        return linear

    def end_task(self, task_dir, task_data):
        super().end_task(task_dir, task_data)
        self.gamma = None
        if self.task_id == 0:
            return
        new = list(self.task_classes[self.task_id])
        old = [c for c in self.seen_classes if c not in set(new)]
        linear = self.head()
        aligned, self.gamma = align_weights(linear.weight, new, old)
        with torch.no_grad():
            linear.weight.copy_(aligned)
        final = self.checkpointer.find_checkpoint(ckpt_predicate=lambda c: c.meta.get(FINAL_CKPT_NAME))
        name = next((n for n, obj in self.checkpointer.recoverables.items()
                     if obj is unwrap(self.modules.classifier)), None)
        if final is None or name is None:
            raise RuntimeError(f"strategy=wa: no final checkpoint holding the classifier in {task_dir}")
        if if_main_process():
            with atomic_path(final.paramfiles[name]) as tmp:
                torch.save(unwrap(self.modules.classifier).state_dict(), tmp)
        sb.utils.distributed.ddp_barrier()
