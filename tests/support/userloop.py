"""A user's own training code, written only against ``costsched.api``: the tests run it
in-process (tests/test_api.py) and ship it with ``ray job submit --working-dir``
(tests/test_scheduler_e2e_ray.py copies this file into a folder of its own)."""

import time

import torch
from torch import nn

import costsched.api as cs


def train_loop(config):
    """Linear regression; a checkpoint every ``checkpoint_every`` (10) steps and a report
    without one every ``report_every`` steps between; stops when costsched says so.
    ``step_s`` sleeps that long a step; ``on_step`` (in-process only) is called a step."""
    ctx = cs.get_context()
    torch.manual_seed(0)
    model = cs.prepare_model(nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=config.get("lr", 0.05))
    state = cs.load_checkpoint()
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    data = torch.Generator().manual_seed(1000 * ctx.rank + start)
    for step in range(start + 1, config["steps"] + 1):
        x = torch.randn(16, 4, generator=data)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        time.sleep(config.get("step_s", 0.0))
        if config.get("on_step"):
            config["on_step"]()
        stop = cs.should_stop()
        every = config.get("checkpoint_every", 10)
        if step % every == 0 or stop:
            cs.report({"loss": loss.item(), "global_step": step},
                      checkpoint={"model": model.state_dict(),
                                  "optimizer": optimizer.state_dict(), "step": step})
        elif step % config.get("report_every", every) == 0:
            cs.report({"loss": loss.item(), "global_step": step})
        if stop:
            return


def broken(config):
    raise RuntimeError("user bug: no training data at /nowhere")
