"""Parity with the real torch.optim.RMSprop: same numbers, same state, both ways."""

from __future__ import annotations

import copy
import inspect
import itertools

import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs the torch extra")

from rmsprop.torch import RMSprop  # noqa: E402

STEPS = 100

# Every combination of the options torch.optim.RMSprop has (implementation
# switches foreach and the scheduler are crossed in the tests).
OPTIONS = [
    dict(weight_decay=wd, momentum=mu, centered=c, maximize=mx)
    for wd, mu, c, mx in itertools.product([0, 0.1], [0, 0.9], [False, True], [False, True])
]
OPTION_IDS = ["-".join(f"{k}={v}" for k, v in o.items()) for o in OPTIONS]


def make_model(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    return model.to(dtype)


def train(model, opt, steps, scheduler=None, seed=1):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 5, generator=generator, dtype=next(model.parameters()).dtype)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()


def assert_same_models(a, b):
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def assert_same_state(opt_a, opt_b):
    assert len(opt_a.state) == len(opt_b.state)
    for sa, sb in zip(opt_a.state.values(), opt_b.state.values()):
        assert sorted(sa) == sorted(sb)
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("scheduled", [False, True], ids=["constant-lr", "scheduled-lr"])
@pytest.mark.parametrize("foreach", [False, True], ids=["forloop", "foreach"])
@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
def test_bitwise_equal_to_torch_optim(options, foreach, scheduled, dtype):
    ours, theirs = make_model(dtype), make_model(dtype)
    opt_ours = RMSprop(ours.parameters(), lr=0.01, alpha=0.9, eps=1e-6, foreach=foreach, **options)
    opt_theirs = torch.optim.RMSprop(
        theirs.parameters(), lr=0.01, alpha=0.9, eps=1e-6, foreach=foreach, **options
    )
    sched = (lambda o: torch.optim.lr_scheduler.StepLR(o, 10, gamma=0.5)) if scheduled else None
    train(ours, opt_ours, STEPS, sched and sched(opt_ours))
    train(theirs, opt_theirs, STEPS, sched and sched(opt_theirs))
    if all(p.isfinite().all() for p in theirs.parameters()):
        assert_same_models(ours, theirs)
        assert_same_state(opt_ours, opt_theirs)
    else:
        # torch's centered variance went negative by rounding and its sqrt
        # gave NaN; ours clamps it at 0 (the only intended difference).
        assert options["centered"] and dtype == torch.bfloat16
        assert all(p.isfinite().all() for p in ours.parameters())


@pytest.mark.parametrize("foreach", [False, True])
def test_tensor_lr_matches_torch_optim(foreach):
    ours, theirs = make_model(), make_model()
    opt_ours = RMSprop(ours.parameters(), lr=torch.tensor(0.01), momentum=0.5, foreach=foreach)
    opt_theirs = torch.optim.RMSprop(
        theirs.parameters(), lr=torch.tensor(0.01), momentum=0.5, foreach=foreach
    )
    train(ours, opt_ours, 20)
    train(theirs, opt_theirs, 20)
    assert_same_models(ours, theirs)


def test_complex_parameters_match_torch_optim():
    torch.manual_seed(0)
    z = torch.randn(4, 3, dtype=torch.complex64)
    ours, theirs = z.clone().requires_grad_(), z.clone().requires_grad_()
    options = dict(centered=True, momentum=0.9, weight_decay=0.1, foreach=False)
    opt_ours = RMSprop([ours], **options)
    opt_theirs = torch.optim.RMSprop([theirs], **options)
    for _ in range(30):
        g = torch.randn(4, 3, dtype=torch.complex64)
        ours.grad, theirs.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_theirs.step()
    assert torch.equal(ours, theirs)


def test_signature_and_defaults_are_torchs():
    ours = inspect.signature(RMSprop).parameters
    theirs = inspect.signature(torch.optim.RMSprop).parameters
    assert list(ours)[: len(theirs)] == list(theirs)
    for name, parameter in theirs.items():
        assert ours[name].kind == parameter.kind, name
        assert ours[name].default == parameter.default, name
        assert repr(ours[name].default) == repr(parameter.default), name
    extras = [p for p in list(ours.values())[len(theirs) :]]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extras)


def test_param_group_keys_are_torchs_plus_the_extra_fields():
    params = [torch.nn.Parameter(torch.ones(2))]
    ours = RMSprop(params).param_groups[0]
    theirs = torch.optim.RMSprop(params).param_groups[0]
    assert set(theirs) <= set(ours)
    assert set(ours) - set(theirs) == {
        "eps_in_sqrt", "initial_square_avg", "nesterov", "lr_in_momentum",
        "bias_correction", "decoupled_weight_decay", "fused",
    }  # fmt: skip
    for key in theirs:
        if key != "params":
            assert ours[key] == theirs[key], key


# ---- state_dict ----------------------------------------------------------------------


@pytest.mark.parametrize("options", OPTIONS[::3], ids=OPTION_IDS[::3])
@pytest.mark.parametrize("direction", ["torch-to-ours", "ours-to-torch"])
def test_state_dict_moves_between_the_two_and_training_continues_identically(direction, options):
    first_cls, second_cls = (
        (torch.optim.RMSprop, RMSprop)
        if direction == "torch-to-ours"
        else (RMSprop, torch.optim.RMSprop)
    )
    model = make_model()
    # foreach=False travels in the state dict, so both continue on the for-loop path.
    opt = first_cls(model.parameters(), lr=0.01, foreach=False, **options)
    train(model, opt, 10, seed=1)
    saved = copy.deepcopy(opt.state_dict())  # loading shares tensors: keep a private copy

    reference = copy.deepcopy(model)
    reference_opt = first_cls(reference.parameters(), lr=0.01, foreach=False, **options)
    reference_opt.load_state_dict(copy.deepcopy(saved))
    train(reference, reference_opt, 10, seed=2)

    moved = copy.deepcopy(model)
    moved_opt = second_cls(moved.parameters(), lr=0.5)  # hyperparameters come from the state
    moved_opt.load_state_dict(copy.deepcopy(saved))
    train(moved, moved_opt, 10, seed=2)

    assert_same_models(moved, reference)
    assert_same_state(moved_opt, reference_opt)


@pytest.mark.parametrize("path", ["forloop", "foreach", "fused"])
def test_save_at_step_k_load_into_a_fresh_optimizer_and_continue(path, tmp_path):
    options = dict(flavor="tensorflow", momentum=0.9, centered=True, weight_decay=0.01)
    uninterrupted = make_model()
    switches = {"forloop": dict(foreach=False), "foreach": dict(foreach=True)}.get(path, {})
    opt = RMSprop(uninterrupted.parameters(), fused=path == "fused", **switches, **options)
    train(uninterrupted, opt, 10, seed=1)
    resumed = copy.deepcopy(uninterrupted)
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    train(uninterrupted, opt, 15, seed=2)

    fresh = RMSprop(resumed.parameters())  # pytorch-flavored; the path comes from the state
    fresh.load_state_dict(torch.load(tmp_path / "opt.pt"))
    assert fresh.param_groups[0]["initial_square_avg"] == 1.0  # the saved flavor came back
    train(resumed, fresh, 15, seed=2)
    assert_same_models(resumed, uninterrupted)
    assert_same_state(fresh, opt)


def test_missing_extra_keys_are_filled_from_this_optimizers_defaults():
    model = make_model()
    theirs = torch.optim.RMSprop(model.parameters(), lr=0.02, alpha=0.9)
    train(model, theirs, 3)
    ours = RMSprop(model.parameters(), flavor="tensorflow")
    ours.load_state_dict(theirs.state_dict())
    group = ours.param_groups[0]
    assert (group["lr"], group["alpha"], group["eps"]) == (0.02, 0.9, 1e-8)  # from the state dict
    assert group["eps_in_sqrt"] is True and group["lr_in_momentum"] is True  # from the flavor
    assert ours.state[next(model.parameters())]["step"].item() == 3


def test_a_legacy_float_step_is_converted_to_a_tensor():
    model = make_model()
    opt = RMSprop(model.parameters())
    train(model, opt, 2)
    state = opt.state_dict()
    for entry in state["state"].values():
        entry["step"] = 2
    fresh = RMSprop(model.parameters())
    fresh.load_state_dict(state)
    step = fresh.state[next(model.parameters())]["step"]
    assert torch.is_tensor(step) and step.item() == 2.0
