"""Class-incremental baselines on ONE frozen pretrained encoder (``recipes/frozen_cil.py``).

The strongest class-incremental baselines freeze a pretrained encoder and learn only a
classifier, in closed form, from statistics that each task adds to
(:mod:`~soundcl.methods.evaluation.frozen_heads`): ``frozen_head: ncm`` (SimpleCIL's nearest
class mean, :class:`NCMBrain`) and ``frozen_head: ranpac`` (random projection + ridge
regression, :class:`RanPACBrain`). No replay: task ``k`` trains on its own clips
(:class:`CurrentTaskOnly`) and is tested on tasks ``0..k``.

They are :class:`~soundcl.methods.evaluation.linear_eval.LinearEvalBrain` (same frozen front
end, same embedding pass, same :class:`~soundcl.methods.evaluation.embedding_cache.EmbeddingCache`)
with two differences:

* one encoder serves every task (``encoder_task``): the ``task<k>`` checkpoint of an encoder
  run (``ssl_checkpoints_dir``; ``k = 0`` by default: an encoder that has seen the first task's
  clips only, like the originals' first session), its ``last`` task's, or ``pretrained``: the
  YAML's ``embedding_model`` as built (PaSST with a local ``pretrained_path``; no run,
  ``ssl_checkpoints_dir: null``);
* so every clip is encoded once for the whole run: one cache, ``<save_folder>/embeddings.pt``,
  that each task extends with its new clips.

The heads are not checkpointed (RanPAC's Gram matrix is M x M): a resumed run rebuilds them
from the cached embeddings of the finished tasks' clips (:meth:`FrozenHeadBrain.prepare_task_data`),
which gives the same numbers.
"""
import logging
import os

import torch

from soundcl.base.contract import REQUIRED, ConfigError
from soundcl.base.randomness import derive_seed
from soundcl.core.brains import UNSEEN_LOGIT
from soundcl.core.task_data import TaskData
from soundcl.methods.evaluation.embedding_cache import EMBEDDINGS_FILE
from soundcl.methods.evaluation.encoder_checkpoints import encoder_tasks_found, load_encoder
from soundcl.methods.evaluation.frozen_heads import NCMHead, RanPACHead, select_ridge
from soundcl.methods.evaluation.linear_eval import ScoringEvalBrain

logger = logging.getLogger(__name__)

#: What this module reads (the recipe's choice of head).
HPARAMS = {"frozen_head": REQUIRED}  # ncm or ranpac (FROZEN_HEADS)

#: ``encoder_task`` values besides a task index.
ENCODER_TASK_WORDS = ("last", "pretrained")


class CurrentTaskOnly:
    """Task-data policy without replay: task ``k`` trains on its own clips, no validation, tested on ``0..k``.

    Its :class:`~soundcl.core.task_data.TaskData` also names the training clips of the earlier tasks
    (``earlier_train``), which a resumed Brain needs to rebuild its statistics (never trained on again).
    """

    HPARAMS = {}

    def select(self, k, memory_ids, task_rows, seed):
        tests = list(range(k + 1))
        data = TaskData(task_rows["train"][k], [], tests, {j: task_rows["test"][j] for j in tests})
        data.earlier_train = [list(task_rows["train"][j]) for j in range(k)]
        return data

    def __repr__(self):
        return "CurrentTaskOnly()"


class FrozenHeadBrain(ScoringEvalBrain):
    """A closed-form classifier on one frozen encoder; subclasses say how a task updates it.

    Subclasses implement ``new_head(dim)`` and ``update_head(k, emb, labels)`` (returning what
    results.json's ``per_task`` should record of the update).
    """

    HPARAMS = {
        # 0, 1 ...: the encoder of <ssl_checkpoints_dir>/task<k> serves every task; last: the run's last
        # task's; pretrained: the YAML's embedding_model as built (local pretrained_path), no run.
        "encoder_task": REQUIRED,
        "save_folder": REQUIRED,  # the one embedding cache of the run: <save_folder>/embeddings.pt
        "cache_embeddings": True,  # must be True: every clip is encoded once
        "mask_unseen_classes": True,  # scores over the classes met so far (the originals' heads grow with them)
        "linclf_train_type": None,  # no linear-evaluation protocol: CurrentTaskOnly
        "reinit_classifier": False,  # no trained classifier
        "lr_annealing": None,  # no training
        "train_logger": None,
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoder_ckpt = None
        self.encoder_loaded = False
        self.head = None
        self.head_tasks = []  # tasks whose training clips the head holds
        self.report = {}

    # ---------------------------------------------------------------- encoder
    def load_frozen_encoder(self, task_id):
        """Load the one encoder of the run (``encoder_task``) at the first task; later tasks keep it."""
        if self.encoder_loaded:
            return
        which = str(self.hparams.encoder_task)
        if which == "pretrained":
            self.encoder_ckpt = None
            origin = "the YAML's embedding_model as built (pretrained_path)"
        else:
            root = self.hparams.ssl_checkpoints_dir
            found = encoder_tasks_found(root)
            k = (found[-1] if found else 0) if which == "last" else int(which)
            recoverables = {"embedding_model": self.hparams.embedding_model, "normalizer": self.hparams.mean_var_norm}
            self.encoder_ckpt = load_encoder(root, k, recoverables, which=self.hparams.encoder_checkpoint)
            origin = self.encoder_ckpt.path
        self.freeze_front_end()
        self.encoder_loaded = True
        logger.info("frozen encoder of every task: %s", origin)

    def encoder_files(self):
        if self.encoder_ckpt is not None:
            return super().encoder_files()
        paths = [value for key, value in vars(self.hparams).items() if key.endswith("pretrained_path") and value]
        return [str(path) for path in paths if os.path.isfile(str(path))]

    # ------------------------------------------------------------ embeddings
    def prepare_task_data(self, task_dir, task_data):
        """Extend the run's embedding cache with the clips of this task; rebuild the head if resumed."""
        if not self.hparams.cache_embeddings:
            raise ValueError("frozen_cil needs cache_embeddings: True (each clip is encoded once per run)")
        resumed = self.head_tasks != list(range(self.task_id))
        earlier = [row for rows in task_data.earlier_train for row in rows] if resumed else []
        tests = [row for j in task_data.test_tasks for row in task_data.test[j]]
        self.fill_cache(os.path.join(self.hparams.save_folder, EMBEDDINGS_FILE), [*task_data.train, *earlier, *tests])
        if resumed:
            logger.info("task %d: rebuilding the %s head from the cached embeddings of tasks 0..%d",
                        self.task_id, self.hparams.frozen_head, self.task_id - 1)
            self.head, self.head_tasks = None, []
            for j, rows in enumerate(task_data.earlier_train):
                self.learn_task(j, rows)
        self.train_rows = list(task_data.train)

    def cached_embeddings(self, rows):
        """(embeddings [n, emb_dim], labels [n] long) of ``rows`` from the cache, on the Brain's device."""
        emb = torch.stack([self.cache[row["ID"]] for row in rows]).to(self.device)
        labels = torch.as_tensor([int(row["class_idx"]) for row in rows], dtype=torch.long, device=self.device)
        return emb, labels

    # ------------------------------------------------------------- learning
    def learn_task(self, k, rows):
        emb, labels = self.cached_embeddings(rows)
        if self.head is None:
            self.head = self.new_head(emb.shape[1])
        self.report = self.update_head(k, emb, labels) or {}
        self.head_tasks.append(k)

    def fit(self, epoch_counter, train_set, valid_set=None, progressbar=None, train_loader_kwargs={},
            valid_loader_kwargs={}):
        """One closed-form update with the task's training clips (no epochs, no gradient)."""
        self.learn_task(self.task_id, self.train_rows)

    def fit_report(self):
        return dict(self.report)

    def compute_forward(self, batch, stage):
        """Head scores [batch, n_classes]; with ``mask_unseen_classes``, classes not met yet masked."""
        batch = batch.to(self.device)
        scores = self.head.scores(self.batch_embeddings(batch))
        if self.hparams.mask_unseen_classes:
            scores = scores.masked_fill(~self.seen_mask(scores.device), UNSEEN_LOGIT)
        return scores



class NCMBrain(FrozenHeadBrain):
    """SimpleCIL: cosine similarity to the mean embedding of each class met so far."""

    def new_head(self, dim):
        return NCMHead(self.hparams.n_classes, dim, device=self.device)

    def update_head(self, k, emb, labels):
        self.head.update(emb, labels)
        return {"n_prototypes": int((self.head.counts > 0).sum())}


class RanPACBrain(FrozenHeadBrain):
    """RanPAC: ``relu(emb @ W_rand)`` then ridge regression, Gram matrix accumulated task by task."""

    HPARAMS = {
        "ranpac_M": REQUIRED,  # random projection size M (the original: 10000)
        # null: per task, the original's choice over 10^-8 .. 10^8 (80 / 20 split of the task's
        # training clips, least MSE); a number: that lambda at every task.
        "ridge_lambda": REQUIRED,
    }

    def new_head(self, dim):
        seed = derive_seed(self.hparams.seed, "ranpac-projection")
        return RanPACHead(dim, int(self.hparams.ranpac_M), self.hparams.n_classes, seed, device=self.device)

    def update_head(self, k, emb, labels):
        self.head.update(emb, labels)
        ridge, losses = self.hparams.ridge_lambda, None
        if ridge is None:
            ridge, losses = select_ridge(self.head, emb, labels, derive_seed(self.hparams.seed, k, "ranpac-ridge"))
        self.head.solve(float(ridge))
        logger.info("task %d: RanPAC ridge lambda %g%s", k, ridge, "" if losses is None else " (chosen)")
        return {"ridge_lambda": float(ridge), "ridge_chosen": losses is not None}


#: ``frozen_head`` -> Brain.
FROZEN_HEADS = {"ncm": NCMBrain, "ranpac": RanPACBrain}


def chosen(hparams):
    """The Brain of ``hparams["frozen_head"]``; ConfigError naming the choices otherwise."""
    name = str(hparams["frozen_head"])
    if name not in FROZEN_HEADS:
        raise ConfigError(f"frozen_head={name!r} is not valid: expected one of {', '.join(FROZEN_HEADS)}")
    task = hparams.get("encoder_task")
    if not (isinstance(task, int) and task >= 0) and str(task) not in ENCODER_TASK_WORDS:
        raise ConfigError(f"encoder_task={task!r} is not valid: expected a task index >= 0 or one of "
                          f"{', '.join(ENCODER_TASK_WORDS)}")
    return FROZEN_HEADS[name]
