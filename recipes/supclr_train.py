#!/usr/bin/env python3
"""Continual supervised + contrastive training: sup_weight x cross-entropy + ssl_weight x NT-Xent.

    python recipes/supclr_train.py hparams/synth/supclr_train.yaml
    python recipes/supclr_train.py hparams/synth/supclr_train_10task.yaml   # 10 tasks of one class (also us8k, tau19)
    python recipes/supclr_train.py hparams/us8k/supclr_train.yaml --data_folder=/data/UrbanSound8K \\
        --replay_num_keep=0 --use_mixup=False --ssl_weight=1 --sup_weight=0 --train_duration=2.0 \\
        --emb_norm_type=bn --proj_norm_type=bn --batch_size=32 --experiment_name=simclr_ft

For each task k (soundcl.core.task_loop.TaskLoop): train the encoder on two augmented
views of task k's clips plus the memory (``replay_num_keep`` random clips of
every finished task), keep the last epoch, and test it with a cosine kNN
classifier whose bank is the training clips of tasks 0..k (row k of the matrix).
The task-wise checkpoints in <output_folder>/save/task<k>/ are what
recipes/linclf_train.py and recipes/knn_eval.py evaluate (--ssl_checkpoints_dir).

This is recipes/ssl_train.py with ``ssl_method: supclr`` (soundcl.methods.ssl.family).
"""
import os
import runpy

from soundcl.core.ddp import run_script
from soundcl.methods.ssl.base import SupCLR

SSL_TRAIN = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ssl_train.py"))
NEEDS = SSL_TRAIN["needs"](SupCLR)


def main(argv):
    return SSL_TRAIN["main"](argv, ssl_method="supclr", brain_class=SupCLR)


if __name__ == "__main__":
    run_script(main)  # under DDP: ends without interpreter teardown (soundcl.core.ddp.run_script)
