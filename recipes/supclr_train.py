#!/usr/bin/env python3
"""Continual supervised + contrastive training: sup_weight x CE + ssl_weight x NT-Xent.

    python recipes/supclr_train.py hparams/synth/supclr_train.yaml
    python recipes/supclr_train.py hparams/us8k/supclr_train.yaml --data_folder=/data/UrbanSound8K \\
        --replay_num_keep=0 --use_mixup=False --ssl_weight=1 --sup_weight=0 --train_duration=2.0 \\
        --emb_norm_type=bn --proj_norm_type=bn --batch_size=32 --experiment_name=simclr_ft
"""
from soundcl.recipe import main
from soundcl.ssl import SupCLR

if __name__ == "__main__":
    main(SupCLR)
