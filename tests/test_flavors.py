"""Flavors: each framework's rule and defaults, as data."""

import pytest

import rmsprop
from rmsprop import FLAVORS, Config

REQUIRED = [
    "pytorch", "tensorflow", "keras", "optax", "timm", "lasagne", "caffe",
    "chainer", "graves", "dqn", "hinton", "textbook",
]  # fmt: skip

# The distinguishing facts of each flavor, as read in each framework's source
# (each Flavor's `source` names it).
EXPECTED = {
    "pytorch": dict(lr=1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False, initial_square_avg=0.0),
    "tensorflow": dict(decay=0.9, eps=1e-10, eps_in_sqrt=True, initial_square_avg=1.0,
                       lr_in_momentum=True),
    "keras": dict(lr=1e-3, decay=0.9, eps=1e-7, eps_in_sqrt=True, lr_in_momentum=True,
                  decoupled_weight_decay=True),
    "optax": dict(decay=0.9, eps=1e-8, eps_in_sqrt=True, initial_square_avg=0.0,
                  lr_in_momentum=True),
    "timm": dict(lr=1e-2, decay=0.9, eps=1e-10, eps_in_sqrt=True, initial_square_avg=1.0,
                 lr_in_momentum=True, decoupled_weight_decay=False),
    "lasagne": dict(lr=1.0, decay=0.9, eps=1e-6, eps_in_sqrt=True),
    "caffe": dict(decay=0.99, eps=1e-8, eps_in_sqrt=False),
    "chainer": dict(lr=1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False),
    "graves": dict(lr=1e-4, decay=0.95, eps=1e-4, eps_in_sqrt=True, centered=True,
                   momentum=0.9, lr_in_momentum=True),
    "dqn": dict(lr=2.5e-4, decay=0.95, eps=0.01, eps_in_sqrt=True, centered=True, momentum=0.0),
    "hinton": dict(decay=0.9, eps=0.0),
    "textbook": dict(lr=1e-2, decay=0.9, eps=1e-8, eps_in_sqrt=True, initial_square_avg=0.0),
}  # fmt: skip


def test_every_required_flavor_exists():
    assert set(REQUIRED) <= set(FLAVORS)
    assert next(iter(FLAVORS)) == "pytorch"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_flavor_has_its_frameworks_rule(name):
    config = rmsprop.flavor(name)
    for field, value in EXPECTED[name].items():
        assert getattr(config, field) == value, field


@pytest.mark.parametrize("name", list(FLAVORS))
def test_every_flavor_cites_its_source(name):
    preset = FLAVORS[name]
    assert preset.name == name
    assert isinstance(preset.config, Config)
    assert preset.title and preset.source


def test_overrides_apply_and_are_validated():
    assert rmsprop.flavor("tensorflow", lr=0.045, momentum=0.9).momentum == 0.9
    assert rmsprop.flavor("tensorflow", lr=0.045).initial_square_avg == 1.0
    with pytest.raises(ValueError, match=r"Config\.momentum = 2"):
        rmsprop.flavor("keras", momentum=2)
    with pytest.raises(TypeError, match="unknown Config field"):
        rmsprop.flavor("keras", rho=0.9)


@pytest.mark.parametrize("bad", ["tf", "PyTorch", "", None, 3])
def test_unknown_flavor_lists_the_known_ones(bad):
    with pytest.raises(ValueError, match=r"unknown flavor .*; the known flavors are: pytorch, "):
        rmsprop.flavor(bad)


def test_flavor_table_is_read_only():
    with pytest.raises(TypeError):
        FLAVORS["mine"] = FLAVORS["pytorch"]  # type: ignore[index]
