"""The textbook step, and what each flavor does with the same gradient (NumPy reference)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

import rmsprop
import rmsprop.numpy as rnp

__all__ = ["TextbookStep", "first_steps", "step_size_series", "textbook_step"]

THETA = (0.2, 0.4, 0.6)
GRAD = (-0.5, 0.3, 0.24)
CONFIG = rmsprop.Config(lr=0.01, decay=0.9, eps=1e-8, eps_in_sqrt=True)


@dataclasses.dataclass(frozen=True)
class TextbookStep:
    """One step of the textbook rule from `THETA` with gradient `GRAD`."""

    config: rmsprop.Config
    theta: np.ndarray
    grad: np.ndarray
    square_avg: np.ndarray  # E[g²] after the step
    new_theta: np.ndarray

    def lines(self) -> list[str]:
        """The step as the terminal and the report print it: the rule, then the numbers."""
        c = self.config
        t, g, v = float(self.theta[0]), float(self.grad[0]), float(self.square_avg[0])
        by_hand = t - c.lr * g / math.sqrt(v + c.eps)
        return [
            "E[g²] ← ρ·E[g²] + (1 − ρ)·g²",
            "θ     ← θ − η·g / √(E[g²] + ε)",
            f"with η = {c.lr:g}, ρ = {c.decay:g}, ε = {c.eps:g} inside the root, E[g²] from 0",
            f"theta before:         {self.theta}",
            f"gradient:             {self.grad}",
            f"E[g²] after one step: {self.square_avg}",
            f"theta after one step: {self.new_theta}",
            f"by hand, θ₁ = {t:g} − {c.lr:g}·({g:g}) / √({v:g} + {c.eps:g}) = {by_hand:.8f}",
        ]

    @property
    def moved(self) -> np.ndarray:
        """|Δθ| per coordinate."""
        moved: np.ndarray = np.abs(self.new_theta - self.theta)
        return moved


def textbook_step() -> TextbookStep:
    """θ = [0.2, 0.4, 0.6], g = [-0.5, 0.3, 0.24], η = 0.01, ρ = 0.9, ε = 1e-8 inside the root.

    Example:
        >>> print(textbook_step().new_theta)
        [0.23162277 0.36837724 0.56837725]
    """
    theta, grad = np.array(THETA), np.array(GRAD)
    state = rnp.init(theta, CONFIG)
    new_theta, new_state = rnp.update(theta, grad, state, CONFIG)
    return TextbookStep(CONFIG, theta, grad, new_state.square_avg, new_theta)


def first_steps(flavors: Sequence[str], lr: float = CONFIG.lr) -> dict[str, np.ndarray]:
    """θ after the same first step in each flavor: its own rule, ρ and ε; the same ``lr``."""
    result = {}
    for name in flavors:
        config = rmsprop.flavor(name, lr=lr)
        theta = np.array(THETA)
        new_theta, _ = rnp.update(theta, np.array(GRAD), rnp.init(theta, config), config)
        result[name] = new_theta
    return result


def step_size_series(flavor: str, grad: float, steps: int) -> np.ndarray:
    """|Δθ|/η at each of ``steps`` steps under a constant gradient ``grad`` (one parameter).

    For a constant gradient every RMSprop eventually steps η·g/|g| = η; how it
    gets there (from above, from below, or never) is what the flavors change.
    """
    config = rmsprop.flavor(flavor)
    theta = np.zeros(1)
    state = rnp.init(theta, config)
    sizes = np.empty(steps)
    for step in range(steps):
        new_theta, state = rnp.update(theta, np.array([grad]), state, config)
        sizes[step] = abs(float(new_theta[0] - theta[0])) / config.lr
        theta = new_theta
    return sizes
