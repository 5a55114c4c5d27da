"""Where the shipped configs live, and how a user overrides them.

The price catalog and the example configs are package data (``costsched/configs``),
so a plain ``pip install .`` finds them from any folder. ``$COSTSCHED_PRICES`` (or a
command's ``--prices``) replaces the catalog; every command that takes a config takes
a path of the user's own.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

PRICES_ENV = "COSTSCHED_PRICES"
"""Environment variable naming a price catalog YAML to use instead of the shipped one."""


def bundled_config(name: str) -> Path:
    """Path of a config shipped with the package, e.g. ``bundled_config("quickstart.yaml")``."""
    return Path(str(files("costsched.configs").joinpath(name)))


def default_catalog_path() -> Path:
    """``$COSTSCHED_PRICES`` when set, else the shipped ``prices.yaml``."""
    override = os.environ.get(PRICES_ENV)
    return Path(override).expanduser() if override else bundled_config("prices.yaml")
