"""Tasks of one class (the 10-task splits, hparams/*/*_10task.yaml): what can break is stopped in one line."""
import pytest

from conftest import recipe_argv, run_recipe
from soundcl.core.task_loop import check_training_batches


def test_a_task_without_a_single_training_batch_is_refused():
    check_training_batches(0, 16, {"batch_size": 16, "drop_last": True})
    check_training_batches(0, 3, {"batch_size": 16})  # one short batch: it trains
    with pytest.raises(ValueError, match="task 4 has 15 training clips.*batch_size=16 with drop_last"):
        check_training_batches(4, 15, {"batch_size": 16, "drop_last": True})


def test_a_one_clip_batch_at_a_batchnorm_names_the_cure(tmp_path, synth_data_folder):
    # One class, 8 training clips, batches of 7: the last batch holds one clip.
    argv = recipe_argv("hparams/synth/sup_train.yaml", str(tmp_path), synth_data_folder, "--task_classes=[[0]]",
                       "--train_folds=[1]", "--batch_size=7", "--number_of_epochs=1")
    with pytest.raises(ValueError, match="batch of one clip .* BatchNorm .* drop_last: True"):
        run_recipe("sup_train", argv)
