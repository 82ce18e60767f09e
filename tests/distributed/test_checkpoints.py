"""Checkpoints in one process: DCP's priming step, DCP round trips, torch <-> ours via DCP.

`torch.distributed.checkpoint` (DCP) works without a process group for a model that
isn't distributed; the multi-process cases (resharding, FSDP2) are in test_wrappers.py.
"""

from __future__ import annotations

import copy

import pytest
from same_training import assert_same_models, assert_same_state

torch = pytest.importorskip("torch", reason="the torch backend needs the torch extra")
if not torch.distributed.is_available():
    pytest.skip("this torch build has no torch.distributed", allow_module_level=True)

import torch.distributed.checkpoint as dcp  # noqa: E402
from torch.distributed.checkpoint.state_dict import (  # noqa: E402
    get_optimizer_state_dict,
    get_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)

import rmsprop  # noqa: E402
from rmsprop.torch import RMSprop  # noqa: E402

# DCP says, each time, that it assumes one process when no process group is set up.
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is:UserWarning")

STEPS = 5


def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def train(model, opt, steps, seed=1):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 5, generator=generator)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


# ---- DCP's priming step: a checkpoint before the first step changes nothing ---------------

# What a priming step (zero gradients, lr = 0) would change if it were a step: v starting at
# 1 decays, coupled weight decay writes (λθ)² into v, bias correction reads the step count;
# centered and momentum create more state.
OPTIONS = {
    "v0=1": dict(initial_square_avg=1.0),
    "coupled-weight-decay": dict(weight_decay=0.1, decoupled_weight_decay=False),
    "bias-correction": dict(bias_correction=True),
    "centered": dict(centered=True),
    "momentum": dict(momentum=0.9),
}
EVERYTHING = dict(
    initial_square_avg=1.0, weight_decay=0.1, decoupled_weight_decay=False,
    bias_correction=True, centered=True, momentum=0.9, nesterov=True,
)  # fmt: skip
PATHS = {"fused": dict(fused=True), "foreach": dict(foreach=True), "loop": dict(foreach=False)}
CASES = [
    pytest.param(flavor, options, {}, id=f"{flavor}-{name}")
    for flavor in sorted(rmsprop.FLAVORS)
    for name, options in OPTIONS.items()
] + [
    pytest.param(flavor, EVERYTHING, path, id=f"{flavor}-everything-{name}")
    for flavor in sorted(rmsprop.FLAVORS)
    for name, path in PATHS.items()
]
METHODS = ["state_dict", "get_optimizer_state_dict", "get_state_dict+dcp.save"]


def _fused_unavailable():
    from rmsprop.torch._fused import why_not_on

    return why_not_on("cpu")


def _checkpoint(method, model, opt, where):
    """Takes a checkpoint of a model and optimizer that haven't stepped yet, as ``method``
    does; returns what loads it into another pair."""
    if method == "state_dict":
        saved = copy.deepcopy(opt.state_dict())
        return lambda model2, opt2: opt2.load_state_dict(copy.deepcopy(saved))
    if method == "get_optimizer_state_dict":
        saved = copy.deepcopy(get_optimizer_state_dict(model, opt))
        return lambda model2, opt2: set_optimizer_state_dict(model2, opt2, copy.deepcopy(saved))
    model_sd, optim_sd = get_state_dict(model, opt)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=where)

    def load(model2, opt2):
        model_sd2, optim_sd2 = get_state_dict(model2, opt2)  # (primes opt2 in turn)
        loaded = {"model": model_sd2, "optim": optim_sd2}
        dcp.load(loaded, checkpoint_id=where)
        set_state_dict(
            model2, opt2, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"]
        )

    return load


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("flavor", "options", "path"), CASES)
def test_a_checkpoint_before_the_first_step_leaves_a_fresh_optimizer(
    flavor, options, path, method, tmp_path
):
    if path.get("fused") and _fused_unavailable():
        pytest.skip(f"no fused CPU kernel here: {_fused_unavailable()}")
    lr = torch.tensor(0.01) if method == "get_state_dict+dcp.save" else 0.01  # either kind

    def build(model):
        return RMSprop(model.parameters(), flavor=flavor, lr=lr, **options, **path)

    reference = make_model()
    reference_opt = build(reference)
    train(reference, reference_opt, STEPS)

    model = make_model()
    opt = build(model)
    load = _checkpoint(method, model, opt, tmp_path)
    # What the checkpoint left: the parameters, gradients and hyperparameters as they were,
    # and the state a first step creates before it updates anything.
    assert_same_models(model, make_model())
    assert all(p.grad is None for p in model.parameters())
    assert opt.param_groups[0]["lr"] is lr
    config = rmsprop.flavor(flavor, **options)
    for p in model.parameters():
        state = opt.state.get(p, {})
        assert not state or state["step"].item() == 0
        if state:
            assert (state["square_avg"] == config.initial_square_avg).all()
            assert set(state) - {"step", "square_avg"} == {
                name
                for name, used in (
                    ("momentum_buffer", config.momentum),
                    ("grad_avg", config.centered),
                )
                if used
            }
            assert all(not state[k].any() for k in ("momentum_buffer", "grad_avg") if k in state)

    resumed = make_model(seed=1)  # other weights: the checkpoint's must come back
    resumed_opt = build(resumed)
    if method != "get_state_dict+dcp.save":  # (that one saves the model too)
        resumed.load_state_dict(model.state_dict())
    load(resumed, resumed_opt)

    train(model, opt, STEPS)  # the checkpointed one goes on
    train(resumed, resumed_opt, STEPS)  # and the one resumed from the checkpoint
    for other, other_opt in ((model, opt), (resumed, resumed_opt)):
        assert_same_models(other, reference)
        assert_same_state(other_opt, reference_opt)


def test_an_ordinary_first_step_at_lr_0_still_steps():
    # Only all three (no state, zero gradients, lr 0) make the step a priming step.
    for zero_grads, lr in ((False, 0.0), (True, 0.01)):
        p = torch.nn.Parameter(torch.ones(3))
        opt = RMSprop([p], lr=lr, weight_decay=0.1, flavor="tensorflow")
        p.grad = torch.zeros(3) if zero_grads else torch.full((3,), 0.5)
        opt.step()
        assert opt.state[p]["step"].item() == 1
        assert (opt.state[p]["square_avg"] < 1).all()  # decayed from 1


def test_a_priming_step_runs_the_step_hooks_and_the_closure():
    p = torch.nn.Parameter(torch.ones(3))
    opt = RMSprop([p], lr=0.0)
    calls = []
    opt.register_step_post_hook(lambda *_: calls.append("post"))

    def closure():
        p.grad = torch.zeros(3)
        return 7.0

    assert opt.step(closure) == 7.0
    assert calls == ["post"] and opt.state[p]["step"].item() == 0


# ---- DCP round trips, mid-training: every flavor ---------------------------------------------


ROUND_TRIP = dict(momentum=0.9, centered=True, weight_decay=0.01)


@pytest.mark.parametrize("flavor", sorted(rmsprop.FLAVORS))
def test_every_flavor_round_trips_exactly_through_dcp(flavor, tmp_path):
    options = dict(ROUND_TRIP)
    if rmsprop.flavor(flavor).eps == 0:
        options["eps"] = 1e-8  # (centered, an element's first v - m² may be 0: 0/0)

    def build(model):
        first, *rest = model.parameters()
        # The second group sets fields to torch's values, which state_dict leaves out.
        torchlike = dict(eps_in_sqrt=False, initial_square_avg=0.0, bias_correction=True)
        groups = [{"params": [first]}, {"params": rest, **torchlike}]
        return RMSprop(groups, flavor=flavor, **options)

    model = make_model()
    opt = build(model)
    train(model, opt, 3)
    model_sd, optim_sd = get_state_dict(model, opt)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp_path)

    resumed = make_model(seed=1)
    resumed_opt = build(resumed)
    model_sd, optim_sd = get_state_dict(resumed, resumed_opt)
    loaded = {"model": model_sd, "optim": optim_sd}
    dcp.load(loaded, checkpoint_id=tmp_path)
    set_state_dict(
        resumed, resumed_opt, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"]
    )
    train(model, opt, 5, seed=2)
    train(resumed, resumed_opt, 5, seed=2)
    assert_same_models(resumed, model)
    assert_same_state(resumed_opt, opt)


# ---- torch <-> ours through DCP (one process; test_wrappers.py has it resharded) ------------

TORCH_OPTIONS = [
    {},
    dict(momentum=0.9, centered=True),
    dict(weight_decay=0.1, alpha=0.9, maximize=True),
]


@pytest.mark.parametrize("options", TORCH_OPTIONS, ids=["plain", "momentum-centered", "wd-max"])
@pytest.mark.parametrize("direction", ["torch-to-ours", "ours-to-torch"])
@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
def test_a_checkpoint_moves_between_torch_and_ours_through_dcp(
    direction, options, foreach, tmp_path
):
    first_cls, second_cls = (
        (torch.optim.RMSprop, RMSprop)
        if direction == "torch-to-ours"
        else (RMSprop, torch.optim.RMSprop)
    )
    model = make_model()
    opt = first_cls(model.parameters(), lr=0.01, foreach=foreach, **options)
    train(model, opt, 3)
    dcp.save({"optim": get_optimizer_state_dict(model, opt)}, checkpoint_id=tmp_path)

    moved = copy.deepcopy(model)
    moved_opt = second_cls(moved.parameters(), lr=0.5, foreach=foreach, **options)
    loaded = {"optim": get_optimizer_state_dict(moved, moved_opt)}
    dcp.load(loaded, checkpoint_id=tmp_path)  # DCP's default planner: every key found
    set_optimizer_state_dict(moved, moved_opt, loaded["optim"])
    assert moved_opt.param_groups[0]["lr"] == 0.01

    train(model, opt, 5, seed=2)  # as if the first had gone on
    train(moved, moved_opt, 5, seed=2)
    assert_same_models(moved, model)
    assert_same_state(moved_opt, opt)


# ---- what DCP's default planner does with flavors (docs/distributed.md) ---------------------


def _dcp_save(build, path):
    model = make_model()
    opt = build(model)
    train(model, opt, 2)
    dcp.save({"optim": get_optimizer_state_dict(model, opt)}, checkpoint_id=path)


def _dcp_load(build, path):
    model = make_model()
    opt = build(model)
    loaded = {"optim": get_optimizer_state_dict(model, opt)}
    dcp.load(loaded, checkpoint_id=path)
    set_optimizer_state_dict(model, opt, loaded["optim"])
    return opt


def test_dcp_reads_the_keys_the_loading_optimizer_has(tmp_path):
    # A loader with keys the checkpoint lacks is refused (DCP's exception is a BaseException);
    # a loader without the checkpoint's extra keys reads torch's rule: build it alike.
    _dcp_save(lambda m: RMSprop(m.parameters()), tmp_path / "pytorch")
    with pytest.raises(BaseException, match="Missing key in checkpoint state_dict") as raised:
        _dcp_load(lambda m: RMSprop(m.parameters(), flavor="tensorflow"), tmp_path / "pytorch")
    assert not isinstance(raised.value, Exception)

    _dcp_save(lambda m: RMSprop(m.parameters(), flavor="tensorflow"), tmp_path / "tensorflow")
    opt = _dcp_load(lambda m: RMSprop(m.parameters()), tmp_path / "tensorflow")
    group = opt.param_groups[0]
    assert group["alpha"] == 0.9 and group["eps"] == 1e-10  # torch's keys: the checkpoint's
    assert group["eps_in_sqrt"] is False and group["initial_square_avg"] == 0.0  # not read
    alike = _dcp_load(
        lambda m: RMSprop(m.parameters(), flavor="tensorflow"), tmp_path / "tensorflow"
    )
    assert alike.param_groups[0]["eps_in_sqrt"] is True
