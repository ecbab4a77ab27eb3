#!/usr/bin/env python3
"""Continual MoCo (momentum key encoder, queue of negatives) (cssl_sound moco_train.py).

    python recipes/moco_train.py hparams/synth/moco_train.yaml
    python recipes/moco_train.py hparams/us8k/moco_train.yaml --data_folder=/data/UrbanSound8K

For each task k (soundcl.core.task_loop.TaskLoop): train on two augmented views of
task k's clips plus the memory (``replay_num_keep`` random clips of every
finished task), keep the last epoch, and test the encoder with a cosine kNN
classifier whose bank is the training clips of tasks 0..k (row k of the
matrix). The method is :class:`soundcl.methods.ssl.moco.MoCo`; the task-wise checkpoints in
<output_folder>/save/task<k>/ are what recipes/linclf_train.py and
recipes/knn_eval.py evaluate (--ssl_checkpoints_dir).

This is recipes/ssl_train.py with ``ssl_method: moco`` (soundcl.methods.ssl.family).
"""
import os
import runpy

from soundcl.core.ddp import run_script
from soundcl.methods.ssl.moco import MoCo

SSL_TRAIN = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ssl_train.py"))
NEEDS = SSL_TRAIN["needs"](MoCo)


def main(argv):
    return SSL_TRAIN["main"](argv, ssl_method="moco", brain_class=MoCo)


if __name__ == "__main__":
    run_script(main)  # under DDP: ends without interpreter teardown (soundcl.core.ddp.run_script)
