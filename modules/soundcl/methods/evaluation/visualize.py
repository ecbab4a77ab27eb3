"""2-D maps of the test embeddings of each task-wise encoder checkpoint (cssl_sound's visualize_embedding.ipynb).

For each task ``k`` (driven by :class:`soundcl.core.task_loop.TaskLoop` as kNN
evaluation is), :class:`EmbeddingMapBrain` loads the frozen encoder of
``<ssl_checkpoints_dir>/task<k>``, embeds the test clips of *every* task once
(kept in ``save/task<k>/embeddings.pt`` with linear evaluation's
:class:`soundcl.methods.evaluation.embedding_cache.EmbeddingCache`, so a rerun does not encode
again), maps them to 2-D (``map_method``: ``tsne``, scikit-learn's t-SNE, or
``umap`` when umap-learn is installed), and writes

* ``save/task<k>/embedding_map.npz``: the 2-D points, classes, clip ids;
* ``<output_folder>/maps/task<k>.png``: points coloured by class; classes of the
  tasks seen so far (0..k) as filled dots, the others as faint crosses;
* ``<output_folder>/maps/grid.png``: every task's map side by side (after the last task).

Row ``k`` of the accuracy matrix is the cosine kNN accuracy of the ``seen``
protocol (:class:`soundcl.methods.evaluation.knn_eval.KnnEvalBrain`), a by-product.
"""
import logging
import math
import os

import numpy as np
import torch

from soundcl.base.atomic import atomic_path
from soundcl.base.contract import REQUIRED, ConfigError
from soundcl.methods.evaluation.knn_eval import KnnEvalBrain

logger = logging.getLogger(__name__)

MAP_METHODS = ("tsne", "umap")
MAP_FILE = "embedding_map.npz"


def reduce_to_2d(embeddings, method, seed, perplexity=30.0):
    """2-D coordinates [n, 2] of ``embeddings`` [n, dim] (numpy float)."""
    n = embeddings.shape[0]
    if n < 3:
        raise ValueError(f"a 2-D map needs at least 3 clips, got {n}")
    if method == "tsne":
        from sklearn.manifold import TSNE

        # Perplexity must stay below the number of points.
        tsne = TSNE(n_components=2, perplexity=min(float(perplexity), (n - 1) / 3.0), init="pca",
                    random_state=int(seed))
        return tsne.fit_transform(embeddings)
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, random_state=int(seed), n_neighbors=min(15, n - 1)).fit_transform(embeddings)
    raise ConfigError(f"map_method={method!r} is not valid: expected one of {', '.join(MAP_METHODS)}")


def check_map_method(method):
    """ConfigError for an unknown method, or ``umap`` without umap-learn installed (no silent fallback)."""
    if method not in MAP_METHODS:
        raise ConfigError(f"map_method={method!r} is not valid: expected one of {', '.join(MAP_METHODS)}")
    if method == "umap":
        try:
            import umap  # noqa: F401
        except ImportError:
            raise ConfigError("map_method=umap needs umap-learn (pip install umap-learn); or use map_method=tsne") from None


def class_colours(n_classes):
    """One RGBA colour per class index (tab10 / tab20 / a hue wheel for more classes)."""
    import matplotlib

    if n_classes <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return [cmap(c) for c in range(n_classes)]
    if n_classes <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return [cmap(c) for c in range(n_classes)]
    cmap = matplotlib.colormaps["hsv"]
    return [cmap(c / n_classes) for c in range(n_classes)]


def draw_map(ax, points, classes, seen_classes, colours, names, title, legend=True):
    """Scatter ``points`` [n, 2] coloured by ``classes`` [n]; seen classes filled, unseen faint crosses."""
    seen = set(int(c) for c in seen_classes)
    for c in sorted(set(int(c) for c in classes)):
        at = classes == c
        label = f"{c}: {names.get(c, c)}" + ("" if c in seen else " (not seen)")
        if c in seen:
            ax.scatter(points[at, 0], points[at, 1], s=14, marker="o", color=colours[c], alpha=0.9, label=label)
        else:
            ax.scatter(points[at, 0], points[at, 1], s=14, marker="x", color=colours[c], alpha=0.3, label=label)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if legend and len(set(classes.tolist())) <= 20:
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=100)


def plot_task_map(path, task_map, n_classes, names):
    fig = _figure(7.5, 5.0)
    fig.subplots_adjust(left=0.03, right=0.68, bottom=0.03, top=0.92)
    ax = fig.add_subplot(1, 1, 1)
    draw_map(ax, task_map["points"], task_map["classes"], task_map["seen_classes"], class_colours(n_classes), names,
             f"encoder after task {int(task_map['task'])}: test clips of every task")
    _save(fig, path)


def plot_grid(path, task_maps, n_classes, names):
    """Every task's map in one PNG (the legend once, beside the last panel)."""
    n = len(task_maps)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    width, height = 3.0 * cols + 2.2, 3.0 * rows + 0.6
    fig = _figure(width, height)
    fig.subplots_adjust(left=0.02, right=1.0 - 2.2 / width, bottom=0.02, top=1.0 - 0.7 / height,
                        wspace=0.08, hspace=0.25)
    colours = class_colours(n_classes)
    for i, task_map in enumerate(task_maps):
        ax = fig.add_subplot(rows, cols, i + 1)
        draw_map(ax, task_map["points"], task_map["classes"], task_map["seen_classes"], colours, names,
                 f"after task {int(task_map['task'])}", legend=i == n - 1)
    fig.suptitle("test embeddings per encoder checkpoint (dots: classes seen so far; crosses: not yet seen)",
                 fontsize=9)
    _save(fig, path)


def load_task_map(task_dir):
    with np.load(os.path.join(task_dir, MAP_FILE)) as data:
        return {key: data[key] for key in data.files}


class EmbeddingMapBrain(KnnEvalBrain):
    """:class:`KnnEvalBrain` that also maps the test clips of every task with each task's encoder.

    ``map_rows``: the test rows of every task (set by the recipe before the loop).
    """

    HPARAMS = {
        "map_method": REQUIRED,  # tsne (scikit-learn) or umap (umap-learn)
        "tsne_perplexity": 30.0,
        # At most this many test clips per class on the map (evenly spaced, fixed); null: all.
        "map_clips_per_class": None,
        "output_folder": REQUIRED,
    }

    map_rows = ()
    class_names = {}

    def map_subset(self):
        """The rows shown on the maps (``map_clips_per_class`` per class, evenly spaced in id order)."""
        limit = self.hparams.map_clips_per_class
        by_class = {}
        for row in sorted(self.map_rows, key=lambda r: r["ID"]):
            by_class.setdefault(int(row["class_idx"]), []).append(row)
        kept = []
        for c in sorted(by_class):
            rows = by_class[c]
            if limit is not None and len(rows) > int(limit):
                rows = [rows[i] for i in np.linspace(0, len(rows) - 1, int(limit)).astype(int)]
            kept.extend(rows)
        return kept

    def prepare_task_data(self, task_dir, task_data):
        if not self.hparams.cache_embeddings:
            raise ConfigError("the embedding maps use the embedding cache: set cache_embeddings=True")
        super().prepare_task_data(task_dir, task_data)
        from speechbrain.utils.distributed import if_main_process, run_on_main

        rows = self.map_subset()
        run_on_main(lambda: self.cache.fill(rows, self.embed_rows))  # computed once, cached with the others
        if not if_main_process():
            return
        path = os.path.join(task_dir, MAP_FILE)
        if not os.path.exists(path):  # the 2-D map of a finished task is kept, not recomputed
            embeddings = torch.stack([self.cache[row["ID"]] for row in rows]).float().numpy()
            points = reduce_to_2d(embeddings, self.hparams.map_method, self.hparams.seed,
                                  self.hparams.tsne_perplexity)
            seen = [c for j in range(self.task_id + 1) for c in self.task_classes[j]]
            with atomic_path(path, suffix=".tmp.npz") as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, points=points, classes=np.array([int(r["class_idx"]) for r in rows]),
                             ids=np.array([r["ID"] for r in rows]), seen_classes=np.array(sorted(seen)),
                             task=np.array(self.task_id))
        png = os.path.join(self.hparams.output_folder, "maps", f"task{self.task_id}.png")
        plot_task_map(png, load_task_map(task_dir), self.hparams.n_classes, self.class_names)
        logger.info("task %d: embedding map in %s", self.task_id, png)
