"""Write a harder MNIST-1D variant as a user data file (.npz: features `x`, labels `label`).

The cost sweep (`configs/sweep_mnist1d.yaml`) was tuned on the built-in `mnist1d`
dataset with the generator's default arguments. This file is data it never saw: the
same ten templates with twice the correlated and i.i.d. noise and twice the shear,
so a model of the same size learns it more slowly and levels off lower. Generated
locally by the `mnist1d` package (nothing is downloaded) and deterministic by seed:
the data file is not committed, this script makes it again, byte for byte.

    python examples/make_hard_mnist1d.py     # -> examples/hard_mnist1d/hard_mnist1d.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parent / "hard_mnist1d" / "hard_mnist1d.npz"
NUM_SAMPLES = 6000
"""Samples written (600 per class): a few seconds to generate, about 1 MB on disk."""
SEED = 7
"""Generator seed; the sweep's built-in data uses seed 0."""
HARDER = {
    "corr_noise_scale": 0.5,  # default 0.25
    "iid_noise_scale": 0.05,  # default 0.02
    "shear_scale": 1.5,  # default 0.75
}
"""The generator arguments changed from `mnist1d.data.get_dataset_args()`."""


def make_hard_mnist1d(num_samples: int = NUM_SAMPLES,
                      seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(num_samples, 40)`` float32 and labels ``(num_samples,)`` int64."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    for name, value in HARDER.items():
        setattr(args, name, value)
    data = make_dataset(args)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    return x, y


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the .npz to write")
    parser.add_argument("--num-samples", type=int, default=NUM_SAMPLES)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    x, y = make_hard_mnist1d(args.num_samples, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, x=x, label=y)
    print(f"wrote {args.out}: x {x.shape} {x.dtype}, label {y.shape}, "
          f"{args.out.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
