"""Embedding maps of task-wise encoder checkpoints (soundcl.methods.evaluation.visualize, recipes/visualize.py)."""
import numpy as np
import pytest
import torch

from conftest import recipe_argv, run_recipe
from soundcl.methods.evaluation.visualize import EmbeddingMapBrain, reduce_to_2d


class CountingMapBrain(EmbeddingMapBrain):
    encoded = {}  # task -> (clips encoded at this task, clips in its cache)

    def prepare_task_data(self, task_dir, task_data):
        before = self.n_encoded
        super().prepare_task_data(task_dir, task_data)
        self.encoded[self.task_id] = (self.n_encoded - before, len(self.cache.ids))


@pytest.fixture(scope="module")
def encoder_save(tmp_path_factory, synth_data_folder):
    out = tmp_path_factory.mktemp("encoder")
    run_recipe("sup_train", recipe_argv("hparams/synth/sup_train.yaml", str(out), synth_data_folder,
                                        "--task_classes=[[0,1],[2,3]]", "--number_of_epochs=1"))
    return str(out / "sup_train_replay0" / "1986" / "save")


def test_one_map_per_task_with_seen_classes_marked_and_each_clip_encoded_once(tmp_path, synth_data_folder,
                                                                           encoder_save):
    CountingMapBrain.encoded = {}
    argv = recipe_argv("hparams/synth/visualize.yaml", str(tmp_path), synth_data_folder,
                       "--task_classes=[[0,1],[2,3]]", f"--ssl_checkpoints_dir={encoder_save}", "--knn_k=5")
    argv = [a for a in argv if not a.startswith(("--lr=", "--lr_final=", "--number_of_epochs=", "--batch_size="))]
    run_recipe("visualize", argv, replace={"EmbeddingMapBrain": CountingMapBrain})
    out = tmp_path / "visualize_tsne" / "1986"
    for name in ("task0.png", "task1.png", "grid.png"):
        assert (out / "maps" / name).stat().st_size > 5000, name
    for k, seen in ((0, [0, 1]), (1, [0, 1, 2, 3])):
        with np.load(out / "save" / f"task{k}" / "embedding_map.npz") as task_map:
            assert task_map["seen_classes"].tolist() == seen
            # Every task's test clips are on every task's map (test fold 10: 8 clips per class).
            assert sorted(set(task_map["classes"].tolist())) == [0, 1, 2, 3]
            assert task_map["points"].shape == (32, 2) and np.isfinite(task_map["points"]).all()
        n_encoded, n_cached = CountingMapBrain.encoded[k]
        assert n_encoded == n_cached  # each clip (bank, tests, map) through the encoder once
        cache = torch.load(out / "save" / f"task{k}" / "embeddings.pt")
        assert len(cache["ids"]) == n_cached


def test_tsne_keeps_well_separated_clusters_apart():
    rng = np.random.RandomState(0)
    points = np.concatenate([rng.randn(20, 8), rng.randn(20, 8) + 20.0])
    flat = reduce_to_2d(points, "tsne", seed=0)
    a, b = flat[:20].mean(0), flat[20:].mean(0)
    spread = max(flat[:20].std(0).max(), flat[20:].std(0).max())
    assert np.linalg.norm(a - b) > 3 * spread


def test_umap_without_umap_learn_is_refused(tmp_path, synth_data_folder, encoder_save):
    try:
        import umap  # noqa: F401
        pytest.skip("umap-learn is installed")
    except ImportError:
        pass
    argv = recipe_argv("hparams/synth/visualize.yaml", str(tmp_path), synth_data_folder, "--map_method=umap",
                       f"--ssl_checkpoints_dir={encoder_save}")
    argv = [a for a in argv if not a.startswith(("--lr=", "--lr_final=", "--number_of_epochs=", "--batch_size="))]
    with pytest.raises(SystemExit, match="umap-learn"):
        run_recipe("visualize", argv)
