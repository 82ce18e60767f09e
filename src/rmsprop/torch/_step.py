"""What every torch path shares: one step's rule and tensor lists, and the step's protocols.

The bottom of `rmsprop.torch`: the reference paths, the fused kernels'
launchers and the dispatcher all import from here, and it imports nothing of
theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, get_type_hints

import torch
from torch import Tensor

from rmsprop._config import BOOL_FIELDS, STEP_FIELDS

__all__ = [
    "Hyper",
    "StepTensors",
    "as_real_views",
    "mark_written",
    "unscale_or_skip",
]


class Hyper(NamedTuple):
    """One param group's rule for one step: `rmsprop.Config`'s step fields, in its order.

    Every field but ``initial_square_avg``, which only matters when the state
    is created. ``lr`` is a float, or a scalar tensor when the step is
    capturable. Checked against `Config` at import: a field added there must be
    added here (and so reaches the custom op's schema and every kernel's
    lowering).
    """

    lr: Any  # float | Tensor
    decay: float
    eps: float
    eps_in_sqrt: bool
    centered: bool
    momentum: float
    nesterov: bool
    lr_in_momentum: bool
    bias_correction: bool
    weight_decay: float
    decoupled_weight_decay: bool
    maximize: bool


def _check_hyper_is_config() -> None:
    declared = get_type_hints(Hyper)
    bools = {name for name in Hyper._fields if declared[name] is bool}
    if Hyper._fields != STEP_FIELDS or bools != BOOL_FIELDS:
        raise ImportError(
            f"rmsprop.torch's Hyper {Hyper._fields} (bools {sorted(bools)}) is not "
            f"Config's step fields {STEP_FIELDS} (bools {sorted(BOOL_FIELDS)})"
        )


_check_hyper_is_config()


class StepTensors(NamedTuple):
    """One step's tensor lists: entry i of each belongs to parameter i.

    ``grad_avgs`` is empty unless the rule is centered, ``momentum_buffers``
    unless it has momentum; ``state_steps`` are the step counts.
    """

    params: list[Tensor]
    grads: list[Tensor]
    square_avgs: list[Tensor]
    grad_avgs: list[Tensor]
    momentum_buffers: list[Tensor]
    state_steps: list[Tensor]

    def pick(self, indices: Sequence[int]) -> StepTensors:
        """The lists of the parameters at ``indices`` only (an empty list stays empty)."""
        return StepTensors(*([ts[i] for i in indices] if ts else [] for ts in self))

    def written(self, unscaled: bool) -> list[Tensor]:
        """What a kernel's step writes that autograd may have saved: the parameters, and the
        gradients when it unscales them (their version counters must move, as an in-place
        op's would; the state's, which no graph holds, are left: at a hundred tensors,
        moving them costs more than the rest of an unchanged step's checks)."""
        return [*self.params, *self.grads] if unscaled else list(self.params)

    def used_by(self, hyper: Hyper) -> StepTensors:
        """These lists, with the ones ``hyper``'s rule doesn't use emptied."""
        return self._replace(
            grad_avgs=self.grad_avgs if hyper.centered else [],
            momentum_buffers=self.momentum_buffers if hyper.momentum > 0 else [],
        )


def mark_written(tensors: list[Tensor]) -> None:
    """Tells autograd a kernel wrote these tensors in place, as an in-place op would."""
    if _INCREMENT_TAKES_LISTS:
        torch.autograd.graph.increment_version(tensors)
    else:
        for t in tensors:
            torch.autograd.graph.increment_version(t)


try:  # torch < 2.5 bumps one tensor per call
    torch.autograd.graph.increment_version([])
    _INCREMENT_TAKES_LISTS = True
except (RuntimeError, TypeError):
    _INCREMENT_TAKES_LISTS = False


def unscale_or_skip(
    grads: list[Tensor], grad_scale: Tensor | None, found_inf: Tensor | None
) -> bool:
    """GradScaler's protocol where no kernel reads it: False to skip the step, else unscale.

    A nonzero ``found_inf`` means the step must change nothing. Otherwise the
    gradients are multiplied in place by 1/``grad_scale`` (computed as
    `torch.amp.GradScaler.unscale_` computes it, so the results are the same),
    each once, even a parameter's listed twice.
    """
    if found_inf is not None and found_inf.item():
        return False
    if grad_scale is not None and grads:
        inv_scale = grad_scale.double().reciprocal().float()
        by_device: dict[torch.device, list[Tensor]] = {}
        for g in {id(g): g for g in grads}.values():
            by_device.setdefault(g.device, []).append(g)
        for device, device_grads in by_device.items():
            torch._foreach_mul_(device_grads, inv_scale.to(device))
    return True


def as_real_views(*tensors: Any) -> Any:
    """Complex tensors as (..., 2) real views, others (and None) unchanged."""
    return [torch.view_as_real(t) if t is not None and torch.is_complex(t) else t for t in tensors]
