"""The report's figures: laid out without overlapping or clipped text, K shown as used."""

import itertools
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from metapose.data.viz import DRAW_THRESHOLD
from metapose.experiment.figures import (
    PredictionPanel,
    k_curve_figure,
    meta_test_loss_figure,
    prediction_figure,
)
from metapose.experiment.report import summarize
from metapose.experiment.results import RunResult

ARMS = ("as-is", "supervised", "meta", "scratch")
SHOTS = (4, 16, 32)
SEEDS = (0, 1, 2)


def toy_results(targets: tuple[str, ...] = ("thermal", "unique")) -> list[RunResult]:
    """Seeded AP/loss numbers for every arm, K (0: not adapted, except scratch) and seed.

    The losses of the first target span 1.4 decades (where matplotlib labels minor log ticks,
    which collide), the next ones 2.8 and 4.1.
    """
    rng = np.random.default_rng(0)
    out = []
    for (t, target), arm, seed in itertools.product(enumerate(targets), ARMS, SEEDS):
        for k in ((0,) if arm != "scratch" else ()) + SHOTS:
            ap = float(rng.uniform(0.1, 0.6))
            decay = np.exp(-np.arange(20) * (t + 1) / 6)
            losses = tuple(float(v) for v in 2e-3 * decay * (1 + k / 64) * (1 + 0.2 * seed))
            out.append(
                RunResult(
                    target,
                    arm,
                    k,
                    seed,
                    {"ap": ap, "pck": ap + 0.1},
                    epoch_losses=losses if k else (),
                )
            )
    return out


DrawnText = tuple[str, Bbox, object]  # what it is, where it is drawn, its axes (None: figure's)


def drawn_texts(fig: plt.Figure) -> list[DrawnText]:
    """Every visible, non-empty text the canvas draws (ticks in view, labels, titles, legends)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    texts: list[tuple[str, Text, object]] = []
    for ax in fig.axes:
        axes_drawn = ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())) if ax.axison else ()
        for axis, (lo, hi) in axes_drawn:
            lo, hi = min(lo, hi), max(lo, hi)
            for label in axis.get_ticklabels(which="both"):
                at = label.get_position()[0 if axis is ax.xaxis else 1]
                if lo <= at <= hi:
                    texts.append(("tick", label, ax))
            texts.append(("axis label", axis.label, ax))
        texts.append(("title", ax.title, ax))
    texts += [("suptitle", fig._suptitle, None)] if fig._suptitle is not None else []
    boxes: list[DrawnText] = [
        (f"{kind} {t.get_text()!r}", t.get_window_extent(renderer), owner)
        for kind, t, owner in texts
        if t.get_visible() and t.get_text()
    ]
    boxes += [
        (f"legend {i}", leg.get_window_extent(renderer), None) for i, leg in enumerate(fig.legends)
    ]
    boxes += [
        (f"legend of {ax.get_title()!r}", ax.get_legend().get_window_extent(renderer), ax)
        for ax in fig.axes
        if ax.get_legend()
    ]
    return boxes


def overlaps(a: Bbox, b: Bbox) -> bool:
    """More than a pixel each way in common."""
    common = Bbox.intersection(a, b)
    return common is not None and common.width >= 1 and common.height >= 1


def assert_laid_out(fig: plt.Figure) -> None:
    """No text is cut by the canvas' edge, overlaps another text, or lies on another panel."""
    canvas = fig.bbox
    texts = drawn_texts(fig)
    assert texts
    for name, box, owner in texts:
        assert (
            box.x0 >= canvas.x0 - 0.5
            and box.y0 >= canvas.y0 - 0.5
            and box.x1 <= canvas.x1 + 0.5
            and box.y1 <= canvas.y1 + 0.5
        ), f"{name} is clipped: {box} outside {canvas}"
        for i, ax in enumerate(fig.axes):
            assert ax is owner or not overlaps(box, ax.bbox), f"{name} lies on panel {i}"
    for (a, box_a, _), (b, box_b, _) in itertools.combinations(texts, 2):
        assert not overlaps(box_a, box_b), f"{a} overlaps {b}"
    plt.close(fig)


@pytest.mark.parametrize("targets", [("thermal",), ("thermal", "unique", "lspet")])
@pytest.mark.parametrize("metric", ["ap", "pck"])
def test_k_curve_text_neither_overlaps_nor_is_clipped(
    targets: tuple[str, ...], metric: str
) -> None:
    assert_laid_out(k_curve_figure(summarize(toy_results(targets)), metric=metric))


@pytest.mark.parametrize("targets", [("thermal",), ("thermal", "unique", "lspet")])
def test_fig4_text_neither_overlaps_nor_is_clipped(targets: tuple[str, ...]) -> None:
    assert_laid_out(meta_test_loss_figure(toy_results(targets)))


def test_k_curve_ticks_are_the_k_used_and_k0_is_drawn_apart() -> None:
    fig = k_curve_figure(summarize(toy_results(("thermal",))))
    ax = fig.axes[0]
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "4", "16", "32"]
    assert ax.get_xscale() == "linear" and list(ax.get_xticks()) == [0, 1, 2, 3]
    # K = 0: hollow markers, not joined to the adapted points; K > 0: filled and joined.
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) and line.get_marker() == "o"]
    unadapted = [line for line in lines if max(line.get_xdata()) < 0.5]
    adapted = [line for line in lines if min(line.get_xdata()) > 0.5]
    assert len(unadapted) == 3 and len(adapted) == 4 and len(lines) == 7
    assert all(line.get_markerfacecolor() == "white" for line in unadapted)
    assert all(line.get_linestyle() == "None" for line in unadapted)
    assert all(line.get_markerfacecolor() != "white" for line in adapted)
    assert all(line.get_linestyle() == "-" and len(line.get_xdata()) == 3 for line in adapted)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "not adapted (K = 0)" in legend
    plt.close(fig)


def test_fig3_shows_the_ground_truth_and_names_k_and_seed() -> None:
    image = np.zeros((64, 32, 3), np.uint8)
    gt = np.zeros((17, 3))
    gt[:, :2], gt[:, 2] = 16, 2
    pred = gt.copy()
    pred[:, 2] = 0.9
    panels = [
        PredictionPanel(f"thermal #{i}", image, {"as-is": pred, "meta": pred}, gt) for i in (1, 2)
    ]
    fig = prediction_figure(panels, title="after fine-tuning: K = 32, seed 0")
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles == ["Ground truth", "As-is", "Meta-learned"]
    title = fig.get_suptitle()
    assert "K = 32" in title and "seed 0" in title
    assert f"under {DRAW_THRESHOLD:g} not drawn" in title
    assert len(fig.axes) == 6 and all(ax.images for ax in fig.axes)
    assert all(ax.images[0].get_array().any() for ax in fig.axes)  # poses drawn on black crops
    assert_laid_out(fig)


def with_twins(results: list[RunResult], method: str = "distill") -> list[RunResult]:
    """Each arm's twin (``meta+distill``): the arm's numbers a little higher, at K = 0 too."""
    return results + [
        replace(
            r,
            model=f"{r.model}+{method}",
            metrics={k: v + 0.05 for k, v in r.metrics.items()},
            epoch_losses=tuple(0.9 * v for v in r.epoch_losses),
        )
        for r in results
        if r.model != "scratch"
    ]


@pytest.mark.parametrize("targets", [("thermal",), ("thermal", "unique", "lspet")])
def test_twins_are_drawn_in_their_arms_colour_with_square_markers(
    targets: tuple[str, ...],
) -> None:
    results = with_twins(toy_results(targets))
    fig = k_curve_figure(summarize(results))
    ax = fig.axes[0]
    fig.canvas.draw()
    squares = [line for line in ax.get_lines() if line.get_marker() == "s"]
    circles = [line for line in ax.get_lines() if line.get_marker() == "o"]
    # twins adapt at K = 0 too (on unlabelled people): one joined, dashed line each
    assert len(squares) == 3 and all(line.get_linestyle() == "--" for line in squares)
    assert {line.get_color() for line in squares} <= {line.get_color() for line in circles}
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "Meta-learned + distillation" in legend and "Meta-learned" in legend
    assert_laid_out(fig)
    fig4 = meta_test_loss_figure(results)
    # Fig. 4 is the arms' loss per epoch of the shots; a twin's is per step, so it is left out
    shown = [t.get_text() for t in fig4.legends[0].get_texts()]
    assert "Supervised" in shown and not any("distillation" in t for t in shown)
    assert_laid_out(fig4)
