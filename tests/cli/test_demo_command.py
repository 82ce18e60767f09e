"""`rmsprop demo --quick`: what it prints, the figures and the report it writes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

for _package in ("torch", "matplotlib", "sklearn", "rich"):
    pytest.importorskip(_package, reason="the demo needs the `demo` extra")

from PIL import Image  # noqa: E402  (matplotlib's own dependency)

FIGURES = (
    "step_sizes.png",
    "paths_rosenbrock.png",
    "paths_beale.png",
    "paths_saddle.png",
    "training_curves.png",
    "lr_sensitivity.png",
)
TEXTBOOK_LINE = "theta after one step: [0.23162277 0.36837724 0.56837725]"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One quick demo in a fresh, headless process (no display, no backend chosen)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    result = subprocess.run(
        [sys.executable, "-m", "rmsprop", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result, out


def test_prints_the_textbook_step_exactly(demo):
    result, _ = demo
    assert TEXTBOOK_LINE in result.stdout.splitlines()[:30] or any(
        line.strip() == TEXTBOOK_LINE for line in result.stdout.splitlines()
    )
    assert "E[g²] ← ρ·E[g²] + (1 − ρ)·g²" in result.stdout
    assert "Traceback" not in result.stderr


def test_prints_where_the_report_is(demo):
    result, out = demo
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("Report: ")]
    assert line == f"Report: {(out / 'report.md').resolve()}"


@pytest.mark.parametrize("name", FIGURES)
def test_figures_are_real_pictures(demo, name):
    _, out = demo
    path = out / name
    assert path.stat().st_size > 20_000
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width >= 800 and height >= 400
        pixels = np.asarray(image.convert("RGB"))
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50  # lines, text, contours: not one flat colour
    # Not a blank canvas: a good share of the pixels are not the background.
    assert (pixels.min(axis=2) < 200).mean() > 0.01


def test_report_holds_the_measured_tables_and_every_figure(demo):
    _, out = demo
    report = (out / "report.md").read_text(encoding="utf-8")
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert TEXTBOOK_LINE in report
    for name in FIGURES:
        assert f"]({name})" in report
    for label, entry in results["training"].items():
        (run,) = entry["runs"]  # --quick: one seed
        row = f"| {label} | {entry['best_lr']:g} | {run['final_train_loss']:.4f} | "
        assert row in report, row
        assert f"{run['final_test_accuracy']:.2%}" in report
    for surface, by_label in results["surfaces"].items():
        assert len(by_label) == 8, surface  # 4 baselines and the 4 default flavors
    conclusion = report.split("## 4. Conclusion")[1].split("## How")[0]
    bullets = [line for line in conclusion.splitlines() if line.startswith("- ")]
    assert len(bullets) >= 5
    # A conclusion quotes measured numbers; here, the textbook step's.
    assert "0.0316" in conclusion


def test_results_json_matches_the_textbook_and_settings(demo):
    _, out = demo
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    np.testing.assert_allclose(
        results["textbook"]["new_theta"], [0.23162277, 0.36837724, 0.56837725], atol=5e-9
    )
    assert results["settings"]["flavors"] == ["pytorch", "tensorflow", "keras", "dqn"]
    assert results["settings"]["steps"] == 150
    assert not re.search(r"/(tmp|home|root|work)/", (out / "report.md").read_text())
