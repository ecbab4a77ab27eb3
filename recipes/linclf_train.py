#!/usr/bin/env python3
"""Linear evaluation of task-wise encoder checkpoints (seen / subset / buffer / full).

    python recipes/linclf_train.py hparams/synth/linclf_train.yaml --ssl_checkpoints_dir=<ENCODER_OUTPUT>/save
    python recipes/linclf_train.py hparams/us8k/linclf_train.yaml --output_base=<EVAL_OUTPUT_DIR> \
        --linclf_train_type=seen --replay_num_keep=all --ssl_checkpoints_dir=<ENCODER_OUTPUT_DIR>/save \
        --emb_norm_type=bn --experiment_name=<NAME> --data_folder=/data/UrbanSound8K
"""
from soundcl.linear_eval import LinearEvalBrain
from soundcl.recipe import main

if __name__ == "__main__":
    main(LinearEvalBrain)
