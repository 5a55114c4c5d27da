"""The inputs of :meth:`NoiseScaleEstimator.update` from torch gradients.

On one process with several gradients (per-replica gradients gathered, or the
micro-batches of an accumulated step on one GPU), :func:`noise_inputs` does it
all. Under data parallelism each worker holds only its own gradient: it reports
:func:`sqr_norm` of its local gradient before the all-reduce, and any one worker
:func:`sqr_norm` of the averaged gradient after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

Grads = Sequence[torch.Tensor | None]
"""One gradient: a tensor per parameter (None for a parameter without a gradient)."""


def sqr_norm(grads: Iterable[torch.Tensor | None]) -> float:
    """Squared L2 norm of one gradient over all its tensors, summed in float64."""
    total = torch.zeros((), dtype=torch.float64)
    for grad in grads:
        if grad is not None:
            total += grad.detach().to(torch.float64).pow(2).sum().cpu()
    return float(total)


def mean_grads(replica_grads: Sequence[Grads]) -> list[torch.Tensor | None]:
    """The elementwise mean of several gradients of the same parameters."""
    out: list[torch.Tensor | None] = []
    for tensors in zip(*replica_grads, strict=True):
        present = [t.detach().to(torch.float64) for t in tensors if t is not None]
        if present and len(present) != len(tensors):
            raise ValueError("a parameter has a gradient on some replicas but not on others")
        out.append(torch.stack(present).mean(dim=0) if present else None)
    return out


def noise_inputs(replica_grads: Sequence[Grads]) -> tuple[list[float], float]:
    """``(local_sqr_norms, mean_sqr_norm)``: |g_i|^2 of each gradient and |mean g_i|^2.

    ``replica_grads[i]`` is the i-th gradient (replica or micro-batch), all from
    batches of the same size; at least two are needed.
    """
    if len(replica_grads) < 2:
        raise ValueError("need the gradients of at least 2 replicas or micro-batches")
    return [sqr_norm(g) for g in replica_grads], sqr_norm(mean_grads(replica_grads))


def parameter_grads(module: torch.nn.Module) -> list[torch.Tensor | None]:
    """A detached copy of the gradient of each of ``module``'s parameters."""
    return [None if p.grad is None else p.grad.detach().clone() for p in module.parameters()]
