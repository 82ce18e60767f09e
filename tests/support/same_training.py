"""Bitwise comparisons of two training runs: their models, and their optimizers' state."""

from __future__ import annotations

from typing import Any


def assert_same_models(a: Any, b: Any) -> None:
    import torch

    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def assert_same_state(opt_a: Any, opt_b: Any) -> None:
    import torch

    assert len(opt_a.state) == len(opt_b.state)
    for sa, sb in zip(opt_a.state.values(), opt_b.state.values()):
        assert sorted(sa) == sorted(sb)
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key
