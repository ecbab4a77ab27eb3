#!/usr/bin/env python3
"""Continual self-supervised training with SimCLR (NT-Xent between two views).

    python recipes/simclr_train.py hparams/synth/simclr_train.yaml
    python recipes/simclr_train.py hparams/us8k/simclr_train.yaml --data_folder=/data/UrbanSound8K
"""
from soundcl.recipe import main
from soundcl.ssl import SimCLR

if __name__ == "__main__":
    main(SimCLR)
