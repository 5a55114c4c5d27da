"""Shared by the tests: repository paths and the quickstart job as a mapping."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


def quickstart_dict() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(QUICKSTART.read_text()))
