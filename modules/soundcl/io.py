"""Writing files so that a kill never leaves a half-written one."""
import json
import os


def atomic_write_json(path, data, **json_kwargs):
    """Write ``data`` as JSON to ``path`` via a temporary file and ``os.replace``."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, **json_kwargs)
    os.replace(tmp, path)
