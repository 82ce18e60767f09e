"""Config: the one place settings are validated."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from tables import BAD_CONFIGS, config_kwargs, random_configs

import rmsprop
from rmsprop import Config


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    BAD_CONFIGS,
    ids=[f"{sorted(f)}={list(f.values())}" for f, _, _ in BAD_CONFIGS],
)
def test_bad_setting_is_refused_with_a_message_naming_it(fields, error, message):
    with pytest.raises(error, match=message):
        Config(**fields)


@pytest.mark.parametrize(("fields", "error", "message"), BAD_CONFIGS)
def test_replace_validates_like_the_constructor(fields, error, message):
    with pytest.raises(error, match=message):
        Config().replace(**fields)


def test_replace_rejects_unknown_fields_and_lists_the_known_ones():
    with pytest.raises(TypeError, match=r"unknown Config field\(s\) 'alpha'.*decay"):
        Config().replace(alpha=0.9)


def test_defaults_are_pytorchs():
    assert Config() == rmsprop.flavor("pytorch")
    assert (Config().lr, Config().decay, Config().eps) == (1e-2, 0.99, 1e-8)


def test_numbers_are_stored_as_floats_and_bools_as_bools():
    config = Config(lr=1, momentum=np.float32(0.5), centered=np.bool_(True))
    assert type(config.lr) is float and config.lr == 1.0
    assert type(config.momentum) is float
    assert config.centered is True
    assert config == Config(lr=1.0, momentum=0.5, centered=True)
    assert hash(config) == hash(Config(lr=1.0, momentum=0.5, centered=True))


def test_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().lr = 0.1  # type: ignore[misc]


@pytest.mark.parametrize(("desc", "config"), list(random_configs(10)))
def test_round_trips_through_its_fields(desc, config):
    assert Config(**config_kwargs(config)) == config
    assert eval(repr(config), {"Config": Config}) == config


# Each numeric field's inclusive bounds, and a value just beyond each.
BOUNDARIES = [
    ("lr", 0.0, -1e-300),
    ("decay", 0.0, -1e-300),
    ("decay", 1.0, 1.0 + 2**-52),
    ("eps", 0.0, -1e-300),
    ("initial_square_avg", 0.0, -1e-300),
    ("momentum", 0.0, -1e-300),
    ("momentum", 1.0, 1.0 + 2**-52),
    ("weight_decay", 0.0, -1e-300),
]


@pytest.mark.parametrize(("field", "bound", "beyond"), BOUNDARIES)
def test_boundary_values_are_allowed_and_kept_and_the_next_ones_refused(field, bound, beyond):
    config = Config(**{field: bound})
    assert getattr(config, field) == bound and type(getattr(config, field)) is float
    with pytest.raises(ValueError, match=rf"Config\.{field} = .* is out of range"):
        Config(**{field: beyond})


def test_boundary_values_are_allowed_together():
    config = Config(lr=0.0, decay=0.0, eps=0.0, momentum=1.0, weight_decay=0.0)
    assert (config.lr, config.decay, config.eps, config.momentum, config.weight_decay) == (
        0.0, 0.0, 0.0, 1.0, 0.0,
    )  # fmt: skip
    assert Config(decay=1.0).decay == 1.0


def test_import_rmsprop_imports_no_framework():
    code = "import sys, rmsprop; print(sorted({'torch', 'jax', 'triton'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
