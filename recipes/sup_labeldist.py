#!/usr/bin/env python3
"""SupCLR + label distillation (cssl_sound's sup_labeldist.py): LwF on the previous task's outputs.

    python recipes/sup_labeldist.py hparams/synth/sup_labeldist.yaml
    python recipes/sup_labeldist.py hparams/us8k/sup_labeldist.yaml --data_folder=/data/UrbanSound8K

For each task k (soundcl.core.task_loop.TaskLoop): train as supclr_train.py
(sup_weight x CE + ssl_weight x NT-Xent, on task k's clips plus ``replay_num_keep``
clips of every finished task) plus ``dist_weight`` x the KL divergence between the
softened (``dist_tau``) classifier outputs of the frozen task k-1 model and the
current model on the same features (soundcl.methods.ssl.labeldist). Testing and checkpoints
as supclr_train.py.

This is recipes/ssl_train.py with ``ssl_method: sup_labeldist`` (soundcl.methods.ssl.family).
"""
import os
import runpy

from soundcl.core.ddp import run_script
from soundcl.methods.ssl.labeldist import SupCLRLabelDist

SSL_TRAIN = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ssl_train.py"))
NEEDS = SSL_TRAIN["needs"](SupCLRLabelDist)


def main(argv):
    return SSL_TRAIN["main"](argv, ssl_method="sup_labeldist", brain_class=SupCLRLabelDist)


if __name__ == "__main__":
    run_script(main)  # under DDP: ends without interpreter teardown (soundcl.core.ddp.run_script)
