#!/usr/bin/env python3
"""Supervised class-incremental training (fine-tuning or replay).

    python recipes/sup_train.py hparams/synth/sup_train.yaml
    python recipes/sup_train.py hparams/us8k/sup_train.yaml --data_folder=/data/UrbanSound8K --replay_num_keep=100
"""
from soundcl.brains import SupervisedBrain
from soundcl.recipe import main

if __name__ == "__main__":
    main(SupervisedBrain)
