"""Shared by the tests: repository paths and the quickstart job as a mapping."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
# Prepared datasets are cached for the session (and the Ray workers and CLI
# subprocesses it starts), not in the home folder of whoever runs the tests.
os.environ.setdefault("COSTSCHED_CACHE_DIR", tempfile.mkdtemp(prefix="costsched-test-cache-"))


def quickstart_dict() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(QUICKSTART.read_text()))


@pytest.fixture
def hold():
    """hold(node_id): other work on one ``cpu_slot`` of that node of a real-Ray test's
    cluster, ended after the test (``tests/support/other_work.py``)."""
    from tests.support.other_work import holding

    yield from holding()
