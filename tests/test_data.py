"""Datasets: cleaning counts, seeded splits, train-only normalisation, file formats, augment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from costsched.config.job import AugmentConfig, DatasetConfig
from costsched.errors import ConfigError
from costsched.training.data import augment, clean, load_raw, prepare

NAN, INF = float("nan"), float("inf")


# -- clean ---------------------------------------------------------------------------------

def test_clean_drops_non_finite_rows_then_exact_duplicates_in_order():
    x = np.array([
        [1.0, 2.0],   # kept
        [NAN, 2.0],   # non-finite
        [1.0, 2.0],   # duplicate of row 0 (same label)
        [1.0, 2.0],   # same features, other label: not a duplicate
        [3.0, INF],   # non-finite
        [5.0, 6.0],   # kept
        [-INF, 0.0],  # non-finite
        [5.0, 6.0],   # duplicate of row 5
        [7.0, 8.0],   # non-finite label below
    ])
    y = np.array([0, 1, 0, 1, 2, 2, 0, 2, NAN])
    x_out, y_out, report = clean(x, y)
    np.testing.assert_array_equal(x_out, [[1.0, 2.0], [1.0, 2.0], [5.0, 6.0]])
    np.testing.assert_array_equal(y_out, [0, 1, 2])
    assert (report.num_rows_in, report.num_non_finite, report.num_duplicates) == (9, 4, 2)
    assert report.num_rows_out == 3


def test_clean_keeps_image_shaped_rows():
    x = np.arange(3 * 2 * 2, dtype=float).reshape(3, 2, 2)
    x[2] = x[0]
    x_out, y_out, report = clean(x, np.array([4, 5, 4]))
    assert x_out.shape == (2, 2, 2) and report.num_duplicates == 1
    np.testing.assert_array_equal(y_out, [4, 5])


def write_csv(path: Path, rows: list[list[float]]) -> Path:
    pd.DataFrame(rows, columns=["a", "b", "label"]).to_csv(path, index=False)
    return path


def test_dataset_left_empty_by_cleaning_is_a_config_error(tmp_path):
    path = write_csv(tmp_path / "bad.csv", [[NAN, 1, 0], [1, INF, 1], [2, 2, NAN]])
    with pytest.raises(ConfigError, match=r"no rows left after dropping 3 non-finite"):
        prepare(DatasetConfig(name=str(path)))


def test_dataset_too_small_to_split_is_a_config_error(tmp_path):
    path = write_csv(tmp_path / "tiny.csv", [[1, 1, 0], [2, 2, 1]])
    with pytest.raises(ConfigError, match="too few to split"):
        prepare(DatasetConfig(name=str(path)))


# -- prepare on digits ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_seed0():
    return prepare(DatasetConfig(name="digits", seed=0))


def test_digits_split_sizes_follow_the_fractions(digits_seed0):
    s = digits_seed0
    assert s.cleaning.num_rows_out == 1797
    assert (len(s.x_test), len(s.x_val), len(s.x_train)) == (180, 180, 1437)  # round(179.7)
    assert len(s.y_train) == len(s.x_train) and s.num_classes == 10
    assert s.input_shape == (64,)
    assert s.x_train.dtype == np.float32 and s.y_train.dtype == np.int64


def test_digits_splits_are_deterministic_by_seed_and_disjoint(digits_seed0):
    again = prepare(DatasetConfig(name="digits", seed=0))
    other = prepare(DatasetConfig(name="digits", seed=1))
    for name in ("x_train", "y_train", "x_val", "x_test"):
        np.testing.assert_array_equal(getattr(digits_seed0, name), getattr(again, name))
    assert not np.array_equal(digits_seed0.y_train, other.y_train)

    # digits has no duplicate images, and normalisation maps rows one to one
    keys = [{row.tobytes() for row in part}
            for part in (digits_seed0.x_train, digits_seed0.x_val, digits_seed0.x_test)]
    assert sum(map(len, keys)) == 1797
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])


def test_digits_train_split_is_standardised(digits_seed0):
    x = digits_seed0.x_train.astype(np.float64)
    std = x.std(axis=0)
    varying = std > 0
    assert varying.sum() > 50  # digits has a few always-blank pixels
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(std[varying], 1.0, atol=1e-4)
    assert np.all(x[:, ~varying] == 0.0)  # constant features stay finite (zero)


def write_id_dataset(path: Path, n: int = 200, seed: int = 3) -> np.ndarray:
    """An .npz whose label is the row id, so splits can be traced back to raw rows.

    Rows with NaN and a duplicate are appended; cleaning drops them and keeps ids 0..n-1.
    """
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(5, 3, n), rng.exponential(2, n), rng.integers(0, 9, n),
                         np.full(n, 7.0)])
    labels = np.arange(n)
    bad = x[:3].copy()
    bad[:, 1] = NAN
    x_all = np.concatenate([x, bad, x[[10]]])
    labels_all = np.concatenate([labels, [n, n + 1, n + 2], [10]])
    np.savez(path, x=x_all, label=labels_all)
    return x


def test_val_and_test_are_normalised_with_train_statistics(tmp_path):
    raw = write_id_dataset(tmp_path / "ids.npz")
    splits = prepare(DatasetConfig(name=str(tmp_path / "ids.npz"), seed=5))
    assert (splits.cleaning.num_non_finite, splits.cleaning.num_duplicates) == (3, 1)
    ids = np.concatenate([splits.y_train, splits.y_val, splits.y_test])
    assert sorted(ids.tolist()) == list(range(len(raw)))  # every row in exactly one split
    train = raw[splits.y_train]
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[std == 0] = 1.0
    for x_part, y_part in ((splits.x_train, splits.y_train), (splits.x_val, splits.y_val),
                           (splits.x_test, splits.y_test)):
        np.testing.assert_allclose(x_part, (raw[y_part] - mean) / std, rtol=1e-5, atol=1e-5)
    # statistics of all rows would give a visibly different validation split
    all_mean = raw.mean(axis=0)
    assert not np.allclose(splits.x_val[:, 0], (raw[splits.y_val, 0] - all_mean[0]) / std[0],
                           atol=1e-6)


# -- file datasets -------------------------------------------------------------------------

def messy_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 3)), columns=["f0", "f1", "f2"])
    frame["target"] = rng.integers(0, 3, 40)
    frame.loc[[2, 9], "f1"] = NAN
    frame.loc[15, "f2"] = INF
    return pd.concat([frame, frame.iloc[[0, 5]]], ignore_index=True)  # 2 duplicate rows


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".npz"])
def test_file_datasets_load_clean_and_split(tmp_path, suffix):
    frame = messy_frame()
    path = tmp_path / f"data{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    elif suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        np.savez(path, x=frame[["f0", "f1", "f2"]].to_numpy(), target=frame["target"].to_numpy())
    config = DatasetConfig(name=str(path), label_column="target", seed=1)
    x, y = load_raw(config)
    assert x.shape == (42, 3) and len(y) == 42
    splits = prepare(config)
    c = splits.cleaning
    assert (c.num_rows_in, c.num_non_finite, c.num_duplicates, c.num_rows_out) == (42, 3, 2, 37)
    assert len(splits.x_train) + len(splits.x_val) + len(splits.x_test) == 37
    assert np.isfinite(splits.x_train).all() and splits.input_shape == (3,)
    assert set(np.concatenate([splits.y_train, splits.y_val, splits.y_test])) <= {0, 1, 2}


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_wrong_label_column_names_the_available_columns(tmp_path, suffix):
    frame = messy_frame()
    path = tmp_path / f"data{suffix}"
    frame.to_parquet(path) if suffix == ".parquet" else frame.to_csv(path, index=False)
    with pytest.raises(ConfigError, match=r"no label column `label`; set `dataset.label_column` "
                                          r"to one of f0, f1, f2, target"):
        prepare(DatasetConfig(name=str(path)))


def test_npz_without_the_label_array_names_its_arrays(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((4, 2)), y=np.zeros(4))
    with pytest.raises(ConfigError, match=r"needs arrays `x` and `label`; it has"):
        prepare(DatasetConfig(name=str(path)))


def test_non_numeric_feature_column_is_a_config_error(tmp_path):
    path = tmp_path / "data.csv"
    pd.DataFrame({"colour": ["red", "blue", "red"], "label": [0, 1, 0]}).to_csv(path, index=False)
    with pytest.raises(ConfigError, match="feature columns must be numeric"):
        prepare(DatasetConfig(name=str(path)))


def test_string_class_labels_load_or_are_a_config_error(tmp_path):
    path = tmp_path / "data.csv"
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(30, 2)), columns=["a", "b"])
    frame["label"] = ["cat", "dog", "bird"] * 10
    frame.to_csv(path, index=False)
    try:
        splits = prepare(DatasetConfig(name=str(path)))
    except ConfigError:
        return
    assert splits.num_classes == 3


# -- augment and mnist1d -------------------------------------------------------------------

@pytest.mark.parametrize("config", [AugmentConfig(max_shift=3), AugmentConfig(noise_std=0.5),
                                    AugmentConfig(max_shift=2, noise_std=0.1)])
def test_augment_is_deterministic_per_seed_and_keeps_shape(config):
    batch = np.random.default_rng(0).normal(size=(16, 20)).astype(np.float32)
    a = augment(batch, config, np.random.default_rng(7))
    b = augment(batch, config, np.random.default_rng(7))
    c = augment(batch, config, np.random.default_rng(8))
    assert a.shape == batch.shape and a.dtype == batch.dtype
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, batch)


def test_augment_shift_is_a_bounded_circular_roll():
    batch = np.tile(np.arange(10, dtype=np.float32), (50, 1))
    out = augment(batch, AugmentConfig(max_shift=2), np.random.default_rng(0))
    seen = set()
    for row in out:
        shift = [s for s in range(-2, 3) if np.array_equal(row, np.roll(batch[0], s))]
        assert len(shift) == 1, row
        seen.add(shift[0])
    assert seen == {-2, -1, 0, 1, 2}


def test_augment_noise_has_the_configured_std():
    batch = np.zeros((200, 50), dtype=np.float32)
    out = augment(batch, AugmentConfig(noise_std=0.3), np.random.default_rng(0))
    assert out.std() == pytest.approx(0.3, rel=0.05)


def test_augment_off_returns_the_batch_unchanged():
    batch = np.ones((4, 5), dtype=np.float32)
    np.testing.assert_array_equal(augment(batch, AugmentConfig(), np.random.default_rng(0)),
                                  batch)


def test_mnist1d_is_generated_deterministically_by_seed():
    x0, y0 = load_raw(DatasetConfig(name="mnist1d", num_samples=500, seed=0))
    x0b, y0b = load_raw(DatasetConfig(name="mnist1d", num_samples=500, seed=0))
    x1, _ = load_raw(DatasetConfig(name="mnist1d", num_samples=500, seed=1))
    assert x0.shape[0] == 500 and len(y0) == 500 and x0.shape[1] > 1
    np.testing.assert_array_equal(x0, x0b)
    np.testing.assert_array_equal(y0, y0b)
    assert not np.array_equal(x0, x1)


def test_a_prepared_dataset_is_read_back_from_the_cache_and_a_changed_file_is_not(
        tmp_path, monkeypatch):
    monkeypatch.setenv("COSTSCHED_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "data.csv"
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    frame["label"] = rng.integers(0, 3, size=200)
    frame.to_csv(path, index=False)
    first = prepare(DatasetConfig(name=str(path)))
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    again = prepare(DatasetConfig(name=str(path)))
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    assert (again.num_classes, again.cleaning) == (first.num_classes, first.cleaning)

    frame.iloc[:100].to_csv(path, index=False)  # new content: prepared anew
    assert len(prepare(DatasetConfig(name=str(path))).x_train) < len(first.x_train)
    assert len(prepare(DatasetConfig(name=str(path), seed=1)).x_train) < len(first.x_train)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3
