"""What the ranks of a world run (tests/distributed/worlds.py starts them): each scenario
trains or checkpoints under a wrapper and returns what the test compares, tensors whole.

Every rank runs every scenario in the same order (they hold collectives). Gradients are
made so that the distributed run's are bitwise one process's:

* DDP: each rank takes half the batch; DDP averages, g0/2 + g1/2, which the reference
  computes from the two halves in one process (the same bits: halving is exact).
* FSDP2 training: every rank takes the whole batch; the reduce-scatter of 2 equal
  gradients, halved, is the gradient (exact).
* Continuing after a checkpoint, on 1, 2 or 4 ranks: gradients computed elementwise from
  the parameters (g = a·θ + b), which no sharding can change.

The reference is the same optimizer, built alike, stepping plain tensors in one process.
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from rmsprop.torch import RMSprop


def why_no_fsdp2() -> str:
    """Why FSDP2 can't be tested here ('' when it can)."""
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        # torch 2.4 and 2.5 have it as torch.distributed._composable.fsdp, on CPU not yet
        # for sure (2.4 moved a model to CUDA wherever it could: pytorch#132471).
        return f"FSDP2's public fully_shard needs torch 2.6 or newer (torch {torch.__version__})"
    return ""


@dataclasses.dataclass
class Context:
    rank: int
    size: int
    shared: pathlib.Path  # a folder every world of the test module reads and writes
    crash_at_exit: bool = False  # abort after teardown, as gloo sometimes does


PATHS: dict[str, dict[str, Any]] = {
    "fused": dict(fused=True),
    "foreach": dict(foreach=True),
    "loop": dict(foreach=False),
}
# Every part of the state, and the options a priming step would get wrong.
EVERYTHING = dict(
    flavor="tensorflow",  # v starts at 1, ε inside the root, lr inside the momentum buffer
    momentum=0.9,
    centered=True,
    weight_decay=0.01,  # coupled (L2)
    bias_correction=True,
    nesterov=True,
)
# Flavors whose checkpoints are resharded: each stores something the others don't.
CHECKPOINTED = {
    "tensorflow": dict(flavor="tensorflow", momentum=0.9, weight_decay=0.01),
    "keras": dict(flavor="keras", momentum=0.5, weight_decay=0.05, centered=True),
    "optax": dict(flavor="optax", bias_correction=True, momentum=0.9, nesterov=True),
    "pytorch": dict(momentum=0.9, centered=True, weight_decay=0.1),
}
TORCH_OPTIONS = dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1, foreach=False)


def make_model(shards: str) -> torch.nn.Module:
    """Even: every dim 0 splits evenly over 2 ranks. Uneven: 3 rows and 1 over 2 ranks (a
    rank with an empty shard; over 4, three of them)."""
    torch.manual_seed(0)
    sizes = (8, 4, 2) if shards == "even" else (5, 3, 1)
    return torch.nn.Sequential(
        torch.nn.Linear(sizes[0], sizes[1]), torch.nn.Tanh(), torch.nn.Linear(sizes[1], sizes[2])
    )


def batch(step: int, rows: int = 16, columns: int = 5) -> torch.Tensor:
    return torch.randn(rows, columns, generator=torch.Generator().manual_seed(100 + step))


def shard(model: torch.nn.Module, size: int) -> torch.nn.Module:
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (size,))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def whole(t: Any) -> torch.Tensor:
    """A tensor, or a DTensor gathered (a collective: every rank calls it)."""
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()


def params_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: whole(p) for name, p in model.named_parameters()}


def state_of(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, dict[str, Any]]:
    return {
        name: {key: whole(value) for key, value in sorted(opt.state[p].items())}
        for name, p in model.named_parameters()
        if p in opt.state
    }


def elementwise_steps(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    """``steps`` steps with g = a·θ + b: the same bits on any sharding."""
    for step in range(steps):
        for p in model.parameters():
            p.grad = p.detach() * (0.3 + 0.1 * step) - 0.05 * step
        opt.step()
        opt.zero_grad()


def train_whole_batch(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    for step in range(steps):
        opt.zero_grad()
        x = batch(step, columns=model[0].in_features)
        model(x).pow(2).mean().backward()
        opt.step()


# ---- DDP ------------------------------------------------------------------------------------


def _ddp(path: str) -> Callable[[Context], Any]:
    def scenario(ctx: Context) -> Any:
        from torch.nn.parallel import DistributedDataParallel

        options = {**EVERYTHING, **PATHS[path]}
        model = make_model("even")
        reference = copy.deepcopy(model)
        ddp = DistributedDataParallel(model)
        opt = RMSprop(ddp.parameters(), **options)
        reference_opt = RMSprop(reference.parameters(), **options)
        _train_halves(ctx, 4, ddp, opt, reference, reference_opt)
        return {
            "params": params_of(model),
            "state": state_of(model, opt),
            "reference": params_of(reference),
            "reference_state": state_of(reference, reference_opt),
        }

    return scenario


def _train_halves(
    ctx: Context,
    steps: int,
    ddp: torch.nn.Module,
    opt: torch.optim.Optimizer,
    reference: torch.nn.Module | None = None,
    reference_opt: torch.optim.Optimizer | None = None,
    first: int = 0,
) -> None:
    """Each rank trains on its part of the batch; the reference (if given) on every part in
    turn, with the gradients averaged as DDP does."""
    for step in range(first, first + steps):
        parts = batch(step, columns=8).chunk(ctx.size)
        opt.zero_grad()
        ddp(parts[ctx.rank]).pow(2).mean().backward()
        opt.step()
        if reference is None or reference_opt is None:
            continue
        grads: list[list[torch.Tensor]] = []
        for part in parts:
            reference_opt.zero_grad()
            reference(part).pow(2).mean().backward()
            grads.append([p.grad.div(ctx.size) for p in reference.parameters()])
        for p, *gs in zip(reference.parameters(), *grads):
            p.grad = sum(gs[1:], gs[0])
        reference_opt.step()


# ---- FSDP2 ----------------------------------------------------------------------------------


def _fsdp2(shards: str, path: str) -> Callable[[Context], Any]:
    def scenario(ctx: Context) -> Any:
        options = {**EVERYTHING, **PATHS[path]}
        model = make_model(shards)
        reference = copy.deepcopy(model)
        shard(model, ctx.size)
        opt = RMSprop(model.parameters(), **options)
        reference_opt = RMSprop(reference.parameters(), **options)
        train_whole_batch(model, opt, 5)
        train_whole_batch(reference, reference_opt, 5)
        return {
            "params": params_of(model),
            "state": state_of(model, opt),
            "reference": params_of(reference),
            "reference_state": state_of(reference, reference_opt),
            "local_shapes": [tuple(p.to_local().shape) for p in model.parameters()],
            "state_types": sorted(
                {type(v).__name__ for s in opt.state.values() for v in s.values()}
            ),
        }

    return scenario


def fsdp2_priming(ctx: Context) -> Any:
    """get_state_dict before the first step (DCP primes the optimizer), then training: as if
    no checkpoint had been taken. The DTensor gradients are read whole, on every rank."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model = make_model("uneven")
    reference = copy.deepcopy(model)
    shard(model, ctx.size)
    opt = RMSprop(model.parameters(), **EVERYTHING)
    reference_opt = RMSprop(reference.parameters(), **EVERYTHING)
    _, optim_state = get_state_dict(model, opt)
    primed = {
        name: {key: whole(value) for key, value in sorted(entry.items())}
        for name, entry in optim_state["state"].items()
    }
    train_whole_batch(model, opt, 5)
    train_whole_batch(reference, reference_opt, 5)
    return {
        "primed": primed,
        "params": params_of(model),
        "state": state_of(model, opt),
        "reference": params_of(reference),
        "reference_state": state_of(reference, reference_opt),
    }


# ---- ZeroRedundancyOptimizer ----------------------------------------------------------------


def _zero(path: str) -> Callable[[Context], Any]:
    def scenario(ctx: Context) -> Any:
        from torch.distributed.optim import ZeroRedundancyOptimizer
        from torch.nn.parallel import DistributedDataParallel

        options = {**EVERYTHING, **PATHS[path]}
        model = make_model("even")
        reference = copy.deepcopy(model)
        ddp = DistributedDataParallel(model)
        opt = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=RMSprop, **options)
        reference_opt = RMSprop(reference.parameters(), **options)
        _train_halves(ctx, 4, ddp, opt, reference, reference_opt)
        opt.consolidate_state_dict(to=0)
        consolidated = opt.state_dict() if ctx.rank == 0 else None
        result = {
            "consolidated": copy.deepcopy(consolidated),
            "reference_state_dict": copy.deepcopy(reference_opt.state_dict()),
            "params": params_of(model),
            "reference": params_of(reference),
        }
        # Loaded into a new ZeRO over a copy of the model (every rank needs the whole dict),
        # it continues as the first one does.
        [consolidated] = _broadcast(consolidated)
        resumed = copy.deepcopy(model)
        resumed_ddp = DistributedDataParallel(resumed)
        resumed_opt = ZeroRedundancyOptimizer(
            resumed_ddp.parameters(), optimizer_class=RMSprop, **options
        )
        resumed_opt.load_state_dict(copy.deepcopy(consolidated))  # (loading shares tensors)
        _train_halves(ctx, 3, ddp, opt, reference, reference_opt, first=4)
        _train_halves(ctx, 3, resumed_ddp, resumed_opt, first=4)
        result.update(
            continued=params_of(model),
            resumed=params_of(resumed),
            reference_continued=params_of(reference),
        )
        return result

    return scenario


def _broadcast(value: Any) -> list[Any]:
    objects = [value]
    dist.broadcast_object_list(objects, src=0)
    return objects


# ---- DCP: saved on one world, loaded on others ----------------------------------------------

CONTINUED = 4  # steps after the checkpoint


def _checkpoint_dir(ctx: Context, name: str) -> pathlib.Path:
    return ctx.shared / "checkpoints" / name


def _save_and_continue(
    ctx: Context, name: str, build: Callable[[torch.nn.Module], torch.optim.Optimizer]
) -> Any:
    """Trains a sharded model 3 steps, saves model and optimizer with DCP, then goes on."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model = shard(make_model("uneven"), ctx.size)
    opt = build(model)
    train_whole_batch(model, opt, 3)
    model_state, optim_state = get_state_dict(model, opt)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=_checkpoint_dir(ctx, name))
    saved = {"params": params_of(model), "state": state_of(model, opt)}
    elementwise_steps(model, opt, CONTINUED)
    return {"saved": saved, "params": params_of(model), "state": state_of(model, opt)}


def _load_and_continue(
    ctx: Context, name: str, build: Callable[[torch.nn.Module], torch.optim.Optimizer]
) -> Any:
    """Loads what `_save_and_continue` saved, on this world's sharding, and goes on."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    torch.manual_seed(1)
    model = shard(make_model("uneven"), ctx.size)
    with torch.no_grad():
        for p in model.parameters():  # other values: the checkpoint's must come back
            p.add_(1.0)
    opt = build(model)
    model_state, optim_state = get_state_dict(model, opt)  # (primes the optimizer)
    loaded = {"model": model_state, "optim": optim_state}
    dcp.load(loaded, checkpoint_id=_checkpoint_dir(ctx, name))
    set_state_dict(model, opt, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"])
    result = {"loaded": {"params": params_of(model), "state": state_of(model, opt)}}
    elementwise_steps(model, opt, CONTINUED)
    result.update(params=params_of(model), state=state_of(model, opt))
    return result


def _ours(options: dict[str, Any]) -> Callable[[torch.nn.Module], torch.optim.Optimizer]:
    return lambda model: RMSprop(model.parameters(), **options)


def _torchs(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(model.parameters(), **TORCH_OPTIONS)


# ---- the launcher's own checks -----------------------------------------------------------


def fail_on_the_last_rank(ctx: Context) -> Any:
    if ctx.rank == ctx.size - 1:
        raise RuntimeError("as planned")
    return "ok"


def hang(ctx: Context) -> Any:
    import time

    time.sleep(3600)


def crash_at_exit(ctx: Context) -> Any:
    ctx.crash_at_exit = True
    return ctx.rank


SCENARIOS: dict[str, Callable[[Context], Any]] = {
    "launcher-fail-on-the-last-rank": fail_on_the_last_rank,
    "launcher-barrier": lambda ctx: dist.barrier(),
    "launcher-hang": hang,
    "launcher-crash-at-exit": crash_at_exit,
    **{f"ddp-{path}": _ddp(path) for path in PATHS},
    **{f"fsdp2-{s}-{path}": _fsdp2(s, path) for s in ("even", "uneven") for path in PATHS},
    "fsdp2-priming": fsdp2_priming,
    **{f"zero-{path}": _zero(path) for path in ("fused", "foreach")},
    **{
        f"dcp-save-{name}": (lambda ctx, n=name, o=o: _save_and_continue(ctx, n, _ours(o)))
        for name, o in CHECKPOINTED.items()
    },
    **{
        f"dcp-load-{name}": (lambda ctx, n=name, o=o: _load_and_continue(ctx, n, _ours(o)))
        for name, o in CHECKPOINTED.items()
    },
    # Migration: torch's checkpoint into ours and ours into torch's, on the loop path
    # (where the two are bitwise alike).
    "dcp-save-torch": lambda ctx: _save_and_continue(ctx, "torch", _torchs),
    "dcp-save-ours-for-torch": lambda ctx: _save_and_continue(
        ctx, "ours-for-torch", _ours(TORCH_OPTIONS)
    ),
    "dcp-load-torch-into-ours": lambda ctx: _load_and_continue(ctx, "torch", _ours(TORCH_OPTIONS)),
    "dcp-load-ours-into-torch": lambda ctx: _load_and_continue(ctx, "ours-for-torch", _torchs),
}
