#!/usr/bin/env python3
"""Continual self-supervised training with SimSiam (predictor + stop-gradient).

    python recipes/simsiam_train.py hparams/synth/simsiam_train.yaml
    python recipes/simsiam_train.py hparams/us8k/simsiam_train.yaml --data_folder=/data/UrbanSound8K
"""
from soundcl.recipe import main
from soundcl.ssl import SimSiam

if __name__ == "__main__":
    main(SimSiam)
