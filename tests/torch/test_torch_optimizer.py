"""What torch users rely on: groups, schedulers, hooks, flavors, and refusing bad input."""

from __future__ import annotations

import copy

import pytest
from tables import BAD_CONFIGS

torch = pytest.importorskip("torch", reason="the torch backend needs the torch extra")

import rmsprop  # noqa: E402
from rmsprop.torch import RMSprop  # noqa: E402
from rmsprop.torch._fused import why_not_on  # noqa: E402


def params(*shapes, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*s, dtype=dtype)) for s in shapes]


def set_grads(ps, seed=1):
    generator = torch.Generator().manual_seed(seed)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=generator, dtype=p.dtype)


def snapshot(opt):
    return copy.deepcopy(opt.state_dict())


def assert_unchanged(opt, before):
    after = opt.state_dict()
    assert len(after["param_groups"]) == len(before["param_groups"])
    for a, b in zip(after["param_groups"], before["param_groups"]):
        assert a == b
    assert after["state"].keys() == before["state"].keys()
    for key, entry in before["state"].items():
        for name, value in entry.items():
            assert torch.equal(after["state"][key][name], value)


# ---- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "error", "message"), BAD_CONFIGS)
def test_bad_settings_are_refused_with_configs_message(fields, error, message):
    with pytest.raises(error, match=message):
        RMSprop(params((2,)), **fields)


def test_alpha_and_decay_are_one_setting():
    assert RMSprop(params((2,)), decay=0.5).defaults["alpha"] == 0.5
    with pytest.raises(TypeError, match="both alpha and decay"):
        RMSprop(params((2,)), alpha=0.9, decay=0.9)


def test_flavor_gives_defaults_and_explicit_arguments_win():
    group = RMSprop(params((2,)), flavor="tensorflow").param_groups[0]
    expected = rmsprop.flavor("tensorflow")
    assert (group["alpha"], group["eps"], group["initial_square_avg"]) == (
        expected.decay,
        expected.eps,
        1.0,
    )
    group = RMSprop(params((2,)), 1e-2, flavor="tensorflow", eps=1e-8).param_groups[0]
    assert (group["lr"], group["eps"], group["alpha"]) == (1e-2, 1e-8, 0.9)
    with pytest.raises(ValueError, match="unknown flavor 'tf'; the known flavors are: pytorch"):
        RMSprop(params((2,)), flavor="tf")


def test_tensor_lr_must_have_one_element():
    with pytest.raises(ValueError, match=r"^Tensor lr must be 1-element \(got shape \(2,\)\)"):
        RMSprop(params((2,)), lr=torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"^Invalid learning rate: -0\.1.* \(Config\.lr = -0\.1"):
        RMSprop(params((2,)), lr=torch.tensor(-0.1))


def test_foreach_with_differentiable_is_refused():
    with pytest.raises(ValueError, match="foreach=True does not support differentiable=True"):
        RMSprop(params((2,)), foreach=True, differentiable=True)


# ---- param groups -----------------------------------------------------------------------


def test_param_groups_override_any_field():
    a, b = params((3,), (3,))
    opt = RMSprop(
        [{"params": [a]}, {"params": [b], "momentum": 0.9, "decay": 0.5, "eps_in_sqrt": True}],
        lr=0.1,
    )
    assert opt.param_groups[1]["alpha"] == 0.5 and "decay" not in opt.param_groups[1]
    set_grads([a, b])
    opt.step()
    assert "momentum_buffer" in opt.state[b] and "momentum_buffer" not in opt.state[a]


def test_an_invalid_param_group_is_refused_and_changes_nothing():
    a, b = params((3,), (3,))
    opt = RMSprop([a])
    for bad, message in [
        ({"momentum": -1}, r"Config\.momentum = -1"),
        ({"alpha": 0.9, "decay": 0.9}, "both alpha and decay"),
        ({"nesterov": True}, "needs momentum > 0"),
    ]:
        with pytest.raises((TypeError, ValueError), match=message):
            opt.add_param_group({"params": [b], **bad})
        assert len(opt.param_groups) == 1


def test_an_invalid_param_group_gets_torchs_words_first():
    a, b = params((3,), (3,))
    opt = RMSprop([a])
    with pytest.raises(ValueError, match=r"^Invalid momentum value: -1 \(Config\.momentum = -1"):
        opt.add_param_group({"params": [b], "momentum": -1})
    with pytest.raises(ValueError, match=r"^Invalid alpha value: -0\.5 \(Config\.decay = -0\.5"):
        opt.add_param_group({"params": [b], "decay": -0.5})
    with pytest.raises(ValueError, match=r"^Tensor lr must be 1-element"):
        opt.add_param_group({"params": [b], "lr": torch.ones(2)})
    assert len(opt.param_groups) == 1


def test_momentum_and_centered_can_be_turned_on_mid_run():
    (p,) = params((4,))
    opt = RMSprop([p])
    set_grads([p])
    opt.step()
    opt.param_groups[0].update(momentum=0.9, centered=True)
    set_grads([p], seed=2)
    opt.step()
    assert opt.state[p]["momentum_buffer"].abs().sum() > 0
    assert opt.state[p]["grad_avg"].abs().sum() > 0


# ---- what torch users rely on ----------------------------------------------------------


def test_lr_scheduler_changes_the_step():
    (p,) = params((3,))
    opt = RMSprop([p], lr=1.0)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    set_grads([p])
    opt.step()
    scheduler.step()
    assert opt.param_groups[0]["lr"] == 0.5
    assert opt.param_groups[0]["initial_lr"] == 1.0


def test_closure_zero_grad_and_hooks():
    (w,) = params((3,))
    opt = RMSprop([w], lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda *_: calls.append("pre"))
    opt.register_step_post_hook(lambda *_: calls.append("post"))

    def closure():
        opt.zero_grad()
        loss = w.pow(2).sum()
        loss.backward()
        return loss

    losses = [opt.step(closure).item() for _ in range(20)]
    assert losses[-1] < losses[0]
    assert calls == ["pre", "post"] * 20
    opt.zero_grad()
    assert w.grad is None


@pytest.mark.parametrize("maximize", [False, True])
def test_goes_the_right_direction(maximize):
    (w,) = params((5,))
    opt = RMSprop([w], lr=0.01, maximize=maximize, flavor="keras", momentum=0.5)
    start = w.pow(2).sum().item()
    for _ in range(30):
        opt.zero_grad()
        w.pow(2).sum().backward()
        opt.step()
    assert (w.pow(2).sum().item() > start) == maximize


def test_sparse_gradients_are_a_clear_error():
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    opt = RMSprop(embedding.parameters())
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="RMSprop does not support sparse gradients"):
        opt.step()


def test_step_is_float64_under_a_float64_default_dtype():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        (p,) = params((2,))
        opt = RMSprop([p])
        set_grads([p])
        opt.step()
        assert opt.state[p]["step"].dtype == torch.float64
    finally:
        torch.set_default_dtype(previous)


def test_differentiable_step_lets_gradients_through():
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    p = w.clone()  # a non-leaf "parameter", as meta-learning uses
    p.grad = torch.ones(3, dtype=torch.float64)
    opt = RMSprop([p], differentiable=True, momentum=0.5, centered=True)
    opt.step()
    p.sum().backward()
    assert w.grad is not None and torch.equal(w.grad, torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"momentum": 0.9, "lr_in_momentum": True, "nesterov": True},
        {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1, "decoupled_weight_decay": True},
        {"bias_correction": True, "centered": True, "eps_in_sqrt": True, "eps": 0.1},
    ],
)
def test_capturable_with_a_device_lr_matches_the_plain_step(options, foreach):
    plain, capturable = (
        params((4, 3), (5,), dtype=torch.float64),
        params((4, 3), (5,), dtype=torch.float64),
    )
    opt_plain = RMSprop(plain, lr=0.01, foreach=foreach, **options)
    opt_capturable = RMSprop(
        capturable, lr=torch.tensor(0.01, dtype=torch.float64), capturable=True,
        foreach=foreach, **options,
    )  # fmt: skip
    for step in range(10):
        set_grads(plain, seed=step)
        set_grads(capturable, seed=step)
        opt_plain.step()
        opt_capturable.step()
    for a, b in zip(plain, capturable):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert opt_capturable.state[capturable[0]]["step"].device == capturable[0].device


# ---- load_state_dict refuses bad state and keeps its own ------------------------------


def _trained(**options):
    ps = params((2, 3), (4,))
    opt = RMSprop(ps, momentum=0.9, centered=True, **options)
    set_grads(ps)
    opt.step()
    return opt


def _corrupt(edit):
    def corrupt(state_dict):
        edit(state_dict)
        return state_dict

    return corrupt


BAD_STATE_DICTS = [
    ("not a dict", lambda sd: [1, 2], "must be a dict with keys 'state' and 'param_groups'"),
    ("no state key", _corrupt(lambda sd: sd.pop("state")), "keys 'state' and 'param_groups'"),
    ("extra group", _corrupt(lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0]))),
     "has 2 parameter groups; this optimizer has 1"),
    ("param count", _corrupt(lambda sd: sd["param_groups"][0]["params"].pop()),
     r"param_groups\[0\] has 1 parameters in the state dict and 2"),
    ("bad alpha", _corrupt(lambda sd: sd["param_groups"][0].update(alpha=2.0)),
     r"param_groups\[0\] of the state dict: Config\.decay = 2\.0 is out of range"),
    ("bad type", _corrupt(lambda sd: sd["param_groups"][0].update(centered="yes")),
     r"Config\.centered must be a bool"),
    ("wrong shape", _corrupt(lambda sd: sd["state"][0].update(square_avg=torch.zeros(3, 2))),
     r"\['square_avg'\] has shape \(3, 2\); its parameter has shape \(2, 3\)"),
    ("integer state",
     _corrupt(lambda sd: sd["state"][1].update(grad_avg=torch.zeros(4, dtype=torch.long))),
     r"\['grad_avg'\] has dtype torch.int64, which cannot hold"),
    ("not a tensor", _corrupt(lambda sd: sd["state"][1].update(momentum_buffer=[0.0] * 4)),
     r"\['momentum_buffer'\] must be a tensor, got list"),
    ("missing buffer", _corrupt(lambda sd: sd["state"][0].pop("momentum_buffer")),
     r"is missing \['momentum_buffer'\]"),
    ("adam state", _corrupt(lambda sd: sd["state"][0].update(exp_avg=torch.zeros(2, 3))),
     r"has unknown keys \['exp_avg'\]"),
    ("negative step", _corrupt(lambda sd: sd["state"][0].update(step=torch.tensor(-1.0))),
     r"\['step'\] must be a finite number >= 0"),
    ("nan step", _corrupt(lambda sd: sd["state"][0].update(step=float("nan"))),
     r"\['step'\] must be a finite number >= 0"),
    ("unknown param", _corrupt(lambda sd: sd["state"].update({7: sd["state"][0]})),
     r"has an entry 7 for no parameter"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("desc", "corrupt", "message"), BAD_STATE_DICTS, ids=[d for d, _, _ in BAD_STATE_DICTS]
)
def test_bad_state_dict_is_refused_and_the_old_state_kept(desc, corrupt, message):
    source, target = _trained(), _trained(lr=0.5)
    bad = corrupt(copy.deepcopy(source.state_dict()))
    before = snapshot(target)
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(bad)
    assert_unchanged(target, before)


# ---- load_state_dict keeps the code path this optimizer was built with ---------------------

PATHS = [
    dict(foreach=False),
    dict(foreach=True),
    dict(fused=True),
    dict(capturable=True, foreach=False),
    dict(differentiable=True),
    {},
]


@pytest.mark.parametrize("saved_path", PATHS, ids=lambda p: str(p) or "default")
@pytest.mark.parametrize("own_path", PATHS, ids=lambda p: str(p) or "default")
def test_load_state_dict_keeps_this_optimizers_path(own_path, saved_path):
    if (own_path.get("fused") or saved_path.get("fused")) and why_not_on("cpu"):
        pytest.skip(f"no fused CPU kernel here: {why_not_on('cpu')}")
    # Plain tensors: a differentiable step writes them in place, which a leaf that
    # requires grad forbids.
    ps = [p.detach() for p in params((2, 3), (4,))]
    source = RMSprop([p.detach() for p in params((2, 3), (4,))], momentum=0.9, **saved_path)
    set_grads(source.param_groups[0]["params"])
    source.step()
    opt = RMSprop(ps, lr=0.5, **own_path)
    expected = {key: opt.param_groups[0][key] for key in _PATH_KEYS}
    opt.load_state_dict(copy.deepcopy(source.state_dict()))
    group = opt.param_groups[0]
    assert {key: group[key] for key in _PATH_KEYS} == expected
    assert (group["lr"], group["momentum"]) == (0.01, 0.9)  # the hyperparameters are loaded
    set_grads(ps, seed=2)
    opt.step()
    assert opt.state[ps[0]]["step"].item() == 2


_PATH_KEYS = ("foreach", "fused", "capturable", "differentiable")
