"""The plan cache both fused paths share: what identifies a plan, following gradients, eviction."""

from __future__ import annotations

from collections import OrderedDict

import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs the torch extra")

from rmsprop.torch import _plans  # noqa: E402


class FakePlan:
    def __init__(self, grads, follows=True):
        self.grads = list(map(torch.Tensor.data_ptr, grads))
        self.follows = follows
        self.followed = 0

    def follow_grads(self, params, grads, addresses):
        self.followed += 1
        if self.follows:
            self.grads = addresses
        return self.follows


def lists(n=3, dtype=torch.float32):
    params = [torch.zeros(4, dtype=dtype) for _ in range(n)]
    return params, [torch.zeros_like(p) for p in params]


def test_the_identity_changes_with_any_tensor_its_size_dtype_or_layout():
    params, v = lists()
    key = _plans.identity(params, v, [], [], [])
    assert key == _plans.identity(params, v, [], [], [])
    assert key != _plans.identity(params, [torch.zeros(4) for _ in v], [], [], [])  # new state
    assert key != _plans.identity(params, v, v, [], [])  # centered now
    assert key != _plans.identity([p.view(2, 2).t() for p in params], v, [], [], [])  # layout
    assert key != _plans.identity([p[:2] for p in params], v, [], [], [])  # size
    as_int = [p.view(torch.int32) for p in params]  # same memory, another dtype
    assert key != _plans.identity(as_int, v, [], [], [])


def test_a_cached_plan_follows_moved_gradients_or_is_rebuilt():
    cache: OrderedDict = OrderedDict()
    params, grads = lists()
    built = []

    def build(follows=True):
        built.append(FakePlan(grads, follows))
        return built[-1]

    plan = _plans.cached_plan(cache, "k", params, grads, build)
    assert _plans.cached_plan(cache, "k", params, grads, build) is plan and plan.followed == 0
    grads = [g.clone() for g in grads]  # new gradients, new addresses
    assert _plans.cached_plan(cache, "k", params, grads, build) is plan and plan.followed == 1
    cache["k"].follows = False  # a gradient the plan cannot take: rebuilt
    grads = [g.clone() for g in grads]
    assert _plans.cached_plan(cache, "k", params, grads, build) is built[1] is not plan


def test_the_cache_keeps_the_most_recently_used_plans():
    cache: OrderedDict = OrderedDict()
    params, grads = lists()
    for key in range(_plans.KEPT + 5):
        _plans.cached_plan(cache, key, params, grads, lambda: FakePlan(grads))
        _plans.cached_plan(cache, 0, params, grads, lambda: FakePlan(grads))  # stays in use
    assert len(cache) == _plans.KEPT
    assert 0 in cache and 1 not in cache and _plans.KEPT + 4 in cache
