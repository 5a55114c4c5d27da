"""Shared fixtures: repository paths and a job-config builder."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
SHARED_DATA = REPO.parent / "shared" / "data"


def quickstart_dict() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(QUICKSTART.read_text()))


@pytest.fixture
def write_job(tmp_path: Path):
    """Write the quickstart config with ``changes`` (dotted keys) applied; return its path."""

    def write(changes: dict[str, Any] | None = None, name: str = "job.yaml") -> Path:
        data = quickstart_dict()
        data["storage_path"] = str(tmp_path / "runs")
        data["ledger_path"] = str(tmp_path / "ledger.db")
        for dotted, value in (changes or {}).items():
            *parents, leaf = dotted.split(".")
            node = data
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return write
