"""The demo's parts, in-process: deterministic for a seed, and its sentences follow the numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

for _package in ("torch", "matplotlib", "sklearn", "rich"):
    pytest.importorskip(_package, reason="the demo needs the `demo` extra")

import torch  # noqa: E402

from rmsprop.cli._demo import summary, textbook  # noqa: E402
from rmsprop.cli._demo.optimizers import optimizer_specs  # noqa: E402
from rmsprop.cli._demo.surfaces import SURFACES, run_path, tune_on_surface  # noqa: E402
from rmsprop.cli._demo.training import load_split_digits, train  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return load_split_digits(torch.device("cpu"))


def test_digits_load_from_the_installed_package_and_split_by_class(digits):
    n_train, n_val, n_test = digits.sizes
    assert n_train + n_val + n_test == 1797
    for labels in (digits.y_train, digits.y_val, digits.y_test):
        assert set(labels.tolist()) == set(range(10))
    assert float(digits.x_train.max()) == 1.0 and float(digits.x_train.min()) == 0.0


@pytest.mark.parametrize("label", ["SGD", "Adam", "RMSprop (tensorflow)"])
def test_training_is_deterministic_for_a_seed(digits, label):
    (spec,) = [spec for spec in optimizer_specs(["tensorflow"]) if spec.label == label]
    first = train(spec, 0.01, 3, digits, 30, torch.device("cpu"), evaluations=5)
    second = train(spec, 0.01, 3, digits, 30, torch.device("cpu"), evaluations=5)
    other_seed = train(spec, 0.01, 4, digits, 30, torch.device("cpu"), evaluations=5)
    for metric in ("train_loss", "val_loss", "test_accuracy"):
        np.testing.assert_array_equal(getattr(first, metric), getattr(second, metric))
    assert not np.array_equal(first.train_loss, other_seed.train_loss)


def test_paths_are_deterministic_and_start_at_the_start():
    spec = optimizer_specs(["keras"])[-1]
    surface = SURFACES[0]
    first, second = run_path(surface, spec, 0.01, 50), run_path(surface, spec, 0.01, 50)
    np.testing.assert_array_equal(first.path, second.path)
    assert tuple(first.path[0]) == surface.start
    assert first.path.shape == (51, 2)


def test_gradients_match_finite_differences():
    for surface in SURFACES:
        for x, y in [(0.3, -0.7), (-1.2, 1.1), (2.0, 0.4)]:
            h = 1e-6
            dx = (surface.function(x + h, y) - surface.function(x - h, y)) / (2 * h)
            dy = (surface.function(x, y + h) - surface.function(x, y - h)) / (2 * h)
            np.testing.assert_allclose(surface.gradient(x, y), (dx, dy), rtol=1e-5, atol=1e-6)
        assert surface.function(*surface.minimum) == pytest.approx(surface.min_value, abs=1e-12)


def test_a_diverging_run_is_caught_not_raised():
    sgd = optimizer_specs([])[0]
    run = run_path(SURFACES[0], sgd, 1.0, 100)  # far too large a step for Rosenbrock
    assert run.diverged and math.isinf(run.score)


def test_the_textbook_sentence_is_computed_from_the_step():
    step = textbook.textbook_step()
    first = textbook.first_steps(["pytorch", "tensorflow"])
    series = {0.001: {name: textbook.step_size_series(name, 0.001, 20) for name in first}}
    sentences = summary._textbook_sentences(step, first, series)
    assert sentences[0].startswith("The textbook step moved every coordinate by the same 0.0316")
    ratio = np.mean(np.abs(first["pytorch"] - step.theta)) / np.mean(
        np.abs(first["tensorflow"] - step.theta)
    )
    assert f"a factor of {ratio:.3g}" in sentences[1]
    assert "`tensorflow` starts E[g²] at 1" in sentences[2]


def test_surface_sentences_name_ties_and_follow_the_ranking():
    specs = optimizer_specs(["pytorch"])
    result = tune_on_surface(SURFACES[2], specs, [0.01, 0.1], 60)
    (sentence,) = summary._surface_sentences([result], specs)
    ranked = sorted(result.best, key=lambda label: result.best[label].rank_key)
    assert ranked[0] in sentence.split(" to the minimum")[0]


def test_settings_quick_default_and_steps_override(tmp_path):
    from rmsprop.cli._demo.run import make_settings

    common = dict(out=tmp_path, seed=7, flavors=["keras"], device="cpu", command_line="x")
    quick = make_settings(quick=True, steps=None, **common)
    full = make_settings(quick=False, steps=None, **common)
    assert (quick.steps, quick.n_seeds, len(quick.training_lrs)) == (150, 1, 4)
    assert (full.steps, full.n_seeds, len(full.training_lrs)) == (600, 5, 9)
    assert make_settings(quick=True, steps=9, **common).steps == 9
    assert full.training_lrs[0] == 3e-4 and full.training_lrs[-1] == 3.0


def test_repeated_flavors_are_compared_once(monkeypatch, tmp_path):
    import rmsprop.cli._demo.run as demo_run
    from rmsprop.cli import main

    seen = {}
    monkeypatch.setattr(demo_run, "run_demo", lambda settings, console: seen.update(s=settings))
    args = ["demo", "--quick", "--out", str(tmp_path), "--steps", "3", "--seed", "5"]
    assert main([*args, "--flavor", "dqn", "--flavor", "keras", "--flavor", "dqn"]) == 0
    settings = seen["s"]
    assert settings.flavors == ["dqn", "keras"]
    assert (settings.steps, settings.seed, settings.device) == (3, 5, "cpu")
    assert settings.command_line == (
        "rmsprop demo --quick --steps 3 --seed 5 --flavor dqn --flavor keras --device cpu"
    )
