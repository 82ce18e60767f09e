"""Worker functions for the multi-process tests: importable by name, so spawn and forkserver
children can run them (tests/support is on the path the children inherit)."""

from __future__ import annotations

from typing import Any


def step_once(param: Any, optimizer: Any, queue: Any) -> None:
    """One step with a fresh gradient; puts the step count it reached (or the error).

    Like every A3C worker, it first sets torch to one thread: torch's own OpenMP pool does
    not survive a fork once the parent used it (a torch limit, not the optimizer's). The
    fused kernel is still given two threads, so a forked child uses its thread pool.
    """
    import os

    import torch

    try:
        torch.set_num_threads(1)
        os.environ["RMSPROP_NUM_THREADS"] = "2"
        param.grad = torch.ones_like(param)
        optimizer.step()
        queue.put(("ok", float(optimizer.state[param]["step"])))
    except BaseException as error:  # report everything, or the parent waits for nothing
        queue.put(("error", repr(error)))


def hogwild(model: Any, optimizer: Any, steps: int, seed: int, queue: Any) -> None:
    """``steps`` steps of a least-squares fit on a shared model, lock-free."""
    import torch

    try:
        torch.set_num_threads(1)
        generator = torch.Generator().manual_seed(seed)
        weight = torch.linspace(-1, 1, 8)
        for _ in range(steps):
            x = torch.randn(32, 8, generator=generator)
            loss = (model(x).squeeze(1) - x @ weight).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        queue.put(("ok", steps))
    except BaseException as error:
        queue.put(("error", repr(error)))
