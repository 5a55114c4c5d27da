"""Per-node temp folders for a multi-node test cluster on one host."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ray._private.utils import get_ray_address_file


def node_temp_root() -> Path:
    """A new short folder under which each node gets its own temp folder (short:
    Ray's socket paths must fit 107 bytes).

    A head started with its own temp folder still records its address in Ray's
    default one, which a machine that never ran Ray lacks and Ray does not create
    there: made here.
    """
    Path(get_ray_address_file(None)).parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="cs-"))
