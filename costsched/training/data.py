"""Datasets and preprocessing as plain numpy: load, clean, split, normalise, augment.

Built-ins: ``digits`` (scikit-learn's bundled 8x8 handwritten digits, 1,797 real
images) and ``mnist1d`` (generated locally by the ``mnist1d`` package, seeded,
any size). User data: a .parquet/.csv file with feature columns and a label
column, or an .npz file with arrays ``x`` and the label array.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from costsched.config.job import AugmentConfig, DatasetConfig
from costsched.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class CleaningReport:
    num_rows_in: int
    """Rows read."""
    num_non_finite: int
    """Rows dropped for a NaN or infinite feature or label."""
    num_duplicates: int
    """Exact duplicate rows (features and label) dropped after the first."""

    @property
    def num_rows_out(self) -> int:
        return self.num_rows_in - self.num_non_finite - self.num_duplicates


@dataclass(frozen=True, kw_only=True)
class Splits:
    """Normalised train/val/test arrays; features float32, labels int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    cleaning: CleaningReport

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def load_raw(config: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(N, ...)`` and integer labels ``(N,)`` of the configured dataset."""
    if config.name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.data.astype(np.float64), bunch.target.astype(np.int64)
    if config.name == "mnist1d":
        return _generate_mnist1d(config.num_samples, config.seed)
    return _load_file(Path(config.name), config.label_column)


def _generate_mnist1d(num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    data = make_dataset(args)  # generated locally; nothing is downloaded
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float64)
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    return x, y


def _load_file(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    if path.suffix == ".npz":
        with np.load(path) as arrays:
            if "x" not in arrays or label_column not in arrays:
                raise ConfigError(
                    f"{path}: an .npz needs arrays `x` and `{label_column}`; "
                    f"it has {', '.join(arrays.files)}"
                )
            return arrays["x"].astype(np.float64), arrays[label_column]
    import pandas as pd

    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    if label_column not in frame.columns:
        raise ConfigError(
            f"{path}: no label column `{label_column}`; set `dataset.label_column` "
            f"to one of {', '.join(map(str, frame.columns))}"
        )
    features = frame.drop(columns=[label_column])
    non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric:
        raise ConfigError(f"{path}: feature columns must be numeric; not: {non_numeric[:5]}")
    return features.to_numpy(np.float64), frame[label_column].to_numpy()


def clean(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, CleaningReport]:
    """Drop rows with a non-finite value or missing label, then exact duplicates.

    Labels may be numbers or strings; duplicates compare features and label,
    keeping the first occurrence, in order.
    """
    flat = x.reshape(len(x), -1)
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.number):
        label_ok = np.isfinite(y.astype(np.float64))
    else:
        label_ok = np.array([v is not None and v == v for v in y], dtype=bool)  # NaN != NaN
    finite = np.isfinite(flat).all(axis=1) & label_ok
    flat, x, y = flat[finite], x[finite], y[finite]
    _, label_codes = np.unique(y.astype(str) if y.dtype == object else y, return_inverse=True)
    rows = np.concatenate([flat, label_codes[:, None].astype(np.float64)], axis=1)
    _, first = np.unique(rows, axis=0, return_index=True)
    keep = np.sort(first)
    report = CleaningReport(
        num_rows_in=len(finite),
        num_non_finite=int((~finite).sum()),
        num_duplicates=len(x) - len(keep),
    )
    return x[keep], y[keep], report


CACHE_DIR_ENV = "COSTSCHED_CACHE_DIR"
"""Where prepared datasets are kept (default ``~/.cache/costsched/datasets``; each
host its own: only the process that prepares a job's data reads it)."""
CACHE_MAX_BYTES = 256 * 2**20
"""Prepared splits larger than this are not kept."""


def _cache_path(config: DatasetConfig) -> Path | None:
    """The cache file of ``config``'s prepared splits: named by everything that decides
    them (for a file, its path, size and modification time); None if it cannot be."""
    key = [config.name, config.num_samples, config.label_column, config.val_fraction,
           config.test_fraction, config.seed]
    if config.is_file:
        try:
            stat = Path(config.name).stat()
        except OSError:
            return None
        key += [str(Path(config.name).resolve()), stat.st_size, stat.st_mtime_ns]
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:24]
    root = os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "costsched" / "datasets"
    return Path(root) / f"{digest}.npz"


def prepare(config: DatasetConfig) -> Splits:
    """Load, clean, split by seed, and normalise with train-split statistics only.

    The result is kept in a local cache (see :data:`CACHE_DIR_ENV`), so a job that
    restarts, or is priced and then run, prepares its data once (generating the
    quickstart's MNIST-1D takes seconds)."""
    path = _cache_path(config)
    if path is not None and path.is_file():
        try:
            with np.load(path) as saved:
                return Splits(**{k: saved[k] for k in SPLIT_ARRAYS},
                              num_classes=int(saved["num_classes"]),
                              cleaning=CleaningReport(**dict(zip(
                                  CLEANING_FIELDS, map(int, saved["cleaning"]), strict=True))))
        except (OSError, ValueError, KeyError):
            pass  # unreadable (cut short, older layout): prepare it again
    splits = _prepare(config)
    arrays = {k: getattr(splits, k) for k in SPLIT_ARRAYS}
    if path is not None and sum(a.nbytes for a in arrays.values()) <= CACHE_MAX_BYTES:
        c = splits.cleaning
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, **arrays, num_classes=splits.num_classes,
                     cleaning=[getattr(c, f) for f in CLEANING_FIELDS])
            tmp.replace(path)
        except OSError:
            pass  # a read-only home: no cache, same data
    return splits


SPLIT_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
CLEANING_FIELDS = ("num_rows_in", "num_non_finite", "num_duplicates")


def _prepare(config: DatasetConfig) -> Splits:
    x, y = load_raw(config)
    x, y, report = clean(x, y)
    if report.num_rows_out == 0:
        raise ConfigError(
            f"dataset {config.name}: no rows left after dropping {report.num_non_finite} "
            f"non-finite and {report.num_duplicates} duplicate rows; check the data"
        )
    classes, y = np.unique(y.astype(str) if y.dtype == object else y, return_inverse=True)
    order = np.random.default_rng(config.seed).permutation(len(x))
    n_test = max(1, round(len(x) * config.test_fraction))
    n_val = max(1, round(len(x) * config.val_fraction))
    if len(x) - n_test - n_val < 1:
        raise ConfigError(f"dataset {config.name}: {len(x)} rows are too few to split")
    test, val, train = np.split(order, [n_test, n_test + n_val])
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0  # constant features stay finite (and zero)

    def norm(rows: np.ndarray) -> np.ndarray:
        return ((x[rows] - mean) / std).astype(np.float32)

    return Splits(
        x_train=norm(train), y_train=y[train], x_val=norm(val), y_val=y[val],
        x_test=norm(test), y_test=y[test], num_classes=len(classes), cleaning=report,
    )


def augment(batch: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Random circular shift along the last axis and additive Gaussian noise."""
    out = batch
    if config.max_shift > 0:
        shifts = rng.integers(-config.max_shift, config.max_shift + 1, size=len(batch))
        out = np.stack([np.roll(row, s, axis=-1) for row, s in zip(out, shifts, strict=True)])
    if config.noise_std > 0:
        out = out + rng.normal(0.0, config.noise_std, size=out.shape).astype(out.dtype)
    return out
