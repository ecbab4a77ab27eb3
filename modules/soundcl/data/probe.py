"""Audio probing for the ``prepare`` functions: find audio files, read their durations
from the headers, and build readable errors for missing or unreadable ones."""

import logging
import os

import soundfile

logger = logging.getLogger(__name__)

#: How many file names an error message lists before summarising the rest.
MAX_LISTED_FILES = 10

#: Values of a ``prepare``'s ``on_bad_audio``: raise on unreadable files, or leave them out.
ON_BAD_AUDIO = ("error", "skip")


def list_files(folder, extensions):
    """Relative paths (``/``-separated, sorted list of str) of the files under ``folder``
    whose names end with one of ``extensions`` (case-insensitive), hidden files and
    folders excluded."""
    extensions = tuple(e.lower() for e in extensions)
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel_root = os.path.relpath(root, folder)
        for name in files:
            if not name.startswith(".") and name.lower().endswith(extensions):
                found.append(name if rel_root == "." else f"{rel_root}/{name}".replace(os.sep, "/"))
    return sorted(found)


def probe_durations(paths, what):
    """Durations in seconds of audio files (from their headers, via soundfile).

    Returns
    -------
    (durations, unreadable) : dict ``path -> seconds`` (rounded to the µs) for the
    readable files and a list of ``"path (reason)"`` strings for the others (empty files
    included).
    """
    durations, unreadable = {}, []
    for path in paths:
        try:
            info = soundfile.info(path)
        except RuntimeError as err:  # soundfile.LibsndfileError derives from it
            unreadable.append(f"{path} ({err})")
            continue
        if info.samplerate <= 0 or info.frames <= 0:
            unreadable.append(f"{path} (empty: {info.frames} frames)")
            continue
        durations[path] = round(info.frames / info.samplerate, 6)
    if unreadable:
        logger.warning("%d %s cannot be read", len(unreadable), what)
    return durations, unreadable


def probe_rows(rows, what, on_bad_audio=None, expected=None):
    """Check the audio of manifest rows and fill their ``duration`` from the headers.

    Arguments
    ---------
    rows : list of dict
        Manifest rows; ``row["wav"]`` is the audio file.
    what : str
        What the files are, for messages (e.g. ``"UrbanSound8K audio files"``).
    on_bad_audio : str or None
        Unreadable files: ``"error"`` raises (the message suggests ``skip``), ``"skip"``
        leaves their rows out, None raises (for a ``prepare`` without that option).
    expected : str, optional
        Where the files should be, added to the message about missing ones.

    Returns
    -------
    (rows, unreadable) : the rows whose audio could be read (``duration`` set, in input
    order) and the ``"path (reason)"`` strings of the others.

    Raises
    ------
    FileNotFoundError
        Some files are missing (:func:`missing_files_error`).
    RuntimeError
        Some files cannot be read and ``on_bad_audio`` is not ``"skip"``.
    """
    if on_bad_audio is not None and on_bad_audio not in ON_BAD_AUDIO:
        raise ValueError(f"on_bad_audio={on_bad_audio!r} is not valid: expected error or skip")
    missing = [r["wav"] for r in rows if not os.path.isfile(r["wav"])]
    if missing:
        raise missing_files_error(missing, what if expected is None else f"{what} (expected {expected})")
    durations, unreadable = probe_durations([r["wav"] for r in rows], what)
    if unreadable and on_bad_audio != "skip":
        raise unreadable_files_error(unreadable, what, skippable=on_bad_audio is not None)
    if unreadable:
        logger.warning("skipping %d %s that cannot be read", len(unreadable), what)
    kept = [r for r in rows if r["wav"] in durations]
    for row in kept:
        row["duration"] = durations[row["wav"]]
    return kept, unreadable


def format_file_list(paths, limit=MAX_LISTED_FILES):
    """Indented list (one str, a line each) of the first ``limit`` paths, plus how many
    were left out."""
    paths = list(paths)
    lines = [f"  {p}" for p in paths[:limit]]
    if len(paths) > limit:
        lines.append(f"  ... and {len(paths) - limit} more")
    return "\n".join(lines)


def missing_files_error(missing, what):
    """Build (not raise) a FileNotFoundError for missing files.

    Arguments
    ---------
    missing : list of str
        The missing paths.
    what : str
        What the files are, e.g. ``"UrbanSound8K audio files"``.

    Returns
    -------
    FileNotFoundError
        Message with the total count and the first :data:`MAX_LISTED_FILES` paths.
    """
    missing = list(missing)
    return FileNotFoundError(
        f"{len(missing)} {what} are missing (first {min(len(missing), MAX_LISTED_FILES)} "
        f"listed):\n{format_file_list(missing)}"
    )


def unreadable_files_error(unreadable, what, skippable=True):
    """Build (not raise) a RuntimeError listing files soundfile cannot read; with
    ``skippable``, the message suggests ``--on_bad_audio=skip``."""
    hint = "; rerun with --on_bad_audio=skip to leave them out" if skippable else ""
    return RuntimeError(
        f"{len(unreadable)} {what} cannot be read by soundfile (first "
        f"{min(len(unreadable), MAX_LISTED_FILES)} listed{hint}):\n{format_file_list(unreadable)}"
    )
