"""The plan cache both fused paths share: what identifies a plan, following gradients, eviction."""

from __future__ import annotations

from collections import OrderedDict

import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs the torch extra")

from rmsprop.torch._fused import plans as _plans  # noqa: E402


class FakePlan:
    def __init__(self):
        self.grads, self.signatures, self.pointed = [], [], 0

    def point_grads(self, addresses):
        self.grads, self.pointed = addresses, self.pointed + 1


def lists(n=3, dtype=torch.float32):
    params = [torch.zeros(4, 4, dtype=dtype) for _ in range(n)]
    return params, [torch.zeros_like(p) for p in params]


def test_the_identity_changes_with_any_tensor_its_size_dtype_or_layout():
    params, v = lists()
    key = _plans.identity(params, v, [], [], [])
    assert key == _plans.identity(params, v, [], [], [])
    changed = {
        "new state": (params, [t.clone() for t in v], [], []),
        "centered now": (params, v, v, []),
        "a parameter's layout": ([p.t() for p in params], v, [], []),
        "a parameter's size": ([p[:2] for p in params], v, [], []),
        "a parameter's dtype": ([p.view(torch.int32) for p in params], v, [], []),
        # Same addresses, other tensors: the kernel would write past them or in another width.
        "the state's size": (params, [t[:2] for t in v], [], []),
        "the state's dtype": (params, [t.view(torch.int32) for t in v], [], []),
        "the state's layout": (params, [t.t() for t in v], [], []),
        "the momentum buffer's size": (params, v, [], [t[:1] for t in v]),
    }
    for what, (p, square_avgs, grad_avgs, buffers) in changed.items():
        assert key != _plans.identity(p, square_avgs, grad_avgs, buffers, []), what


def test_gradient_signatures_are_everything_but_their_addresses():
    g = torch.zeros(3, 4)
    assert _plans.signatures([g]) == _plans.signatures([torch.ones(3, 4)])
    for other in (g.t().contiguous().t(), g.double(), g[:2], g.view(4, 3), torch._neg_view(g)):
        assert _plans.signatures([g, other]) != _plans.signatures([g, g])
    z = torch.zeros(3, dtype=torch.complex64)
    assert _plans.signatures([z.conj()]) != _plans.signatures([z])


def test_a_cached_plan_follows_moved_gradients_and_is_rebuilt_for_other_ones():
    cache: OrderedDict = OrderedDict()
    _, grads = lists()
    built = []

    def build():
        built.append(FakePlan())
        return built[-1]

    plan = _plans.cached_plan(cache, "k", grads, build)
    assert plan.grads == [g.data_ptr() for g in grads]
    assert _plans.cached_plan(cache, "k", grads, build) is plan and plan.pointed == 0
    moved = [g.clone() for g in grads]  # new addresses, same signatures
    assert _plans.cached_plan(cache, "k", moved, build) is plan and plan.pointed == 1
    assert plan.grads == [g.data_ptr() for g in moved]
    # The same memory seen through another layout: not the gradient the plan checked.
    transposed = [g.t() for g in moved]
    assert _plans.cached_plan(cache, "k", transposed, build) is built[1] is not plan


def test_the_cache_keeps_the_most_recently_used_plans():
    cache: OrderedDict = OrderedDict()
    _, grads = lists()
    for key in range(_plans.KEPT + 5):
        _plans.cached_plan(cache, key, grads, FakePlan)
        _plans.cached_plan(cache, 0, grads, FakePlan)  # stays in use
    assert len(cache) == _plans.KEPT
    assert 0 in cache and 1 not in cache and _plans.KEPT + 4 in cache


def test_every_use_of_the_cache_holds_the_lock():
    # Two optimizers may step at once in two threads: a plan looked up by one
    # must not be evicted by the other before it is used.
    class CheckedCache(OrderedDict):
        def _check(self):
            assert _plans._lock.locked(), "the plan cache was used without its lock"

        def get(self, *args):
            self._check()
            return super().get(*args)

        def move_to_end(self, *args):
            self._check()
            super().move_to_end(*args)

        def __setitem__(self, *args):
            self._check()
            super().__setitem__(*args)

        def popitem(self, last=True):
            self._check()
            return super().popitem(last=last)

    cache = CheckedCache()
    _, grads = lists()
    for key in [*range(_plans.KEPT + 2), 5, 5]:
        _plans.cached_plan(cache, key, grads, FakePlan)
    assert len(cache) == _plans.KEPT
