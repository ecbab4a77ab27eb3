#!/usr/bin/env python3
"""Cosine kNN evaluation of task-wise encoder checkpoints (training-free; seen / subset / buffer / full).

    python recipes/knn_eval.py hparams/synth/knn_eval.yaml --ssl_checkpoints_dir=<ENCODER_OUTPUT>/save --knn_k=10
"""
from soundcl.linear_eval import KnnEvalBrain
from soundcl.recipe import main

if __name__ == "__main__":
    main(KnnEvalBrain)
