"""Bad input through the real command line: one line on stderr, exit 2, nothing written.

Each case runs ``python -m costsched.cli.main`` in a fresh process with HOME in a
temporary folder (the default ledger and run folders live under it) and a time
limit, so a command that hangs on bad input fails its test instead of the run.
No case starts Ray: the input is refused before any work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from costsched.config.job import MAX_DATA_FILE_BYTES, MAX_NUM_SAMPLES

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
TIMEOUT_S = 60


def job_yaml(folder: Path, dataset: dict) -> Path:
    """The quickstart job with ``dataset`` merged in, ledger and runs at their defaults
    (under HOME)."""
    data = yaml.safe_load(QUICKSTART.read_text())
    data["dataset"].update(dataset)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def non_utf8(folder: Path) -> Path:
    path = folder / "job.yaml"
    path.write_bytes(QUICKSTART.read_bytes().replace(b"quickstart", b"quick\xffstart", 1))
    return path


def too_many_samples(folder: Path) -> Path:
    return job_yaml(folder, {"num_samples": 10_000_000_000})


def folder_named_like_a_csv(folder: Path) -> Path:
    (folder / "x.csv").mkdir()
    return job_yaml(folder, {"name": str(folder / "x.csv")})


def folder_as_dataset(folder: Path) -> Path:
    (folder / "data").mkdir()
    return job_yaml(folder, {"name": str(folder / "data")})


def data_file_too_large(folder: Path) -> Path:
    data = folder / "big.csv"
    with data.open("wb") as handle:  # sparse: no disk is used
        handle.truncate(MAX_DATA_FILE_BYTES + 1)
    return job_yaml(folder, {"name": str(data)})


def unknown_dataset(folder: Path) -> Path:
    return job_yaml(folder, {"name": "mnist"})


CASES: list[tuple[str, Callable[[Path], Path], list[str], list[str]]] = [
    # (id, make the input, command before the config path, words the message must have)
    ("non-utf8", non_utf8, ["train"], ["not UTF-8", "job.yaml"]),
    ("non-utf8-quickstart", non_utf8, ["quickstart", "--config"], ["not UTF-8"]),
    ("non-utf8-dry-run", non_utf8, ["train", "--dry-run"], ["not UTF-8"]),
    ("num-samples", too_many_samples, ["train", "--dry-run"],
     ["`dataset.num_samples`", f"at most {MAX_NUM_SAMPLES:,}"]),
    ("num-samples-run", too_many_samples, ["train"], [f"at most {MAX_NUM_SAMPLES:,}"]),
    ("folder-x.csv", folder_named_like_a_csv, ["train"], ["x.csv' is a folder"]),
    ("folder", folder_as_dataset, ["train"], ["data' is a folder", "built-in dataset"]),
    ("data-file-size", data_file_too_large, ["train"],
     [f"{MAX_DATA_FILE_BYTES + 1:,} bytes", f"at most {MAX_DATA_FILE_BYTES:,}"]),
    ("unknown-dataset", unknown_dataset, ["train", "--dry-run"],
     ["neither a built-in dataset", "did you mean `mnist1d`?"]),
]


def run_cli(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "costsched.cli.main", *args], cwd=home,
                          env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def files_under(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*")}


@pytest.mark.parametrize(("make", "command", "words"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, make, command, words):
    config = make(tmp_path)
    before = files_under(tmp_path)
    proc = run_cli([*command, str(config)], tmp_path)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"costsched {command[0]}: error: ")
    for word in words:
        assert word in lines[0]
    assert "known values" not in lines[0]
    assert proc.stdout == ""
    assert files_under(tmp_path) == before, "the command wrote files"
    assert not (tmp_path / ".costsched").exists() and not (tmp_path / ".ray").exists()


def test_submit_of_a_non_utf8_config_is_one_line(tmp_path):
    """Refused while reading the file, before looking for a cluster."""
    proc = run_cli(["submit", str(non_utf8(tmp_path))], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "UTF-8" in proc.stderr, proc.stderr
