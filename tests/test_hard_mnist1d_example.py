"""``examples/make_hard_mnist1d.py`` writes a data file the loader takes, the same bytes
every time, and the example's job and sweep configs load with it; a sweep's trials see
the data file by an absolute path (Tune runs each trial in its own folder)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from costsched.config.job import DatasetConfig, load_job_config
from costsched.cost.forecast import profile_rows
from costsched.sweep.config import load_sweep, value_in_job
from costsched.training.data import load_raw, prepare

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hard_mnist1d"
SCRIPT = EXAMPLE.parent / "make_hard_mnist1d.py"


def _script():
    spec = importlib.util.spec_from_file_location("make_hard_mnist1d", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a small ``hard_mnist1d.npz``, as the example's folder would."""
    folder = tmp_path_factory.mktemp("hard_mnist1d")
    assert _script().main(["--out", str(folder / "hard_mnist1d.npz"), "--num-samples", "200"]) == 0
    return folder


def test_the_loader_takes_the_written_file(data_dir: Path) -> None:
    x, y = load_raw(DatasetConfig(name=str(data_dir / "hard_mnist1d.npz")))
    assert x.shape == (200, 40) and y.shape == (200,)
    assert sorted(np.unique(y)) == list(range(10))
    splits = prepare(DatasetConfig(name=str(data_dir / "hard_mnist1d.npz")))
    assert splits.input_shape == (40,) and splits.num_classes == 10


def test_the_file_is_written_again_byte_for_byte(data_dir: Path, tmp_path: Path) -> None:
    _script().main(["--out", str(tmp_path / "again.npz"), "--num-samples", "200"])
    assert (tmp_path / "again.npz").read_bytes() == (data_dir / "hard_mnist1d.npz").read_bytes()


def test_it_is_harder_than_the_builtin_data() -> None:
    """More noise and shear than the generator's defaults, the built-in `mnist1d`."""
    from mnist1d.data import get_dataset_args

    defaults = vars(get_dataset_args())
    assert all(value > defaults[name] for name, value in _script().HARDER.items())


def test_the_example_configs_load_from_the_data_folder(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(data_dir)  # the data path is relative to where the job is run
    job = load_job_config(EXAMPLE / "job.yaml")
    sweep = load_sweep(EXAMPLE / "sweep.yaml")
    assert job.dataset.name == "hard_mnist1d.npz"
    assert sweep.config.target_value == job.training.target_value
    assert sweep.base["dataset"]["name"] == str(data_dir / "hard_mnist1d.npz")
    for key in sweep.config.space:
        value_in_job(sweep.base_job, key)  # every searched field is one of the job's


@pytest.mark.parametrize(("num_train_rows", "steps_per_epoch", "rows_kept"), [
    (4800, 37, 4800),  # this example: 37 steps of 128 are its whole epoch, 64 rows left over
    (6400, 50, 6400),  # the quickstart's split: 50 steps, no rows left over
    (40_000, 312, 100 * 128),  # a longer epoch: the profile's 100 steps only
])
def test_a_profile_of_whole_epochs_keeps_every_row(data_dir: Path, num_train_rows: int,
                                                   steps_per_epoch: int, rows_kept: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile keeps its learning curve (the target forecast) only when it trained on
    all the rows: an epoch whose last partial batch is no step is still whole."""
    monkeypatch.chdir(data_dir)
    job = load_job_config(EXAMPLE / "job.yaml")  # batch 128, checkpoint every 50 steps
    assert profile_rows(job, num_train_rows, steps_per_epoch) == rows_kept
