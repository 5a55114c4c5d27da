"""Learning-curve fit: epochs to a target predicted from a run's first epochs.

Three measured validation curves (`costsched train` on 2026-12-01: the quickstart
with its target removed, the sweep base job with its target removed, and
examples/hard_mnist1d/job.yaml with its target removed; per-epoch `val_accuracy`
from each run's ledger row), three targets each that the run reached. For each,
the curve is fitted to the first 3 epochs (what a profile measures), and to a
quarter and a half of the epochs the run took to reach the target (when more than
3), and the predicted first epoch at or past the target is compared with the
epoch the run reached it. Printed for the fit as shipped
(`costsched.cost.forecast.fit_curve`) and for the same fit without the ceiling
prior and with the wide exponent grid it had before.

    python bench/curve_fit.py
"""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from costsched.cost import forecast  # noqa: E402

CURVES = {
    "quickstart": ([0.7512, 0.86, 0.86, 0.9525, 0.8938, 0.9325, 0.9575, 0.965, 0.9725,
                    0.9712, 0.9587, 0.9575, 0.9738, 0.9712, 0.9775, 0.9738, 0.98, 0.9788,
                    0.975, 0.98, 0.9788, 0.98, 0.98, 0.9812, 0.9788, 0.9788, 0.98, 0.98,
                    0.9812, 0.9825], (0.9, 0.95, 0.97)),
    "sweep base": ([0.801, 0.9375, 0.9465, 0.9595, 0.9795, 0.9715, 0.967, 0.9775, 0.9785,
                    0.976, 0.9705, 0.9715, 0.9845, 0.9805, 0.9795, 0.979, 0.979, 0.9835,
                    0.984, 0.981, 0.9815, 0.986, 0.985, 0.9845, 0.9855, 0.982, 0.9865,
                    0.988, 0.986, 0.9855, 0.9865, 0.9865, 0.987, 0.986, 0.9865, 0.986,
                    0.9865, 0.986, 0.987, 0.9865], (0.95, 0.97, 0.98)),
    "hard MNIST-1D": ([0.3133, 0.355, 0.4133, 0.4433, 0.3867, 0.4417, 0.5583, 0.5417,
                       0.5933, 0.5783, 0.5967, 0.6233, 0.6267, 0.6517, 0.645],
                      (0.5, 0.55, 0.6)),
}


def cases():
    for name, (accuracy, targets) in CURVES.items():
        for target in targets:
            reached = next(i + 1 for i, a in enumerate(accuracy) if a >= target)
            for seen in sorted({3, reached // 4, reached // 2}):
                if 3 <= seen < reached:
                    yield name, target, seen, reached, accuracy[:seen]


def predicted(accuracy: list[float], target: float) -> int | None:
    curve = forecast.fit_curve(accuracy)
    epochs = curve.epochs_to(target) if curve else None
    return None if epochs is None else max(math.ceil(epochs), len(accuracy) + 1)


def main() -> int:
    settings = {
        "as shipped": {},
        "no prior, exponents 0.05-4": {"CEILING_PRIOR_WEIGHT": 0.0,
                                       "_EXPONENTS": np.geomspace(0.05, 4.0, 80)},
    }
    print(f"{'curve':14} {'target':>6} {'seen':>4} {'reached':>7} "
          + " ".join(f"{k:>28}" for k in settings))
    tallies = {k: [] for k in settings}
    for name, target, seen, reached, accuracy in cases():
        row = []
        for label, patch in settings.items():
            with mock.patch.multiple(forecast, **patch) if patch else contextlib.nullcontext():
                guess = predicted(accuracy, target)
            tallies[label].append(None if guess is None else abs(guess - reached) / reached)
            row.append("out of reach" if guess is None else str(guess))
        print(f"{name:14} {target:>6} {seen:>4} {reached:>7} "
              + " ".join(f"{r:>28}" for r in row))
    for label, errors in tallies.items():
        known = [e for e in errors if e is not None]
        print(f"{label}: 'out of reach' {len(errors) - len(known)} of {len(errors)}; "
              f"epoch-to-target error median {np.median(known):.0%}, mean {np.mean(known):.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
