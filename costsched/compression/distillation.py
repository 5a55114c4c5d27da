"""Knowledge distillation from a teacher checkpoint written by a training job."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    weight: float,
) -> torch.Tensor:
    """Hinton et al. distillation loss, averaged over the batch.

    ``weight * T**2 * KL(softmax(t / T) || softmax(s / T)) + (1 - weight) * CE(s, labels)``.
    The ``T**2`` keeps the soft term's gradient scale independent of ``T``. No gradient
    flows into the teacher logits.
    """
    ce = F.cross_entropy(student_logits, labels)
    if weight == 0.0:
        return ce
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return weight * temperature**2 * kl + (1.0 - weight) * ce


def load_teacher(path: str | Path, build_fn: Callable[[], nn.Module]) -> nn.Module:
    """Build a model with ``build_fn()`` and load the weights of checkpoint ``path``.

    Accepts a training job's ``state.pt`` (a dict whose ``"model"`` entry is the
    state_dict) or a bare state_dict. The teacher is returned in eval mode, frozen.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "state.pt"
    if not path.is_file():
        raise FileNotFoundError(f"teacher checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    teacher = build_fn()
    teacher.load_state_dict(state)
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher
