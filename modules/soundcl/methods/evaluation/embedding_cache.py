"""Embeddings of a frozen encoder, computed once per task and kept on disk.

Linear evaluation trains a classifier for many epochs on a frozen encoder: an
embedding is then a pure function of (checkpoint, clip), so each clip is
encoded once and looked up afterwards. The cache lives in
``<save_folder>/task{k}/embeddings.pt`` with a fingerprint of the encoder (its
checkpoint files and the embedding of a fixed probe signal); a cache made by
another encoder is recomputed, never trusted.
"""
import logging
import os

import torch

logger = logging.getLogger(__name__)

EMBEDDINGS_FILE = "embeddings.pt"
#: Bumped when the way embeddings are computed changes: older caches are recomputed.
EMBEDDINGS_VERSION = 1


def file_stamp(path):
    """Path, size and modification time of ``path``: changes when the file is rewritten."""
    stat = os.stat(path)
    return f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"


class EmbeddingCache:
    """Clip id -> embedding [emb_dim] of one frozen encoder, backed by one file.

    Arguments
    ---------
    path : str
        The cache file.
    fingerprint : tuple (key: JSON-like, probe: torch.Tensor [1, emb_dim])
        What the embeddings depend on (:meth:`LinearEvalBrain.encoder_fingerprint`).
    """

    def __init__(self, path, fingerprint):
        self.path = path
        self.key, self.probe = fingerprint
        self.ids = {}  # clip id -> row of self.table
        self.table = None  # [n_clips, emb_dim] on CPU

    def load(self):
        """Read the file if the current encoder made it; returns self."""
        self.ids, self.table = {}, None
        if not os.path.exists(self.path):
            return self
        try:
            cache = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # a damaged cache is recomputed, never trusted
            logger.warning("ignoring unreadable embedding cache %s: %s", self.path, err)
            return self
        if cache.get("key") != self.key or not torch.allclose(cache["probe"], self.probe, atol=1e-5, rtol=1e-4):
            logger.info("embedding cache %s was made by another encoder: recomputing it", self.path)
            return self
        self.ids = {clip_id: i for i, clip_id in enumerate(cache["ids"])}
        self.table = cache["embeddings"]
        return self

    def fill(self, rows, embed_rows):
        """Encode the clips of ``rows`` not cached yet and save the file; returns self.

        ``embed_rows(rows) -> (ids, embeddings [n, emb_dim] on CPU)``.
        """
        todo = [row for row in rows if row["ID"] not in self.ids]
        if not todo:
            logger.info("all %d embeddings found in %s", len(rows), self.path)
            return self
        logger.info("encoding %d clips (%d cached) into %s", len(todo), len(rows) - len(todo), self.path)
        new_ids, new_table = embed_rows(todo)
        offset = 0 if self.table is None else self.table.shape[0]
        self.ids.update({clip_id: offset + i for i, clip_id in enumerate(new_ids)})
        self.table = new_table if self.table is None else torch.cat([self.table, new_table])
        ordered = sorted(self.ids, key=self.ids.get)
        tmp = f"{self.path}.tmp"
        torch.save({"key": self.key, "probe": self.probe, "ids": ordered, "embeddings": self.table}, tmp)
        os.replace(tmp, self.path)  # a kill mid-write leaves the previous cache or none
        return self

    def __contains__(self, clip_id):
        return clip_id in self.ids

    def __getitem__(self, clip_id):
        return self.table[self.ids[clip_id]]
