"""docs/flavors.md and docs/porting.md: generated from the code, and every number recomputed."""

from __future__ import annotations

import contextlib
import io
import math
import re
import subprocess
import sys

import numpy as np
import pytest
from flavor_docs import FLAVOR_DOCS, block_pattern, render
from tables import TOLERANCES

import rmsprop
import rmsprop.numpy as rnp
from rmsprop.flavors import flavor_table

PORTING = (FLAVOR_DOCS.parent / "porting.md").read_text()
# Prose wraps anywhere: compare it with its whitespace collapsed.
PORTING_PROSE = " ".join(PORTING.split())


def test_flavor_docs_show_exactly_the_generated_table():
    text = FLAVOR_DOCS.read_text()
    (generated,) = block_pattern("flavor-table").findall(text)
    assert generated.splitlines()[1:-1] == flavor_table().splitlines()


def test_the_command_line_prints_the_table_the_docs_show():
    pytest.importorskip("rmsprop.cli", reason="the rmsprop command is rmsprop.cli")
    shown = subprocess.run(
        [sys.executable, "-m", "rmsprop", "flavors", "--markdown"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (generated,) = block_pattern("flavor-table").findall(FLAVOR_DOCS.read_text())
    assert shown.splitlines() == generated.splitlines()[1:-1]


def test_flavor_docs_are_generated_from_the_presets():
    text = FLAVOR_DOCS.read_text()
    assert text == render(text), "run: python tests/parity/flavor_docs.py"


def test_flavor_docs_mention_every_flavor_and_its_source():
    text = FLAVOR_DOCS.read_text()
    for preset in rmsprop.FLAVORS.values():
        assert f"### `{preset.name}`: {preset.title}" in text
        assert f"Source: {preset.source}." in text


# -- docs/porting.md: its examples run and print what it says -----------------------------

# A python block, and the text block right after it if there is one (its output).
EXAMPLES = re.findall(r"```python\n(.*?)```\n(?:\n```text\n(.*?)```)?", PORTING, flags=re.DOTALL)


def test_porting_guide_has_examples():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize(
    ("code", "output"), EXAMPLES, ids=[f"block-{i}" for i in range(len(EXAMPLES))]
)
def test_porting_example_runs_and_prints_what_the_guide_says(code, output):
    if "import torch" in code:
        pytest.importorskip("torch", reason="this example uses the torch backend")
    if "jax" in code:
        pytest.importorskip("rmsprop.jax", reason="this example uses the JAX backend (jax, optax)")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "porting.md", "exec"), {})
    if output:
        assert printed.getvalue() == output
    promised = re.findall(r"print\(.*\)  # (.*)", code)
    assert printed.getvalue().splitlines()[: len(promised)] == promised


# -- docs/porting.md: the numbers in its prose ---------------------------------------------


def one_step(name: str, **changes: float) -> float:
    """θ after one step from θ = 10 with g = 10, lr = 0.1, in a flavor."""
    config = rmsprop.flavor(name, lr=0.1, **changes)
    theta = np.array(10.0)
    theta, _ = rnp.update(theta, np.array(10.0), rnp.init(theta, config), config)
    return float(theta)


def step_after_a_learning_rate_drop(lr_in_momentum: bool) -> float:
    """The step after a 10× drop, the buffer filled at lr = 1 with u = 1 (ρ = 0, ε = 0, g = 1)."""
    config = rmsprop.Config(lr=1.0, decay=0.0, eps=0.0, momentum=0.9, lr_in_momentum=lr_in_momentum)
    theta = np.array(0.0)
    state = rnp.init(theta, config)
    for _ in range(300):
        theta, state = rnp.update(theta, np.array(1.0), state, config)
    after, _ = rnp.update(theta, np.array(1.0), state, config.replace(lr=0.1))
    return float(theta - after)


def step_at_the_end_of_warm_up(lr_in_momentum: bool) -> float:
    """The 5th step of a linear warm-up to lr = 1, with u = 1 (ρ = 0, ε = 0, g = 1)."""
    config = rmsprop.Config(lr=1.0, decay=0.0, eps=0.0, momentum=0.9, lr_in_momentum=lr_in_momentum)
    theta = np.array(0.0)
    state = rnp.init(theta, config)
    for step in range(1, 6):
        before = theta
        theta, state = rnp.update(theta, np.array(1.0), state, config.replace(lr=step / 5))
    return float(before - theta)


def first_step(initial: float, g: float, rho: float = 0.9, eps: float = 1e-10) -> float:
    """The first step over lr, from an average starting at ``initial`` (ε inside)."""
    config = rmsprop.Config(
        lr=1.0, decay=rho, eps=eps, eps_in_sqrt=True, initial_square_avg=initial
    )
    theta = np.array(0.0)
    theta, _ = rnp.update(theta, np.array(g), rnp.init(theta, config), config)
    return float(-theta)


def inside_over_outside(eps: float) -> float:
    """How much smaller the step is with ε inside the root, as v → 0."""
    outside = rmsprop.Config(lr=1.0, decay=0.9, eps=eps)
    inside = outside.replace(eps_in_sqrt=True)
    theta, tiny = np.array(0.0), np.array(1e-30)

    def step(config: rmsprop.Config) -> float:
        return -float(rnp.update(theta, tiny, rnp.init(theta, config), config)[0])

    return step(outside) / step(inside)


def worst_ratio_with_eps_one() -> float:
    v = np.linspace(0, 100, 1_000_001)
    return float(np.max((np.sqrt(v) + 1) / np.sqrt(v + 1)))


def short(x: float) -> str:
    """1e-2 rather than Python's 1e-02, as the guide writes it."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def preset(name: str) -> rmsprop.Config:
    return rmsprop.FLAVORS[name].config


F32_RHO = float(np.float32(0.9))

CLAIMS = [
    # 1. where the average starts
    f"≈ {first_step(0.0, 1.0):.2f}·lr at ρ = 0.9",
    f"{first_step(0.0, 1.0, rho=0.95):.2f}·lr at ρ = 0.95",
    f"{first_step(0.0, 1.0, rho=0.99):.0f}·lr at ρ = 0.99",
    f"the first step is {first_step(1.0, 1e-3) * 1e3:.2f}e-3·lr",
    f"about {round(first_step(0.0, 1e-3) / first_step(1.0, 1e-3), -2):.0f} times smaller",
    f"its weight is {0.9**100:.1e} at ρ = 0.9, but still {0.99**100:.2f} at ρ = 0.99",
    f"and still {0.999**1000:.2f} after 1000 steps at ρ = 0.999",
    # 2. ε's placement
    f"{inside_over_outside(1e-10):,.0f} times for TF1's ε = 1e-10",
    f"{inside_over_outside(1e-8):,.0f} times for PyTorch's 1e-8",
    f"{inside_over_outside(1e-7):,.0f} times for Keras' 1e-7",
    f"{inside_over_outside(1e-3):.1f} times for the ε = 1e-3",
    f"{inside_over_outside(1e-2):.0f} times for DQN's 0.01",
    f"the two denominators are {math.sqrt(0.01 + 0.01):.3f} and {0.1 + 0.1:g}",
    f"a factor {(0.1 + 0.1) / math.sqrt(0.01 + 0.01):.2f}",
    f"is up to {worst_ratio_with_eps_one():.2f} times smaller than PyTorch's √v + 1",
    # 3. the learning rate and the momentum buffer
    f"is **{step_after_a_learning_rate_drop(True):.1f}·η** with the lr inside the buffer",
    f"**{step_after_a_learning_rate_drop(False):.1f}·η** with the lr outside",
    "about 1/(1 - μ) steps",
    # 4. weight decay: L2 is divided by √v ≈ σ
    f"{1 / 1e-3:.0f} times at σ = 1e-3",
    # 5. defaults, as the flavors hold them
    f"lr {short(preset('pytorch').lr)} (PyTorch, timm) vs {short(preset('keras').lr)} (Keras)",
    f"lr {short(preset('timm').lr)} (PyTorch, timm)",
    f"ρ {preset('pytorch').decay} (PyTorch) vs {preset('keras').decay} (TF, Keras, optax, timm)",
    f"ε {short(preset('pytorch').eps)} vs {short(preset('keras').eps)} vs "
    f"{short(preset('tensorflow').eps)}",
    # one step, in words
    f"PyTorch moves {(10 - one_step('pytorch')) / 0.1:.0f}·lr",
    f"Keras and optax {(10 - one_step('keras')) / 0.1:.2f}·lr",
    f"TF1 and timm {(10 - one_step('tensorflow')) / 0.1:.2f}·lr",
    f"DQN {(10 - one_step('dqn')) / 0.1:.2f}·lr",
    # the JAX example's comparison
    f"lr/√(1 - ρ) ≈ {first_step(0.0, 1.0):.2f}·lr = {0.0032 * first_step(0.0, 1.0):.4f}",
    f"here 0.0032·1/√{0.9 + 0.1 * 1**2 + 1e-3:.3f} and 0.0032·2/√{0.9 + 0.1 * 2**2 + 1e-3:.3f}",
    # when numbers still differ
    f"0.9 becomes {F32_RHO:.9f}…",
    f"1 - ρ is off by {abs((1 - F32_RHO) - 0.1) / 0.1:.1e} relative",
    f"hold float64 runs to {TOLERANCES['float64']['rtol']:g}",
]


@pytest.mark.parametrize("claim", CLAIMS)
def test_porting_guide_quotes_the_computed_number(claim):
    assert claim in PORTING_PROSE


def test_sanity_values_agree_between_flavors_the_guide_pairs():
    # "Keras and optax", "TF1 and timm": the guide says each pair takes the same first step.
    assert one_step("keras") == pytest.approx(one_step("optax"), abs=1e-7)
    assert one_step("tensorflow") == one_step("timm")
