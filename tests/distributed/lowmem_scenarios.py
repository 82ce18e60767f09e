"""What the ranks of a world run for 8-bit state under FSDP2 and DCP (test_lowmem_distributed.py).

An FSDP2 parameter's 8-bit state is quantized shard by shard, each element with its index
in its local shard. The oracle is therefore one process stepping each shard as a parameter
of its own: the parameters of a plain copy of the model cut into rows as FSDP2 cuts them
(torch.chunk on dim 0), every piece a plain parameter with its own 8-bit state, stepped by
the same optimizer built alike. Every rank takes the whole batch (scenarios.py: the
reduce-scatter of equal gradients, halved, is exact), so the pieces' gradients are the
whole gradient's rows.

The model has a weight whose shards hold different numbers of blocks (103 rows of 100:
52 and 51 rows, 21 and 20 blocks: the scales' padding), one whose shards are whole blocks
apart from their ends (80 rows of 103), and a (1, 4800) weight all on rank 0: rank 1's
shard is empty, its 8-bit state too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from scenarios import Context, batch, elementwise_steps, params_of, shard, whole

from rmsprop.torch import RMSprop, _lowmem

FLAVORS: dict[str, dict[str, Any]] = {
    "plain": {},
    "centered-momentum": dict(momentum=0.9, centered=True, weight_decay=0.01),
}
PATHS: dict[str, dict[str, Any]] = {"fused": {}, "loop": dict(foreach=False)}
CHECKPOINTED = dict(momentum=0.9, centered=True, weight_decay=0.01)  # every buffer
CONTINUED = 4  # steps after a checkpoint


class Mix(torch.nn.Module):
    """``h @ W``, its weight kept as one row (1, rows·columns): on 2 ranks, all on rank 0."""

    def __init__(self, rows: int, columns: int) -> None:
        super().__init__()
        self.rows, self.columns = rows, columns
        self.weight = torch.nn.Parameter(torch.randn(1, rows * columns) / rows**0.5)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.weight.view(self.rows, self.columns)


def make_model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(100, 103), torch.nn.Tanh(), torch.nn.Linear(103, 80), Mix(80, 60)
    )


def train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    for step in range(steps):
        opt.zero_grad()
        model(batch(step, columns=100)).pow(2).mean().backward()
        opt.step()


def rows_of(t: torch.Tensor, size: int) -> list[torch.Tensor]:
    """``t`` cut on dim 0 as FSDP2 shards it: torch.chunk, then empty pieces."""
    pieces = list(t.chunk(size))
    return pieces + [t[:0]] * (size - len(pieces))


def local_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Each parameter's state as this rank holds it: the local shards, cloned."""
    return {
        name: {k: _lowmem._local(v).detach().clone() for k, v in sorted(opt.state[p].items())}
        for name, p in model.named_parameters()
        if p in opt.state
    }


def _pieces_reference(
    ctx: Context, options: dict[str, Any], steps: int
) -> tuple[torch.nn.Module, list[list[torch.nn.Parameter]], RMSprop]:
    """The oracle: a plain model whose parameters are stepped as pieces, one per shard."""
    reference = make_model()
    pieces = [
        [torch.nn.Parameter(piece.clone()) for piece in rows_of(p.detach(), ctx.size)]
        for p in reference.parameters()
    ]
    opt = RMSprop([piece for ps in pieces for piece in ps if piece.numel()], **options)
    for step in range(steps):
        reference.zero_grad()
        reference(batch(step, columns=100)).pow(2).mean().backward()
        for p, ps in zip(reference.parameters(), pieces):
            for piece, g in zip(ps, rows_of(p.grad, ctx.size)):
                piece.grad = g.clone()
        opt.step()
        with torch.no_grad():
            for p, ps in zip(reference.parameters(), pieces):
                p.copy_(torch.cat([piece.detach() for piece in ps]))
    return reference, pieces, opt


def _training(flavor: str, path: str) -> Callable[[Context], Any]:
    def scenario(ctx: Context) -> Any:
        options = {**FLAVORS[flavor], **PATHS[path], "state_dtype": "8bit"}
        model = shard(make_model(), ctx.size)
        opt = RMSprop(model.parameters(), **options)
        train(model, opt, 5)
        reference, pieces, reference_opt = _pieces_reference(ctx, options, 5)
        names = [name for name, _ in model.named_parameters()]
        return {
            "params": params_of(model),
            "reference": params_of(reference),
            "state": local_state(model, opt),
            "reference_state": {
                name: {k: v.clone() for k, v in sorted(reference_opt.state[ps[ctx.rank]].items())}
                for name, ps in zip(names, pieces)
                if ps[ctx.rank].numel()
            },
            "types": {
                name: {k: type(v).__name__ for k, v in opt.state[p].items()}
                for name, p in model.named_parameters()
            },
            "scales_shapes": {
                name: tuple(opt.state[p]["square_avg_scales"].shape)
                for name, p in model.named_parameters()
                if "square_avg_scales" in opt.state[p]
            },
            "nbytes": opt.state_nbytes(),
            "full_precision": {
                names[i]: {k: whole(v) for k, v in entry.items()}
                for i, entry in opt.full_precision_state_dict()["state"].items()
            },
        }

    return scenario


# ---- DCP ---------------------------------------------------------------------------------


def _dir(ctx: Context, name: str) -> str:
    return str(ctx.shared / "lowmem-checkpoints" / name)


def _ours(model: torch.nn.Module, **options: Any) -> RMSprop:
    return RMSprop(model.parameters(), **{**CHECKPOINTED, **options})


def dcp_save(ctx: Context) -> Any:
    """3 steps, then two checkpoints: the 8-bit state ("8bit") and, through a float-state
    twin that loads full_precision_state_dict(), its decoded values ("8bit-as-float");
    then 4 more steps."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model = shard(make_model(), ctx.size)
    opt = _ours(model, state_dtype="8bit")
    train(model, opt, 3)
    model_state, optim_state = get_state_dict(model, opt)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=_dir(ctx, "8bit"))
    twin = _ours(model)
    twin.load_state_dict(opt.full_precision_state_dict())
    model_state, optim_state = get_state_dict(model, twin)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=_dir(ctx, "as-float"))
    saved = {"params": params_of(model), "state": local_state(model, opt)}
    decoded = {
        name: {k: whole(v) for k, v in sorted(twin.state[p].items())}
        for name, p in model.named_parameters()
    }
    elementwise_steps(model, opt, CONTINUED)
    return {
        "saved": saved,
        "decoded": decoded,
        "params": params_of(model),
        "state": local_state(model, opt),
    }


def _fresh(ctx: Context, **options: Any) -> tuple[torch.nn.Module, RMSprop]:
    """A sharded model with other values than the checkpoint's, and its optimizer."""
    model = shard(make_model(), ctx.size)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    return model, _ours(model, **options)


def dcp_load(ctx: Context) -> Any:
    """Loads "8bit" on the world that saved it, through get_state_dict/set_state_dict."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model, opt = _fresh(ctx, state_dtype="8bit")
    model_state, optim_state = get_state_dict(model, opt)  # (primes the optimizer)
    loaded = {"model": model_state, "optim": optim_state}
    dcp.load(loaded, checkpoint_id=_dir(ctx, "8bit"))
    set_state_dict(model, opt, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"])
    result = {"loaded": {"params": params_of(model), "state": local_state(model, opt)}}
    elementwise_steps(model, opt, CONTINUED)
    return {**result, "params": params_of(model), "state": local_state(model, opt)}


def optim_state_dict_round_trip(ctx: Context) -> Any:
    """get_optimizer_state_dict, copied, into a second optimizer by set_optimizer_state_dict:
    both go on alike."""
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    model = shard(make_model(), ctx.size)
    opt = _ours(model, state_dtype="8bit")
    train(model, opt, 3)
    saved = copy.deepcopy(get_optimizer_state_dict(model, opt))
    other, other_opt = _fresh(ctx, state_dtype="8bit")
    with torch.no_grad():
        for p, q in zip(other.parameters(), model.parameters()):
            p.copy_(q)
    set_optimizer_state_dict(other, other_opt, saved)
    elementwise_steps(model, opt, CONTINUED)
    elementwise_steps(other, other_opt, CONTINUED)
    return {
        "params": params_of(model),
        "state": local_state(model, opt),
        "other_params": params_of(other),
        "other_state": local_state(other, other_opt),
    }


def _refused(
    model: torch.nn.Module, opt: torch.optim.Optimizer, load: Callable[[], Any]
) -> dict[str, Any]:
    """Runs a load that must fail: its error (a BaseException: DCP's CheckpointException is
    one), and whether the parameters and state are still what they were."""
    before = (params_of(model), local_state(model, opt))
    try:
        load()
    except BaseException as error:  # (what the test checks)
        message = f"{type(error).__name__}: {error}"
    else:
        message = ""
    after = (params_of(model), local_state(model, opt))
    return {"error": message, "unchanged": _equal(before, after)}


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return all(_equal(x, y) for x, y in zip(a, b))
    return bool(a.dtype == b.dtype and torch.equal(a, b))


def _dcp_into(ctx: Context, model: torch.nn.Module, opt: RMSprop, name: str) -> Callable[[], Any]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    def load() -> None:
        model_state, optim_state = get_state_dict(model, opt)
        loaded = {"model": model_state, "optim": optim_state}
        dcp.load(loaded, checkpoint_id=_dir(ctx, name))
        set_state_dict(
            model, opt, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"]
        )

    return load


def refusals(ctx: Context) -> Any:
    """Bad inputs on the world that saved: each an error, and nothing changed."""
    model = shard(make_model(), ctx.size)
    opt = _ours(model, state_dtype="8bit")
    train(model, opt, 2)
    results = {}
    # A float32 checkpoint read straight into 8-bit state: DCP misses the scales.
    results["float-checkpoint-by-dcp"] = _refused(
        model, opt, _dcp_into(ctx, model, opt, "as-float")
    )

    state_dict = opt.state_dict()
    index, entry = next((i, e) for i, e in state_dict["state"].items() if "square_avg_scales" in e)
    scales = entry["square_avg_scales"]
    shape = tuple(scales.shape)
    wrong = _lowmem._like(scales, torch.zeros(1, shape[1] + 1), (shape[0], shape[1] + 1))
    bad = {
        **state_dict,
        "state": {**state_dict["state"], index: {**entry, "square_avg_scales": wrong}},
    }
    results["scales-of-another-shape"] = _refused(model, opt, lambda: opt.load_state_dict(bad))

    # A one-process 8-bit state dict (blocks of whole tensors), and one of float32 state.
    plain = make_model()
    for state_dtype, name in (("8bit", "whole-8bit"), (None, "whole-float")):
        plain_opt = _ours(plain, state_dtype=state_dtype)
        train(plain, plain_opt, 1)
        whole_state = plain_opt.state_dict()
        results[name] = _refused(model, opt, lambda s=whole_state: opt.load_state_dict(s))
    return results


# ---- on another world size ---------------------------------------------------------------


def load_on_another_world(ctx: Context) -> Any:
    """The "8bit" checkpoint, saved on 2 ranks, loaded here: refused (its scales' shape
    names 2 shards)."""
    model, opt = _fresh(ctx, state_dtype="8bit")
    train(model, opt, 1)
    return _refused(model, opt, _dcp_into(ctx, model, opt, "8bit"))


def reshard_through_float(ctx: Context) -> Any:
    """The "as-float" checkpoint, the decoded 8-bit state saved on 2 ranks, read into a
    float-state twin here and loaded from it into 8-bit state: quantized again, shard by
    shard, with this world's blocks."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model, opt = _fresh(ctx, state_dtype="8bit")
    twin = _ours(model)
    model_state, optim_state = get_state_dict(model, twin)
    loaded = {"model": model_state, "optim": optim_state}
    dcp.load(loaded, checkpoint_id=_dir(ctx, "as-float"))
    set_state_dict(model, twin, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"])
    opt.load_state_dict(twin.state_dict())
    return {
        "params": params_of(model),
        "state": local_state(model, opt),
        "twin": local_state(model, twin),
    }


SCENARIOS: dict[str, Callable[[Context], Any]] = {
    **{
        f"lowmem-fsdp2-{flavor}-{path}": _training(flavor, path)
        for flavor in FLAVORS
        for path in PATHS
    },
    "lowmem-dcp-save": dcp_save,
    "lowmem-dcp-load": dcp_load,
    "lowmem-optim-state-dict": optim_state_dict_round_trip,
    "lowmem-refusals": refusals,
    "lowmem-load-on-another-world": load_on_another_world,
    "lowmem-reshard-through-float": reshard_through_float,
}
