#!/usr/bin/env python3
"""Class-incremental replay with a fixed-size memory and a memory policy.

    python recipes/replay_train.py hparams/synth/replay_train.yaml --mode=replay --mem_manage=uncertainty
    python recipes/replay_train.py hparams/tau19/replay_train.yaml --data_folder=/data/TAU-urban-acoustic-scenes-2019-development \
        --mode=replay --mem_manage=uncertainty --uncert_metric=noisytune --metric_k=4 --memory_size=500
    python recipes/replay_train.py hparams/esc50/replay_train.yaml --data_folder=/data/ESC-50-master --cross_validate=True
"""
from soundcl.replay import run

if __name__ == "__main__":
    run()
