"""Atomic file writes: a file appears whole or not at all.

Every writer of the package that must not leave a truncated file behind (manifests,
markers, results, caches) goes through :func:`atomic_path`: the content is written to a
temporary file in the destination's folder (same file system, so the final
:func:`os.replace` is atomic) and renamed over the destination only once complete. A
crash leaves either the old file or the new one.
"""

import contextlib
import json
import os
import tempfile

# The process's umask, read once (os.umask can only be read by setting it).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path, suffix=".tmp"):
    """Context manager yielding a temporary path to write; renamed to ``path`` on exit.

    Arguments
    ---------
    path : str
        The destination; its folder is created if needed.
    suffix : str
        End of the temporary name, for writers that pick the format from it
        (e.g. ``".tmp.npy"`` for :func:`numpy.save`, ``".tmp.png"`` for ``savefig``).

    Yields
    ------
    str
        The temporary path. If the block raises, it is removed and ``path`` is untouched.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=suffix)
    os.close(fd)
    try:
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes it 0600; give a plain file's mode
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def atomic_write_text(path, content):
    """Write a UTF-8 text file atomically (no newline translation).

    ``content`` is the text itself (str) or a function ``write(file_object)`` that
    writes it (e.g. through :class:`csv.writer`). Returns nothing.
    """
    with atomic_path(path) as tmp_path:
        with open(tmp_path, "w", encoding="utf-8", newline="") as f:
            if callable(content):
                content(f)
            else:
                f.write(content)


def write_json_atomic(path, obj, indent=2):
    """Write ``obj`` as indented, key-sorted JSON (with a final newline) atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")
