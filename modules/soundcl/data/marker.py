"""The "preparation is current" marker: may manifests of an earlier run be reused?

After writing every manifest, a ``prepare`` records how they were made
(:func:`mark_prep_done`: its options, a stamp of its metadata file, the manifest names)
in :data:`PREP_OPTS_FILE`. A later call with the same options finds the record
(:func:`prep_is_current`) and returns without touching any audio. Before rewriting,
:func:`clear_prep_done` drops the record, so that an interrupted rewrite is not trusted.
"""

import hashlib
import json
import logging
import os

from soundcl.base.atomic import write_json_atomic

logger = logging.getLogger(__name__)

#: Name of the file that records how the manifests in a save folder were made.
PREP_OPTS_FILE = "prepare_opts.json"

#: Bump when the manifest content changes for the same inputs, so that old manifests
#: are not reused by newer code. 2: ESC-50 and TAU 2019 draw their validation split with
#: :func:`soundcl.data.splits.split_train_valid` like the other data sets.
MANIFEST_FORMAT_VERSION = 2


def mark_prep_done(save_folder, opts, metadata_file=None, manifests=None):
    """Record that the manifests in ``save_folder`` were made from ``opts``; returns nothing.

    Writes :data:`PREP_OPTS_FILE` holding ``opts`` (must be JSON-serialisable), the size
    and modification time of ``metadata_file`` (when given) and the names of the
    manifests written (when given; a list of paths or a ``split -> [paths]`` dict).
    Call it only after every manifest has been written.
    """
    record = _prep_record(opts, metadata_file, manifests)
    write_json_atomic(os.path.join(save_folder, PREP_OPTS_FILE), record)


def clear_prep_done(save_folder):
    """Forget an earlier preparation (call before rewriting manifests); returns nothing.

    If the rewrite is then interrupted, the next run will not trust the mixture of old
    and new manifests.
    """
    path = os.path.join(save_folder, PREP_OPTS_FILE)
    if os.path.exists(path):
        os.remove(path)


def prep_is_current(save_folder, opts, metadata_file=None, manifests=None):
    """Whether (bool) the manifests in ``save_folder`` can be reused for ``opts``.

    True only when :data:`PREP_OPTS_FILE` exists and records exactly the same options,
    the same size and modification time of ``metadata_file`` (when given), and every
    manifest it lists (and every one in ``manifests``, when given) still exists.
    """
    record_path = os.path.join(save_folder, PREP_OPTS_FILE)
    if not os.path.isfile(record_path):
        return False
    try:
        with open(record_path, encoding="utf-8") as f:
            stored = json.load(f)
    except (OSError, ValueError):
        logger.warning("Ignoring unreadable %s", record_path)
        return False
    if metadata_file is not None and not os.path.isfile(metadata_file):
        return False

    current = _prep_record(opts, metadata_file, None)
    for key in ("format_version", "opts", "metadata"):
        if stored.get(key) != current[key]:
            return False

    expected = set(stored.get("manifests", []))
    if manifests is not None:
        wanted = {os.path.basename(p) for p in _flatten_paths(manifests)}
        if not wanted <= expected:
            return False
        expected |= wanted
    return all(os.path.isfile(os.path.join(save_folder, name)) for name in expected)


def file_stamps(paths):
    """``[{path, size, mtime_ns}, ...]`` of existing files, to put in ``opts`` so that an
    edit of one of them invalidates the manifests."""
    return [_file_stamp(p) for p in paths]


def digest_strings(strings):
    """SHA-1 (hex str) of a sequence of strings: a short fingerprint of e.g. an audio
    listing, stored in ``opts`` so new or removed clips invalidate manifests."""
    sha = hashlib.sha1()
    for text in strings:
        sha.update(text.encode("utf-8"))
        sha.update(b"\n")
    return sha.hexdigest()


def _jsonable(obj):
    """Normalise ``obj`` the way a JSON round trip would (tuples become lists, ...).

    Comparing normalised values means ``(1, 2)`` given now matches ``[1, 2]`` stored.
    """
    return json.loads(json.dumps(obj, sort_keys=True))


def _file_stamp(path):
    """Size and modification time (ns) of a file, to notice that it changed."""
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _prep_record(opts, metadata_file, manifests):
    record = {"format_version": MANIFEST_FORMAT_VERSION, "opts": _jsonable(opts)}
    record["metadata"] = _file_stamp(metadata_file) if metadata_file else None
    if manifests is not None:
        record["manifests"] = sorted(os.path.basename(p) for p in _flatten_paths(manifests))
    return record


def _flatten_paths(manifests):
    """Accept a list of paths or a ``split -> [paths]`` dict; yield the paths."""
    if isinstance(manifests, dict):
        for paths in manifests.values():
            yield from paths
    else:
        yield from manifests
