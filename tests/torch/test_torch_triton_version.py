"""Which triton releases the fused kernel takes: the `triton` extra's floor, checked at import."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the torch backend needs the torch extra")


from rmsprop.kernels import triton as fused_triton
from rmsprop.torch import _fused

VERSIONS = [
    ("3.0.0", False),  # what torch 2.4 pins
    ("3.5.1", False),
    ("3.6.0", True),
    ("3.6.0+git1a2b3c", True),
    ("3.10.0", True),
    ("4.0.0rc1", True),
    ("nightly", False),
]


@pytest.mark.parametrize(("version", "takes"), VERSIONS)
def test_triton_releases_before_the_floor_are_refused_by_name(version, takes):
    reason = fused_triton.too_old(version)
    assert (reason == "") == takes
    if not takes:
        assert f"triton {version}" in reason and ">= 3.6" in reason


def test_an_installed_triton_too_old_makes_the_kernel_unavailable_with_that_reason():
    triton = pytest.importorskip("triton", reason="checks the triton installed here")
    reason = fused_triton.too_old(triton.__version__)
    assert (reason == "") == fused_triton.AVAILABLE
    if reason:
        assert _fused.why_not_on("cuda") == reason
