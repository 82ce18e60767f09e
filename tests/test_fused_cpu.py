"""The fused CPU kernel through the NumPy backend: sizes, threads, layouts, refusals.

Every rule against the float64 oracle, under a changing lr: tests/test_oracle.py
(its numpy-fused rows)."""

from importlib import metadata

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tables import TOLERANCES, config_kwargs, learning_rate_at

import rmsprop.numpy as rnp
from rmsprop import Config, flavor

pytest.importorskip("numba", reason="the fused CPU kernel needs the fast extra (numba)")
from rmsprop.kernels import numba_cpu as _fused_cpu

# Below, at and beyond the chunk, and big enough to be split over threads.
SIZES = [0, 1, 33, _fused_cpu.CHUNK + 3, 5 * _fused_cpu.CHUNK + 1]
# A plain rule and rich ones (every rule, at the oracle's small sizes: tests/test_oracle.py).
RULES = {
    "plain": flavor("pytorch"),
    "centered-momentum": flavor("pytorch", momentum=0.9, centered=True, weight_decay=0.1),
    "tf-nesterov": flavor("tensorflow", momentum=0.9, nesterov=True, bias_correction=True),
    "keras-lr-in-momentum": flavor("keras", momentum=0.5, weight_decay=0.1, maximize=True),
}


def trajectories(config, dtype, steps=5, seed=0):
    rng = np.random.default_rng(seed)
    start = [rng.standard_normal(n).astype(dtype) for n in SIZES]
    grads = [[rng.standard_normal(n).astype(dtype) for n in SIZES] for _ in range(steps)]
    fused, reference = [p.copy() for p in start], [p.astype(np.float64) for p in start]
    opt = rnp.RMSprop(fused, config, fused=True)
    state = rnp.init(reference, config)
    for step, step_grads in enumerate(grads):
        scheduled = config.replace(lr=learning_rate_at(config, step))
        opt.config = scheduled
        opt.step(step_grads)
        wide = [g.astype(np.float64) for g in step_grads]
        reference, state = rnp.update(reference, wide, state, scheduled)
    return fused, reference


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config", RULES.values(), ids=list(RULES))
def test_chunk_edges_and_thread_shares_match_the_reference(config, dtype, monkeypatch):
    monkeypatch.setenv("RMSPROP_NUM_THREADS", "2")
    monkeypatch.setattr(_fused_cpu, "SERIAL_BELOW", 4 * _fused_cpu.CHUNK)  # split over threads
    fused, reference = trajectories(config, np.dtype(dtype))
    for got, want in zip(fused, reference):
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, want, **TOLERANCES[dtype])


def test_float16_arrays_get_float32_math():
    # One step on float16 equals the float32 step on the same values, rounded once.
    config = flavor("keras", momentum=0.9)
    half = [np.full(70_000, 0.5, np.float16)]
    single = [half[0].astype(np.float32)]
    g = np.full(70_000, 0.25, np.float16)
    rnp.RMSprop(half, config, fused=True).step([g])
    rnp.RMSprop(single, config, fused=True).step([g.astype(np.float32)])
    np.testing.assert_array_equal(half[0], single[0].astype(np.float16))


def test_complex_and_non_contiguous_arrays():
    config = flavor("pytorch", momentum=0.5, centered=True)
    rng = np.random.default_rng(1)
    z = rng.standard_normal(9) + 1j * rng.standard_normal(9)
    strided = rng.standard_normal((6, 4)).T  # not C-contiguous: the reference takes it
    fused_params, ref_params = [z.copy(), strided.T.copy().T], [z.copy(), strided.copy()]
    assert not fused_params[1].flags.c_contiguous
    fused_opt = rnp.RMSprop(fused_params, config, fused=True)
    ref_opt = rnp.RMSprop(ref_params, config, fused=False)
    for _ in range(5):
        grads = [rng.standard_normal(9) + 1j * rng.standard_normal(9), rng.standard_normal((4, 6))]
        fused_opt.step(grads)
        ref_opt.step(grads)
    for a, b in zip(fused_params, ref_params):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


def test_none_gradients_and_bad_calls(monkeypatch):
    params = [np.ones(3), np.ones(2)]
    opt = rnp.RMSprop(params, fused=True, **config_kwargs(Config()))
    opt.step([np.ones(3), None])
    assert params[1].tolist() == [1.0, 1.0] and opt.state[1].step == 0 and opt.state[0].step == 1
    with pytest.raises(ValueError, match="got 1 gradients for 2 parameters"):
        opt.step([np.ones(3)])
    monkeypatch.setattr(_fused_cpu, "AVAILABLE", False)
    monkeypatch.setattr(_fused_cpu, "WHY_UNAVAILABLE", "numba is not installed")
    with pytest.raises(RuntimeError, match="fused=True, but numba is not installed"):
        rnp.RMSprop([np.ones(2)], fused=True)
    assert rnp.RMSprop([np.ones(2)]).fused is False  # the default quietly uses the reference


def test_coefficients_fold_the_rule():
    from rmsprop._lowering import coefficients

    c = coefficients(Config(lr=0.1, eps=1e-3, eps_in_sqrt=True), step=1)
    assert (c.eps_in, c.eps_out, c.lr_out, c.nest_u, c.nest_b) == (1e-3, 0.0, 0.1, 0.0, 1.0)
    tf = Config(lr=0.1, momentum=0.9, lr_in_momentum=True, nesterov=True, decay=0.9)
    c = coefficients(tf.replace(bias_correction=True), step=2)
    assert (c.buf_scale, c.lr_out, c.nest_u, c.nest_b) == (0.1, 1.0, 0.1, 0.9)
    assert c.bias == pytest.approx(1 / (1 - 0.81))


@given(
    numels=st.lists(st.integers(0, 3000), max_size=8),
    threads=st.integers(1, 4),
    serial_below=st.sampled_from([0, 1000, 10**9]),
)
def test_table_shares_cover_every_element_once_in_balanced_cache_line_pieces(
    numels, threads, serial_below
):
    shares = _fused_cpu._split(numels, threads, serial_below)
    rows = [tuple(row) for share in shares for row in share]
    covered = {t: [] for t in range(len(numels))}
    for t, start, stop in rows:
        assert 0 <= start < stop <= numels[t]
        covered[t].append((start, stop))
    for t, n in enumerate(numels):  # in order, without gaps or overlaps
        edges = [0] + [x for piece in covered[t] for x in piece] + [n]
        assert edges[0::2] == edges[1::2]
    sizes = [sum(int(stop - start) for _, start, stop in share) for share in shares]
    assert len(shares) <= threads
    if len(shares) > 1:
        share = -(-sum(numels) // threads)
        assert all(size <= share + 15 for size in sizes)
        # Every share but the last ends on a 16-element (64-byte float32) boundary.
        assert all(sum(sizes[: k + 1]) % 16 == 0 for k in range(len(sizes) - 1))


def test_a_table_holds_only_memory_the_kernel_updates_directly():
    with pytest.raises(TypeError, match="float32 or float64 memory, not float16"):
        _fused_cpu.Table(np.float16, [3])


# ---- what the kernel must never be handed ---------------------------------------------


def test_state_of_another_size_goes_to_the_reference_which_refuses_it_unchanged():
    params = [np.ones(4), np.ones(8)]
    opt = rnp.RMSprop(params, fused=True)
    opt.step([np.ones(4), np.ones(8)])
    opt.params[1] = np.ones(16)  # resized under the optimizer; its state stays at 8
    before = [p.copy() for p in opt.params], [leaf.step for leaf in opt.state]
    with pytest.raises(ValueError, match=r"broadcast"):
        opt.step([np.ones(4), np.ones(16)])
    assert all(np.array_equal(a, b) for a, b in zip(opt.params, before[0]))
    assert [leaf.step for leaf in opt.state] == before[1]


def test_big_endian_arrays_keep_their_precision():
    config = flavor("pytorch", momentum=0.9, centered=True)
    rng = np.random.default_rng(3)
    start, grad = rng.standard_normal(50), rng.standard_normal(50)
    swapped = [start.astype(">f8")]
    rnp.RMSprop(swapped, config, fused=True).step([grad.astype(">f8")])
    reference = [start.copy()]
    rnp.RMSprop(reference, config, fused=False).step([grad])
    np.testing.assert_array_equal(swapped[0], reference[0])


def test_read_only_parameters_and_bad_thread_counts_are_refused_before_any_change(monkeypatch):
    frozen = np.ones(3)
    frozen.flags.writeable = False
    opt = rnp.RMSprop([np.ones(3), frozen], fused=True)
    with pytest.raises(ValueError, match=r"params\[1\] is read-only"):
        opt.step([np.ones(3), np.ones(3)])
    assert [leaf.step for leaf in opt.state] == [0, 0]
    monkeypatch.setenv("RMSPROP_NUM_THREADS", "0")
    opt = rnp.RMSprop([np.ones(3)], fused=True)
    with pytest.raises(ValueError, match="RMSPROP_NUM_THREADS must be a positive integer"):
        opt.step([np.ones(3)])
    assert opt.state[0].step == 0 and np.array_equal(opt.params[0], np.ones(3))


# ---- one result however the tables' shares are spread ---------------------------------


def table_trajectory(config, dtype, spread, monkeypatch, steps=3):
    """θ, v (m, b) after ``steps`` of one address table over SIZES, run by ``spread``: "one"
    (one thread), "pool" (two threads of the Python pool) or "tbb" (two of Numba's TBB)."""
    from rmsprop._lowering import coefficients, switches

    monkeypatch.setenv("RMSPROP_CPU_THREADS", "pool" if spread == "pool" else "auto")
    monkeypatch.setattr(_fused_cpu, "SERIAL_BELOW", 4 * _fused_cpu.CHUNK)
    monkeypatch.setattr(_fused_cpu, "SERIAL_BELOW_POOL", 4 * _fused_cpu.CHUNK)
    if spread == "tbb":
        try:
            metadata.version("tbb")
        except metadata.PackageNotFoundError:
            pytest.skip("the tbb package is not installed: the Python pool takes every step")
        assert _fused_cpu.threading_layer() == "tbb"
    on = switches(config)
    rng = np.random.default_rng(7)
    rows = 3 + on.centered + on.momentum
    arrays = [[rng.standard_normal(n).astype(dtype) for n in SIZES] for _ in range(rows)]
    arrays[2] = [np.abs(v) for v in arrays[2]]  # a square average is never negative
    table = _fused_cpu.Table(dtype, SIZES, on.centered, on.momentum)
    table_rows = [0, 1, 2] + ([3] if on.centered else []) + ([4] if on.momentum else [])
    for row, listed in zip(table_rows, arrays):
        table.addresses[row] = [a.ctypes.data for a in listed]
    launches = spy_on_launches(monkeypatch)
    monkeypatch.setattr(_fused_cpu, "_pool", None)
    for step in range(1, steps + 1):
        table.set_coefficients(coefficients(config, step))
        _fused_cpu.run((), [table], threads=1 if spread == "one" else 2)
    assert launches["tbb"] == (steps if spread == "tbb" else 0)
    assert (_fused_cpu._pool is not None) == (spread == "pool")  # a second thread took a share
    return [a for listed in arrays for a in listed]


def spy_on_launches(monkeypatch):
    """Counts `parallel_table_kernel`'s launches (those TBB's threads took) in ``["tbb"]``."""
    launches = {"tbb": 0}
    kernel = _fused_cpu.parallel_table_kernel

    def counted(*args):
        launches["tbb"] += 1
        kernel(*args)

    monkeypatch.setattr(_fused_cpu, "parallel_table_kernel", counted)
    return launches


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config", RULES.values(), ids=list(RULES))
def test_tables_spread_over_tbb_or_the_pool_give_the_bits_of_one_thread(config, dtype, monkeypatch):
    one = table_trajectory(config, np.dtype(dtype), "one", monkeypatch)
    for spread in ("pool", "tbb"):
        spread_out = table_trajectory(config, np.dtype(dtype), spread, monkeypatch)
        for a, b in zip(spread_out, one):
            np.testing.assert_array_equal(a, b, err_msg=spread)
