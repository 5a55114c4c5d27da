"""A GPT-style character language model, trained on the Python standard library's source.

The job's entrypoint (``charlm:train_loop``), written only against ``costsched.api``.
Every machine with Python has the text offline: the first ``max_files`` ``.py`` files
of ``sysconfig.get_paths()["stdlib"]`` in name order, at most ``max_chars``
characters. The vocabulary is built from that text (characters seen fewer than
``min_char_count`` times share one unknown id) and saved in every checkpoint, so a
resumed run encodes exactly as the run it continues. The last ``val_fraction`` of the
text is held out; validation reports ``val_loss`` and next-character
``val_accuracy`` (the metric a ``training.target_metric`` can stop on).

From the job: ``training.global_batch_size`` (windows per optimiser step over all
workers), ``training.num_epochs`` (an epoch is ``windows_per_epoch`` random
windows), ``training.precision``, ``training.seed`` and
``checkpoint.interval_steps``; everything else from ``entrypoint_config``
(:data:`DEFAULTS`).
"""

from __future__ import annotations

import math
import sys
import sysconfig
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

import costsched.api as cs

DEFAULTS: dict[str, Any] = {
    "max_files": 200,          # .py files of the stdlib read, in name order
    "max_chars": 1_000_000,    # characters kept of them
    "min_char_count": 5,       # rarer characters become the unknown id
    "val_fraction": 0.1,       # the tail of the text held out
    "val_windows": 256,        # fixed validation windows, evenly spaced over the tail
    "windows_per_epoch": 8192,
    "context": 64,
    "dim": 64,
    "num_layers": 2,
    "num_heads": 4,
    "dropout": 0.0,
    "lr": 1e-2,
    "min_lr_ratio": 0.1,       # cosine decay to lr * min_lr_ratio at the last step
    "warmup_steps": 20,
    "weight_decay": 0.01,
    "grad_clip_norm": 1.0,
}
UNKNOWN = 0
"""The id of characters outside the vocabulary; ids 1.. are ``vocab``'s characters."""


# -- data ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Corpus:
    vocab: str
    """The vocabulary's characters, in id order from 1."""
    train: torch.Tensor
    val: torch.Tensor


def read_stdlib_text(max_files: int, max_chars: int) -> str:
    """The first ``max_files`` stdlib modules in name order, joined, cut at ``max_chars``."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:max_files]
    parts, size = [], 0
    for path in files:
        if size >= max_chars:
            break
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text)
    if not parts:
        raise RuntimeError(f"no .py files under {sysconfig.get_paths()['stdlib']}")
    return "".join(parts)[:max_chars]


def load_corpus(config: dict[str, Any], vocab: str | None = None) -> Corpus:
    """The encoded text split into train and val; ``vocab`` (from a checkpoint) or a new one."""
    text = read_stdlib_text(config["max_files"], config["max_chars"])
    if vocab is None:
        counts = Counter(text)
        vocab = "".join(sorted(c for c, n in counts.items() if n >= config["min_char_count"]))
    index = {c: i + 1 for i, c in enumerate(vocab)}
    ids = torch.tensor([index.get(c, UNKNOWN) for c in text], dtype=torch.long)
    split = int(len(ids) * (1 - config["val_fraction"]))
    if min(split, len(ids) - split) <= config["context"] + 1:
        raise ValueError(f"{len(ids)} characters are too few for context {config['context']}; "
                         "raise max_chars")
    return Corpus(vocab=vocab, train=ids[:split], val=ids[split:])


class RandomWindows(Dataset):
    """``num_windows`` windows of ``context + 1`` ids at random offsets; :meth:`set_epoch`
    draws each epoch's offsets from ``(seed, epoch)``, so a resumed epoch sees the same."""

    def __init__(self, ids: torch.Tensor, context: int, num_windows: int, seed: int):
        self.ids, self.context, self.num_windows, self.seed = ids, context, num_windows, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        self.starts = torch.randint(0, len(self.ids) - self.context, (self.num_windows,),
                                    generator=generator)

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        window = self.ids[self.starts[i] : self.starts[i] + self.context + 1]
        return window[:-1], window[1:]


def validation_windows(ids: torch.Tensor, context: int, count: int) -> torch.Tensor:
    """``count`` fixed windows evenly spaced over ``ids``: (count, context + 1)."""
    starts = torch.linspace(0, len(ids) - context - 1, count).long()
    return torch.stack([ids[s : s + context + 1] for s in starts.tolist()])


# -- model -----------------------------------------------------------------------------

class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then a 4x MLP."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, t, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class CharGPT(nn.Module):
    """Token and learned position embeddings, ``num_layers`` blocks, a linear head."""

    def __init__(self, *, vocab_size: int, context: int, dim: int, num_layers: int,
                 num_heads: int, dropout: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be a multiple of num_heads {num_heads}")
        self.token, self.position = nn.Embedding(vocab_size, dim), nn.Embedding(context, dim)
        self.blocks = nn.Sequential(*(Block(dim, num_heads, dropout) for _ in range(num_layers)))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, vocab_size, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (batch, time, vocab) for ids (batch, time)."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        return self.head(self.norm(self.blocks(self.token(ids) + self.position(positions))))


# -- training --------------------------------------------------------------------------

def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def local_batch_size(global_batch_size: int, world_size: int) -> int:
    if global_batch_size % world_size:
        raise ValueError(f"training.global_batch_size {global_batch_size} must be a multiple "
                         f"of the {world_size} workers")
    return global_batch_size // world_size


def lr_at(step: int, total_steps: int, config: dict[str, Any]) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at the end."""
    lr, warmup, floor = config["lr"], config["warmup_steps"], config["min_lr_ratio"]
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def fsdp_class(model: nn.Module) -> type | None:
    """torch's FSDP class when ``model`` is wrapped in it, else None. Looked up only once
    Ray has imported it for ``scaling.strategy: fsdp``: importing it costs seconds."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    wrapper = getattr(fsdp, "FullyShardedDataParallel", None)
    return wrapper if wrapper is not None and isinstance(model, wrapper) else None


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimiser state (under FSDP a collective: call on every rank)."""
    fsdp = fsdp_class(model)
    if fsdp is not None:
        return model.state_dict(), fsdp.optim_state_dict(model, optimizer)
    return getattr(model, "module", model).state_dict(), optimizer.state_dict()


def clip_gradients(model: nn.Module, max_norm: float) -> None:
    """Clip the global gradient norm (FSDP computes it over the shards of every rank)."""
    if fsdp_class(model) is not None:
        model.clip_grad_norm_(max_norm)
    else:
        nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def load_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict) -> None:
    fsdp = fsdp_class(model)
    if fsdp is not None:
        saved = fsdp.optim_state_dict_to_load(model, optimizer, saved)
    optimizer.load_state_dict(saved)


def train_loop(config: dict[str, Any]) -> None:
    """Train until ``num_epochs`` are done, the target is reached or costsched says stop."""
    Trainer(DEFAULTS | config).run()


class Trainer:
    """One attempt of the run on one worker, resumed from the newest checkpoint if any."""

    def __init__(self, config: dict[str, Any]):
        ctx = cs.get_context()
        self.config, self.ctx, self.training = config, ctx, ctx.job.training
        self.interval = ctx.job.checkpoint.interval_steps
        torch.manual_seed(self.training.seed)
        state = cs.load_checkpoint()
        self.corpus = load_corpus(config, vocab=state["vocab"] if state else None)
        model = CharGPT(vocab_size=len(self.corpus.vocab) + 1, context=config["context"],
                        dim=config["dim"], num_layers=config["num_layers"],
                        num_heads=config["num_heads"], dropout=config["dropout"])
        if state:
            model.load_state_dict(state["model"])  # before wrapping: the same on every rank
        self.model = cs.prepare_model(model)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config["lr"],
                                           weight_decay=config["weight_decay"])
        self.dtype = autocast_dtype(self.training.precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.training.precision == "fp16")
        self.windows = RandomWindows(self.corpus.train, config["context"],
                                     config["windows_per_epoch"], self.training.seed)
        batch = local_batch_size(self.training.global_batch_size, ctx.world_size)
        # The windows are already random, so no shuffling: each worker takes every
        # world_size-th window through the distributed sampler prepare_data_loader adds.
        self.loader = cs.prepare_data_loader(
            DataLoader(self.windows, batch_size=batch, shuffle=False, drop_last=True))
        self.val = validation_windows(self.corpus.val, config["context"], config["val_windows"])
        self.steps_per_epoch = len(self.loader)
        self.total_steps = self.training.num_epochs * self.steps_per_epoch
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        if state:
            load_optimizer(self.model, self.optimizer, state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
            self.step, self.epoch = state["step"], state["epoch"]
            self.batch_in_epoch = state["batch_in_epoch"]
        self._loss_sum, self._loss_count, self._since = 0.0, 0, time.perf_counter()

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.ctx.device.type, dtype=self.dtype,
                              enabled=self.dtype is not None)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.total_steps, self.config)
        x, y = x.to(self.ctx.device), y.to(self.ctx.device)
        with self.autocast():
            logits = self.model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip_gradients(self.model, self.config["grad_clip_norm"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._loss_sum, self._loss_count = self._loss_sum + loss.item(), self._loss_count + 1

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss and next-character accuracy on the fixed validation windows (every rank
        computes the same numbers; under FSDP the forward passes are collective)."""
        self.model.eval()
        loss_sum, correct, count = 0.0, 0, 0
        for chunk in self.val.split(128):
            chunk = chunk.to(self.ctx.device)
            x, y = chunk[:, :-1], chunk[:, 1:]
            with self.autocast():
                logits = self.model(x).float()
            loss_sum += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
            correct += int((logits.argmax(-1) == y).sum())
            count += y.numel()
        self.model.train()
        return {"val_loss": loss_sum / count, "val_accuracy": correct / count}

    def report(self) -> None:
        """Validation metrics and a checkpoint of everything needed to resume here."""
        seconds = max(time.perf_counter() - self._since, 1e-9)
        epochs = self.epoch + self.batch_in_epoch / self.steps_per_epoch
        metrics = {"global_step": self.step, "epoch": round(epochs, 2),
                   "loss": self._loss_sum / max(1, self._loss_count),
                   "lr": self.optimizer.param_groups[0]["lr"],
                   "samples_per_s": self._loss_count * self.training.global_batch_size / seconds,
                   **self.evaluate()}
        model_state, optimizer_state = full_state(self.model, self.optimizer)
        cs.report(metrics, checkpoint={
            "model": model_state, "optimizer": optimizer_state,
            "scaler": self.scaler.state_dict(), "vocab": self.corpus.vocab, "step": self.step,
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch})
        self._loss_sum, self._loss_count, self._since = 0.0, 0, time.perf_counter()

    def run(self) -> None:
        while self.epoch < self.training.num_epochs:
            self.windows.set_epoch(self.epoch)
            for b, (x, y) in enumerate(self.loader):
                if b < self.batch_in_epoch:
                    continue  # trained on before the checkpoint this attempt resumed from
                self.train_step(x, y)
                self.batch_in_epoch = b + 1
                if self.batch_in_epoch == self.steps_per_epoch:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                stop = cs.should_stop()  # every step, on every rank
                if stop or self.step % self.interval == 0 or self.step == self.total_steps:
                    self.report()
                    if cs.should_stop():  # asked to stop, or the report reached the target
                        return
                if self.batch_in_epoch == 0:
                    break
