"""Shared by the benchmarks: a job derived from the quickstart config, in a scratch folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from costsched.config.job import JobConfig, load_job_config  # noqa: E402


def quickstart_job(workdir: Path, name: str, changes: dict[str, dict[str, Any]]) -> JobConfig:
    """The quickstart job renamed, with ``changes`` ({section: {key: value}}) applied,
    storing its checkpoints and ledger under ``workdir``."""
    data = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    data["name"] = name
    for section, values in changes.items():
        data[section].update(values)
    data["storage_path"] = str(workdir / "runs")
    data["ledger_path"] = str(workdir / "ledger.db")
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_job_config(path)
