"""Parity with the real torch.optim.RMSprop: same numbers, same state, both ways."""

from __future__ import annotations

import copy
import inspect
import itertools
import pathlib
import re
import warnings

import pytest
from same_training import assert_same_models, assert_same_state

torch = pytest.importorskip("torch", reason="the torch backend needs the torch extra")

import rmsprop  # noqa: E402
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
    # Both on the for-loop path: torch's takes it from the state dict, ours keeps its own.
    opt = first_cls(model.parameters(), lr=0.01, foreach=False, **options)
    train(model, opt, 10, seed=1)
    saved = copy.deepcopy(opt.state_dict())  # loading shares tensors: keep a private copy

    reference = copy.deepcopy(model)
    reference_opt = first_cls(reference.parameters(), lr=0.01, foreach=False, **options)
    reference_opt.load_state_dict(copy.deepcopy(saved))
    train(reference, reference_opt, 10, seed=2)

    moved = copy.deepcopy(model)
    # The hyperparameters come from the state dict.
    moved_opt = second_cls(moved.parameters(), lr=0.5, foreach=False)
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

    # pytorch-flavored: the flavor comes from the state dict, the path is this optimizer's.
    fresh = RMSprop(resumed.parameters(), fused=path == "fused", **switches)
    fresh.load_state_dict(torch.load(tmp_path / "opt.pt"))
    assert fresh.param_groups[0]["initial_square_avg"] == 1.0  # the saved flavor came back
    train(resumed, fresh, 15, seed=2)
    assert_same_models(resumed, uninterrupted)
    assert_same_state(fresh, opt)


def test_a_torch_state_dict_continues_torchs_rule_whatever_this_optimizers_flavor():
    # A missing extra key means torch's value (what `state_dict` leaves out means the same),
    # not the loading optimizer's default: otherwise a keras-flavored optimizer would read
    # a pytorch-flavored checkpoint's weight decay as decoupled.
    model = make_model()
    theirs = torch.optim.RMSprop(model.parameters(), lr=0.02, alpha=0.9, momentum=0.5)
    train(model, theirs, 3)
    saved = copy.deepcopy(theirs.state_dict())
    ours_model = copy.deepcopy(model)
    ours = RMSprop(ours_model.parameters(), flavor="keras", weight_decay=0.1, foreach=False)
    ours.load_state_dict(copy.deepcopy(saved))
    group = ours.param_groups[0]
    assert (group["lr"], group["alpha"], group["eps"]) == (0.02, 0.9, 1e-8)  # from the state dict
    assert group["weight_decay"] == 0 and group["decoupled_weight_decay"] is False
    assert group["eps_in_sqrt"] is False and group["lr_in_momentum"] is False
    assert ours.state[next(ours_model.parameters())]["step"].item() == 3
    train(model, theirs, 10, seed=2)
    train(ours_model, ours, 10, seed=2)
    assert_same_models(ours_model, model)
    assert_same_state(ours, theirs)


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


# ---- state_dict keys: torch's where the rule is torch's ------------------------------------

EXTRA_KEYS = {
    "eps_in_sqrt", "initial_square_avg", "nesterov", "lr_in_momentum", "bias_correction",
    "decoupled_weight_decay", "fused",
}  # fmt: skip


@pytest.mark.parametrize("options", OPTIONS[::5], ids=OPTION_IDS[::5])
def test_a_pytorch_flavor_state_dict_is_torchs_key_for_key(options):
    ours, theirs = make_model(), make_model()
    opt_ours = RMSprop(ours.parameters(), lr=0.01, foreach=False, **options)
    opt_theirs = torch.optim.RMSprop(theirs.parameters(), lr=0.01, foreach=False, **options)
    for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
        assert opt.state_dict()["state"] == {}  # (before the first step, too)
        train(model, opt, 3)
    sd_ours, sd_theirs = opt_ours.state_dict(), opt_theirs.state_dict()
    assert sd_ours["param_groups"] == sd_theirs["param_groups"]  # keys and values
    assert sd_ours["state"].keys() == sd_theirs["state"].keys()
    for key, entry in sd_theirs["state"].items():
        assert sd_ours["state"][key].keys() == entry.keys()
        for name, value in entry.items():
            assert torch.equal(sd_ours["state"][key][name], value), name


def test_other_flavors_keep_the_keys_whose_values_are_not_torchs():
    # `fused` is never written: the path is the loading optimizer's own.
    opt = RMSprop(make_model().parameters(), flavor="tensorflow", fused=False, nesterov=False)
    group = opt.state_dict()["param_groups"][0]
    assert EXTRA_KEYS & set(group) == {"eps_in_sqrt", "initial_square_avg", "lr_in_momentum"}
    assert (group["eps_in_sqrt"], group["initial_square_avg"], group["lr_in_momentum"]) == (
        True, 1.0, True,
    )  # fmt: skip
    keras = RMSprop(make_model().parameters(), flavor="keras", bias_correction=True)
    group = keras.state_dict()["param_groups"][0]
    assert EXTRA_KEYS & set(group) == {
        "eps_in_sqrt", "lr_in_momentum", "decoupled_weight_decay", "bias_correction",
    }  # fmt: skip
    assert set(opt.param_groups[0]) >= EXTRA_KEYS  # the optimizer's own groups keep every key


ROUND_TRIP = dict(momentum=0.9, centered=True, weight_decay=0.01)


@pytest.mark.parametrize("flavor", sorted(rmsprop.FLAVORS))
def test_every_flavor_round_trips_exactly_through_state_dict(flavor):
    # Two groups: the flavor's, and one that sets the extra fields to torch's values (which
    # `state_dict` leaves out) against the flavor's. Loaded into an optimizer built alike, and
    # into a plain pytorch-flavored one: the state dict alone decides the rule.
    def build(model, **kw):
        first, *rest = model.parameters()
        torchlike = dict(eps_in_sqrt=False, initial_square_avg=0.0, decoupled_weight_decay=False)
        groups = [{"params": [first]}, {"params": rest, "bias_correction": True, **torchlike}]
        return RMSprop(groups, foreach=False, **kw)

    options = dict(ROUND_TRIP)
    if rmsprop.flavor(flavor).eps == 0:
        options["eps"] = 1e-8  # (centered, an element's first v - m² may be 0: 0/0)
    model = make_model()
    opt = build(model, flavor=flavor, **options)
    train(model, opt, 5, seed=1)
    saved = copy.deepcopy(opt.state_dict())
    runs = []
    for kw in ({"flavor": flavor, **options}, {}):
        resumed = copy.deepcopy(model)
        fresh = build(resumed, **kw)
        fresh.load_state_dict(copy.deepcopy(saved))
        for group, expected in zip(fresh.param_groups, opt.param_groups):
            assert {k: v for k, v in group.items() if k != "params"} == {
                k: v for k, v in expected.items() if k != "params"
            }
        train(resumed, fresh, 5, seed=2)
        runs.append((resumed, fresh))
    train(model, opt, 5, seed=2)
    for resumed, fresh in runs:
        assert_same_models(resumed, model)
        assert_same_state(fresh, opt)


# ---- the code path is the optimizer's, not the checkpoint's -----------------------------------


def test_a_checkpoint_does_not_change_the_path_and_torchs_bits_stay_torchs():
    # torch's state dict says foreach=None; on the CPU ours would read that as the fused
    # kernel, which agrees with torch only to rounding.
    model = make_model()
    theirs = torch.optim.RMSprop(model.parameters(), momentum=0.9, centered=True)
    train(model, theirs, 5)
    ours_model = copy.deepcopy(model)
    ours = RMSprop(ours_model.parameters(), foreach=False)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    assert ours.param_groups[0]["foreach"] is False and ours.param_groups[0]["fused"] is None
    train(model, theirs, 20, seed=2)
    train(ours_model, ours, 20, seed=2)
    assert_same_models(ours_model, model)
    assert_same_state(ours, theirs)


# ---- torch's own error messages --------------------------------------------------------------


def _param(seed=0):
    return torch.nn.Parameter(torch.randn(1, 1, generator=torch.Generator().manual_seed(seed)))


# torch.optim.RMSprop's invalid inputs: the ones torch 2.13's own optimizer suite checks
# (torch/testing/_internal/common_optimizers.py: get_error_inputs_for_all_optims and
# optim_error_inputs_func_rmsprop, which test/test_optim.py's test_errors runs), then each
# check of torch.optim.RMSprop.__init__. (params, kwargs); params None: a model's.
_P, _Q = _param(0), _param(1)
TORCH_INVALID_INPUTS = {
    "invalid param type": (_P, {}),
    "duplicate parameters": ([_P, _P], {}),
    "duplicates across groups": ([{"params": _P}, {"params": _P}], {}),
    "tensor lr of 2 elements": (None, dict(lr=torch.tensor([0.001, 0.001]))),
    "some names missing": ([("weight", _P), _Q], {}),
    "groups with and without names": ([{"params": [_P], "lr": 1e-2}, {"params": [("w", _Q)]}], {}),
    "momentum -1.0": (None, dict(lr=1e-2, momentum=-1.0)),
    "lr -1": (None, dict(lr=-1)),
    "lr nan": (None, dict(lr=float("nan"))),
    "tensor lr -0.1": (None, dict(lr=torch.tensor(-0.1))),
    "eps -1e-8": (None, dict(eps=-1e-8)),
    "eps nan": (None, dict(eps=float("nan"))),
    "momentum -1": (None, dict(momentum=-1)),
    "weight_decay -0.1": (None, dict(weight_decay=-0.1)),
    "alpha -0.5": (None, dict(alpha=-0.5)),
    "alpha nan": (None, dict(alpha=float("nan"))),
    "lr and alpha: lr first": (None, dict(lr=-1, alpha=-1)),
    "eps and weight_decay: eps first": (None, dict(eps=-1, weight_decay=-1)),
}


def _raised(cls, params, kwargs):
    """What building ``cls`` raised or warned: (type, message)."""
    params = make_model().parameters() if params is None else params
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cls(params, **kwargs)
        except Exception as error:
            return type(error), str(error)
    assert caught, "neither raised nor warned"
    return caught[0].category, str(caught[0].message)


@pytest.mark.parametrize(
    ("params", "kwargs"), TORCH_INVALID_INPUTS.values(), ids=TORCH_INVALID_INPUTS.keys()
)
def test_invalid_inputs_raise_torchs_exception_with_torchs_message_first(params, kwargs):
    expected_type, expected = _raised(torch.optim.RMSprop, params, kwargs)
    got_type, got = _raised(RMSprop, params, kwargs)
    if "ambiguous" in expected:  # an older torch has no check: it trips on `lr < 0` instead
        assert (got_type, got.split(" (")[0]) == (ValueError, "Tensor lr must be 1-element")
        pytest.skip(f"torch {torch.__version__} has no message for this input to match")
    assert got_type is expected_type
    assert got.startswith(expected), (got, expected)


# ---- what the README says is bitwise, is --------------------------------------------------


README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
TORCH_HYPERPARAMETERS = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")


def test_the_readmes_bitwise_claims_hold():
    """Every README line that builds ``RMSprop(model.parameters(), ...)`` and says it is
    exactly or bitwise ``torch.optim.RMSprop`` computes torch's bits, on this machine (Numba
    installed or not)."""
    pattern = r"^opt = (RMSprop\(model\.parameters\(\).*?\))\s*# (.*)$"
    lines = re.findall(pattern, README.read_text(), re.MULTILINE)
    claims = [code for code, comment in lines if re.search(r"bitwise|exactly torch", comment)]
    assert claims, "the README no longer says which call is bitwise torch.optim.RMSprop"
    for code in claims:
        ours, theirs = make_model(), make_model()
        opt_ours = eval(code, {"RMSprop": RMSprop, "model": ours})
        torchs = {key: opt_ours.defaults[key] for key in TORCH_HYPERPARAMETERS}
        opt_theirs = torch.optim.RMSprop(theirs.parameters(), **torchs)  # its default path
        train(ours, opt_ours, 20)
        train(theirs, opt_theirs, 20)
        assert_same_models(ours, theirs)
        assert_same_state(opt_ours, opt_theirs)
