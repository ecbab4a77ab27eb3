"""kNN evaluation of task-wise encoder checkpoints (``recipes/knn_eval.py``).

:class:`KnnEvalBrain` is :class:`~soundcl.methods.evaluation.linear_eval.LinearEvalBrain`
(same task data, same frozen encoder, same embeddings) with training replaced by a cosine
kNN vote over the training embeddings.
"""
import numpy as np
import torch
import torch.nn.functional as F

import speechbrain as sb

from soundcl.base.contract import REQUIRED
from soundcl.base.randomness import derive_seed
from soundcl.methods.evaluation.knn import knn_scores
from soundcl.methods.evaluation.linear_eval import BALANCED_SAMPLING_TYPES, ScoringEvalBrain

#: The kNN bank of buffer / subset (``knn_bank_balance``): a class-balanced resample (cssl_sound) or each clip once.
KNN_BANK_BALANCES = ("resample", "none")


class KnnEvalBrain(ScoringEvalBrain):
    """Training-free evaluation: cosine k-nearest-neighbour vote over the training embeddings.

    "Fitting" stores
    the L2-normalised training embeddings; a test clip takes the majority class
    of its ``knn_k`` most similar training clips (ties: larger summed similarity).
    """

    HPARAMS = {
        "knn_k": REQUIRED,  # neighbours of each test clip
        "knn_rule": REQUIRED,  # exp: votes weighted by exp(cos / knn_temperature) (cssl_sound's); vote: majority
        "knn_temperature": REQUIRED,
        # resample (cssl_sound's): in buffer / subset the bank is as many clips drawn class-balanced with
        # replacement (a class uniformly, then one of its clips); none: every selected clip once.
        "knn_bank_balance": REQUIRED,
        "reinit_classifier": False,  # no classifier
        "mask_unseen_classes": False,  # the bank holds only the classes trained on
        "lr_annealing": None,  # no training
        "train_logger": None,
    }

    def fit(self, epoch_counter, train_set, valid_set=None, progressbar=None, train_loader_kwargs={}, valid_loader_kwargs={}):
        loader = self.make_dataloader(train_set, sb.Stage.TEST, ckpt_prefix=None, **dict(valid_loader_kwargs))
        embeddings, labels = [], []
        for batch in loader:
            batch = batch.to(self.device)
            embeddings.append(F.normalize(self.batch_embeddings(batch).float(), dim=-1))
            labels.append(torch.as_tensor(batch.class_idx, dtype=torch.long, device=self.device))
        self.bank = torch.cat(embeddings)  # [n_train, emb_dim]
        self.bank_labels = torch.cat(labels)  # [n_train]
        balance = self.hparams.knn_bank_balance
        if balance not in KNN_BANK_BALANCES:
            raise ValueError(f"unknown knn_bank_balance {balance!r}: expected one of {', '.join(KNN_BANK_BALANCES)}")
        if balance == "resample" and self.hparams.linclf_train_type in BALANCED_SAMPLING_TYPES:
            # cssl_sound's class_balanced_dataio_prep: each of the n_train items is a class drawn
            # uniformly, then one of its clips, with replacement (here seeded per task).
            labels = self.bank_labels.cpu().numpy()
            classes = np.unique(labels)
            rng = np.random.RandomState(derive_seed(self.hparams.seed, self.task_id, "knn-bank"))
            drawn = classes[rng.randint(len(classes), size=len(labels))]
            index = np.empty(len(labels), dtype=np.int64)
            for c in classes:
                members = np.flatnonzero(labels == c)
                at = np.flatnonzero(drawn == c)
                index[at] = members[rng.randint(len(members), size=len(at))]
            index = torch.as_tensor(index, device=self.bank.device)
            self.bank, self.bank_labels = self.bank[index], self.bank_labels[index]

    def compute_forward(self, batch, stage):
        """kNN class scores [batch, n_classes] of :func:`soundcl.methods.evaluation.knn.knn_scores`.

        """
        batch = batch.to(self.device)
        return knn_scores(
            self.batch_embeddings(batch), self.bank, self.bank_labels, self.hparams.n_classes, k=self.hparams.knn_k,
            temperature=self.hparams.knn_temperature, rule=self.hparams.knn_rule,
        )

