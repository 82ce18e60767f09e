"""The optimizers the demo compares: PyTorch's baselines and RMSprop flavors."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch

from rmsprop import FLAVORS
from rmsprop.torch import RMSprop

__all__ = ["BASELINES", "OptimizerSpec", "optimizer_specs"]


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer of the comparison, built with a learning rate chosen later.

    Attributes:
        label: what tables and legends call it.
        kind: ``"sgd"``, ``"momentum"``, ``"adagrad"``, ``"adam"`` or ``"rmsprop"``.
        flavor: the RMSprop flavor (``None`` for the baselines).
        color: a matplotlib colour, fixed per optimizer across every figure.
    """

    label: str
    kind: str
    flavor: str | None = None
    color: str = "black"

    @property
    def is_rmsprop(self) -> bool:
        return self.kind == "rmsprop"

    def build(self, params: Iterable[torch.Tensor], lr: float) -> torch.optim.Optimizer:
        """The optimizer over ``params``: torch.optim's, or `rmsprop.torch.RMSprop`."""
        if self.kind == "sgd":
            return torch.optim.SGD(params, lr=lr)
        if self.kind == "momentum":
            return torch.optim.SGD(params, lr=lr, momentum=0.9)
        if self.kind == "adagrad":
            return torch.optim.Adagrad(params, lr=lr)
        if self.kind == "adam":
            return torch.optim.Adam(params, lr=lr)
        # Every other setting (decay, eps, where eps goes, v0, centering) is the flavor's own.
        return RMSprop(params, flavor=self.flavor, lr=lr)


# Muted colours for the baselines, strong ones for the RMSprop flavors.
BASELINES = (
    OptimizerSpec("SGD", "sgd", color="#7f7f7f"),
    OptimizerSpec("SGD + momentum 0.9", "momentum", color="#8c564b"),
    OptimizerSpec("Adagrad", "adagrad", color="#bcbd22"),
    OptimizerSpec("Adam", "adam", color="#9467bd"),
)
_FLAVOR_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#17becf", "#e377c2", "#000000")


def optimizer_specs(flavors: Iterable[str]) -> list[OptimizerSpec]:
    """The baselines followed by RMSprop in each of ``flavors`` (known names, in order)."""
    specs = list(BASELINES)
    for index, name in enumerate(flavors):
        if name not in FLAVORS:
            raise ValueError(f"unknown flavor {name!r}")
        color = _FLAVOR_COLORS[index % len(_FLAVOR_COLORS)]
        specs.append(OptimizerSpec(f"RMSprop ({name})", "rmsprop", name, color))
    return specs
