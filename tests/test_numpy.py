"""The NumPy reference: hand-computed steps, closed forms and properties."""

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tables import config_kwargs, flavor_cases

import rmsprop
import rmsprop.numpy as rnp
from rmsprop import Config


def one_step(config, theta, grad):
    state = rnp.init(theta, config)
    return rnp.update(theta, grad, state, config)


def test_textbook_example_from_the_readme():
    config = Config(lr=0.01, decay=0.9, eps=1e-8, eps_in_sqrt=True)
    theta, _ = one_step(config, np.array([0.2, 0.4, 0.6]), np.array([-0.5, 0.3, 0.24]))
    np.testing.assert_allclose(theta, [0.23162277, 0.36837724, 0.56837725], rtol=0, atol=5e-9)
    assert np.array2string(theta) == "[0.23162277 0.36837724 0.56837725]"


# One step from p = 10 with g = 10 and lr = 0.1 (frameworks' own docs and tests:
# Keras' docstring gives 9.683772).
@pytest.mark.parametrize(
    ("name", "changes", "expected"),
    [
        ("keras", {}, 9.683772),
        ("pytorch", {}, 9.0),
        ("pytorch", {"decay": 0.9}, 9.683772),
        ("tensorflow", {}, 9.697109),
        ("lasagne", {}, 9.683772),
        ("optax", {"bias_correction": True}, 9.9),
    ],
)
def test_first_step_sanity_values(name, changes, expected):
    config = rmsprop.flavor(name, lr=0.1, **changes)
    theta, _ = one_step(config, np.array(10.0), np.array(10.0))
    assert theta == pytest.approx(expected, abs=1e-6)


def test_keras_golden_values():
    # keras/src/optimizers/rmsprop_test.py: lr=0.5 on var=[1,2,3,4], g=[1,6,7,2].
    config = rmsprop.flavor("keras", lr=0.5)
    theta, _ = one_step(config, np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 6.0, 7.0, 2.0]))
    np.testing.assert_allclose(theta, [-0.5811, 0.4189, 1.4189, 2.4189], atol=1e-4)


def test_two_steps_by_hand_with_momentum_both_ways():
    g1, g2, lr, rho, mu = 2.0, -1.0, 0.1, 0.5, 0.9
    v1 = (1 - rho) * g1**2
    v2 = rho * v1 + (1 - rho) * g2**2
    u1, u2 = g1 / np.sqrt(v1), g2 / np.sqrt(v2)
    for lr_in_momentum in (False, True):
        config = Config(lr=lr, decay=rho, eps=0.0, momentum=mu, lr_in_momentum=lr_in_momentum)
        theta, state = one_step(config, np.array(1.0), np.array(g1))
        lr2 = lr / 2  # a schedule: the two momentum forms now differ
        theta, state = rnp.update(theta, np.array(g2), state, config.replace(lr=lr2))
        if lr_in_momentum:
            expected = 1.0 - lr * u1 - (mu * lr * u1 + lr2 * u2)
        else:
            expected = 1.0 - lr * u1 - lr2 * (mu * u1 + u2)
        assert theta == pytest.approx(expected, rel=1e-14)


def test_nesterov_is_optax_form():
    lr, rho, mu, g = 0.1, 0.9, 0.9, 3.0
    config = Config(lr=lr, decay=rho, eps=0.0, momentum=mu, nesterov=True, lr_in_momentum=True)
    theta, state = one_step(config, np.array(0.0), np.array(g))
    u = g / np.sqrt((1 - rho) * g * g)
    assert state.momentum_buffer == pytest.approx(lr * u)
    assert theta == pytest.approx(-(lr * u + mu * lr * u))


def test_centered_variance_is_clamped_not_nan():
    # One step from a state where v - m² < 0 (as cancellation can leave it).
    config = Config(lr=0.1, decay=0.5, eps=1e-8, centered=True)
    state = rnp.LeafState(3, np.array([1.0]), np.array([1.5]), None)
    theta, new = rnp.update(np.array([0.0]), np.array([1.0]), state, config)
    assert new.square_avg - new.grad_avg**2 < 0
    assert np.isfinite(theta).all()
    assert theta == pytest.approx(-0.1 * 1.0 / 1e-8)


def test_weight_decay_forms():
    theta0, g, lr, wd = np.array(2.0), np.array(0.0), 0.1, 0.5
    coupled = Config(lr=lr, decay=0.9, eps=0.0, weight_decay=wd)
    theta, _ = one_step(coupled, theta0, g)  # g + λθ = 1: a full RMSprop step
    assert theta == pytest.approx(2.0 - lr / np.sqrt(0.1))
    decoupled = coupled.replace(decoupled_weight_decay=True, eps=1e-8)
    theta, state = one_step(decoupled, theta0, g)  # shrink only; g = 0 moves nothing
    assert theta == pytest.approx(2.0 * (1 - lr * wd))
    assert state.square_avg == 0


def test_maximize_negates_before_weight_decay():
    config = Config(lr=0.1, decay=0.9, eps=0.0, weight_decay=1.0, maximize=True)
    theta, _ = one_step(config, np.array(1.0), np.array(3.0))  # -3 + 1 = -2: ascend
    assert theta == pytest.approx(1.0 + 0.1 / np.sqrt(0.1))


def test_complex_parameters_are_pairs_of_reals():
    config = rmsprop.flavor("pytorch", momentum=0.5, centered=True)
    z = np.array([1 + 2j, -0.5 + 0.25j])
    gz = np.array([0.3 - 1j, 2 + 0.5j])
    real = np.stack([z.real, z.imag], axis=-1)
    greal = np.stack([gz.real, gz.imag], axis=-1)
    (zc, _), (rc, _) = one_step(config, z, gz), one_step(config, real, greal)
    np.testing.assert_array_equal(np.stack([zc.real, zc.imag], axis=-1), rc)
    assert zc.dtype == np.complex128


def test_trees_none_gradients_and_purity():
    config = rmsprop.flavor("tensorflow", momentum=0.9)
    params = {"w": np.ones((2, 3)), "layers": [np.zeros(4), (np.full(2, 5.0),)]}
    grads = {"w": np.ones((2, 3)), "layers": [None, (np.ones(2),)]}
    state = rnp.init(params, config)
    new_params, new_state = rnp.update(params, grads, state, config)
    assert params["w"][0, 0] == 1.0  # inputs untouched
    assert new_params["layers"][0] is params["layers"][0]
    assert new_state["layers"][0] is state["layers"][0]
    assert new_state["w"].step == 1 and new_state["layers"][0].step == 0
    assert isinstance(new_params["layers"][1], tuple)
    assert new_params["w"][0, 0] < 1.0


def test_mismatched_structure_is_an_error():
    config = Config()
    state = rnp.init([np.ones(2), np.ones(3)], config)
    with pytest.raises(ValueError, match="same structure"):
        rnp.update([np.ones(2)], [np.ones(2)], state, config)
    with pytest.raises(ValueError, match=r"gradient shape \(2,\) != parameter shape \(3,\)"):
        rnp.update([np.ones(2), np.ones(3)], [np.ones(2), np.ones(2)], state, config)


def test_computes_in_the_dtype_it_is_given():
    config = rmsprop.flavor("keras", momentum=0.9, centered=True)
    theta, state = one_step(config, np.ones(3, np.float32), np.ones(3, np.float32))
    assert theta.dtype == state.square_avg.dtype == state.momentum_buffer.dtype == np.float32


def test_stateful_class_matches_the_functions():
    config = rmsprop.flavor("timm", momentum=0.9)
    rng = np.random.default_rng(0)
    w = rng.normal(size=5)
    opt = rnp.RMSprop([w], config)
    params, state = w.copy(), rnp.init(w, config)
    for _ in range(5):
        g = rng.normal(size=5)
        opt.step([g])
        params, state = rnp.update(params, g, state, config)
    np.testing.assert_array_equal(w, params)
    assert rnp.RMSprop([np.ones(1)], flavor="dqn", lr=0.5).config == rmsprop.flavor("dqn", lr=0.5)
    with pytest.raises(TypeError, match=r"params\[0\] must be a numpy.ndarray"):
        rnp.RMSprop([[1.0]])


def _replace_a_state_array(opt):
    opt.state[1] = opt.state[1]._replace(square_avg=opt.state[1].square_avg.copy())


def _replace_a_parameter(opt):
    opt.params[0] = opt.params[0].copy()


@pytest.mark.parametrize(
    "change", [None, _replace_a_state_array, _replace_a_parameter], ids=["none", "state", "param"]
)
@pytest.mark.parametrize("flavor", ["pytorch", "tensorflow", "dqn"])
def test_the_fused_class_keeps_its_tables_only_while_its_arrays_stay(flavor, change):
    pytest.importorskip("numba", reason="the fused CPU kernel needs the fast extra (numba)")
    config = rmsprop.flavor(flavor, momentum=0.5, bias_correction=True)
    rng = np.random.default_rng(1)
    shapes = [(3, 4), (5,), (2, 2)]
    dtypes = [np.float32, np.float64, np.complex128]
    params = [
        (rng.normal(size=s) + (1j if d is np.complex128 else 0)).astype(d)
        for s, d in zip(shapes, dtypes)
    ]
    fused = rnp.RMSprop([p.copy() for p in params], config, fused=True)
    reference = rnp.RMSprop([p.copy() for p in params], config, fused=False)
    for step in range(6):
        grads = [rng.normal(size=p.shape).astype(p.dtype) for p in params]
        if step == 2:
            grads[1] = None  # its step count falls behind: bias correction differs per tensor
        if step == 3 and change is not None:
            change(fused)
            change(reference)
        fused.step(grads)
        reference.step(grads)
    for got, expected in zip(fused.params, reference.params):
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert [leaf.step for leaf in fused.state] == [6, 5, 6]


@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
@pytest.mark.parametrize(
    ("grads", "message"),
    [
        ([np.ones(4)], r"got 1 gradients for 2 parameters"),
        ([np.ones(4), np.ones(2)], r"gradient shape \(2,\) != parameter shape \(3,\)"),
        ([np.ones(4), np.float64(1.0)], r"gradient shape \(\) != parameter shape \(3,\)"),
        ([np.ones((4, 1)), None], r"gradient shape \(4, 1\) != parameter shape \(4,\)"),
    ],
)
def test_the_stateful_class_refuses_bad_gradients_and_changes_nothing(grads, message, fused):
    if fused:
        pytest.importorskip("numba", reason="the fused path needs the fast extra (numba)")
    params = [np.ones(4, np.float32), np.ones(3, np.float32)]
    opt = rnp.RMSprop(params, fused=fused, momentum=0.9)
    before = [p.copy() for p in params], copy.deepcopy(opt.state)
    with pytest.raises(ValueError, match=message):
        opt.step(grads)
    for p, b in zip(params, before[0]):
        np.testing.assert_array_equal(p, b)
    assert all(leaf.step == 0 for leaf in opt.state)
    np.testing.assert_array_equal(opt.state[0].square_avg, before[1][0].square_avg)


@pytest.mark.parametrize(("desc", "config"), list(flavor_cases())[::7])
def test_config_fields_are_the_stateful_class_keywords(desc, config):
    assert rnp.RMSprop([np.ones(1)], **config_kwargs(config)).config == config


# ---- properties --------------------------------------------------------------------

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False)
grads_strategy = hnp.arrays(np.float64, st.integers(1, 6), elements=finite)


@st.composite
def configs(draw):
    momentum = draw(st.sampled_from([0.0, 0.5, 0.9]))
    return Config(
        lr=draw(st.floats(1e-4, 1.0)),
        decay=draw(st.floats(0.0, 0.999)),
        eps=draw(st.floats(1e-10, 1.0)),
        eps_in_sqrt=draw(st.booleans()),
        initial_square_avg=draw(st.sampled_from([0.0, 1.0])),
        centered=draw(st.booleans()),
        momentum=momentum,
        nesterov=momentum > 0 and draw(st.booleans()),
        lr_in_momentum=draw(st.booleans()),
        bias_correction=draw(st.booleans()),
        weight_decay=draw(st.sampled_from([0.0, 0.1])),
        decoupled_weight_decay=draw(st.booleans()),
        maximize=draw(st.booleans()),
    )


@settings(deadline=None, max_examples=75)
@given(configs(), st.lists(grads_strategy, min_size=1, max_size=5), st.data())
def test_averages_stay_nonnegative_and_everything_finite(config, grad_list, data):
    shape = grad_list[0].shape
    theta = data.draw(hnp.arrays(np.float64, shape, elements=finite))
    state = rnp.init(theta, config)
    for g in grad_list:
        g = np.resize(g, shape)
        theta, state = rnp.update(theta, g, state, config)
        assert (state.square_avg >= 0).all()
        assert np.isfinite(theta).all()


@settings(deadline=None, max_examples=75)
@given(configs(), grads_strategy)
def test_first_step_has_a_closed_form(config, g):
    config = config.replace(
        momentum=0.0, nesterov=False, weight_decay=0.0, centered=False, bias_correction=False
    )
    theta, state = one_step(config, np.zeros_like(g), g)
    v = config.decay * config.initial_square_avg + (1 - config.decay) * g * g
    d = np.sqrt(v + config.eps) if config.eps_in_sqrt else np.sqrt(v) + config.eps
    sign = 1 if config.maximize else -1
    np.testing.assert_allclose(theta, sign * config.lr * g / d, rtol=1e-12, atol=0)
    np.testing.assert_allclose(state.square_avg, v, rtol=1e-12)


@settings(deadline=None, max_examples=75)
@given(configs(), st.lists(grads_strategy, min_size=1, max_size=8))
def test_plain_steps_are_bounded_and_oppose_the_gradient(config, grad_list):
    # From a zero average, v_t ≥ (1-ρ)g_t², so |Δθ| ≤ lr/√(1-ρ) at every step.
    config = config.replace(
        initial_square_avg=0.0, momentum=0.0, nesterov=False, weight_decay=0.0,
        centered=False, bias_correction=False, maximize=False,
    )  # fmt: skip
    theta = np.zeros_like(grad_list[0])
    state = rnp.init(theta, config)
    for g in grad_list:
        g = np.resize(g, theta.shape)
        new_theta, state = rnp.update(theta, g, state, config)
        step = new_theta - theta
        assert (np.abs(step) <= config.lr / np.sqrt(1 - config.decay) * (1 + 1e-12)).all()
        assert (step * g <= 0).all()
        theta = new_theta


@settings(deadline=None, max_examples=50)
@given(st.floats(0.0, 0.99), grads_strategy.filter(lambda g: (np.abs(g) > 1e-3).all()))
def test_bias_corrected_first_step_is_about_lr_times_sign(decay, g):
    config = Config(lr=0.1, decay=decay, eps=1e-12, bias_correction=True)
    theta, _ = one_step(config, np.zeros_like(g), g)
    np.testing.assert_allclose(theta, -0.1 * np.sign(g), rtol=1e-6)


def test_complex_average_starts_at_the_initial_value_in_both_parts():
    config = rmsprop.flavor("tensorflow")
    state = rnp.init(np.zeros(2, np.complex128), config)
    np.testing.assert_array_equal(state.square_avg, [1 + 1j, 1 + 1j])
    z, _ = one_step(config, np.array([0j]), np.array([3 + 3j]))
    real, _ = one_step(config, np.array([0.0, 0.0]), np.array([3.0, 3.0]))
    np.testing.assert_array_equal([z[0].real, z[0].imag], real)


@pytest.mark.parametrize(
    ("params", "state"),
    [
        (np.ones(2), None),
        ([np.ones(2)], None),
        ([np.ones(2)], [None]),
        ({"w": np.ones(2)}, {"w": 0}),
    ],
    ids=["array-None", "list-None", "None-leaf", "int-leaf"],
)
def test_a_state_not_made_by_init_is_a_clear_error(params, state):
    grads = copy.deepcopy(params)
    with pytest.raises(
        TypeError, match=r"create the state with rmsprop\.numpy\.init\(params, config\)"
    ):
        rnp.update(params, grads, state, Config())
