"""The experiment's figures (matplotlib, written as PNG): the paper's Figures 2-4 and a K-curve.

Fig. 2: a source crop under each task augmentation. Fig. 3: the ground truth and each arm's
predictions on the same target images, after fine-tuning on one K and seed. Fig. 4: training loss
during the meta-test (few-shot fine-tuning). K-curve: test AP against the number of shots.
An arm's semi-supervised twin (``meta+distill``) is drawn in the arm's colour with square markers
(and dashed in the K-curve).

Every figure is laid out by matplotlib's constrained layout, so labels neither overlap nor leave
the canvas; the ``*_figure`` functions return the figure (for tests), the others write the PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    LogFormatterSciNotation,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)
from matplotlib.typing import LineStyleType  # noqa: E402

from metapose.config.experiment import semi_twin, twin_arm  # noqa: E402
from metapose.data.viz import DRAW_THRESHOLD, draw_pose  # noqa: E402
from metapose.experiment.report import (  # noqa: E402
    METRIC_TITLES,
    MODEL_TITLES,
    SEMI_METHODS,
    SummaryRow,
    is_difference,
)
from metapose.experiment.results import RunResult, select  # noqa: E402
from metapose.experiment.statistics import mean_ci  # noqa: E402
from metapose.files import atomic_write  # noqa: E402

MODEL_COLOURS = {
    "as-is": "tab:green",
    "supervised": "tab:blue",
    "meta": "tab:orange",
    "scratch": "tab:gray",
}
# The order models are drawn in: each arm followed by its twins (random weights have none).
FIGURE_ORDER = tuple(
    name
    for arm in MODEL_COLOURS
    for name in (arm, *(semi_twin(arm, m) for m in SEMI_METHODS if arm != "scratch"))
)
TWIN_MARKER = "s"
K_STYLES: tuple[LineStyleType, ...] = ("-", "--", ":", "-.")  # Fig. 4: one line style per K
DODGE = 0.08  # K-curve: horizontal shift between arms at one K, in tick spacings
DPI = 110


def _colour(model: str) -> str:
    return MODEL_COLOURS[twin_arm(model)[0]]


def _is_twin(model: str) -> bool:
    return twin_arm(model)[1] is not None


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=DPI, format=path.suffix.lstrip("."))
    finally:
        plt.close(fig)
    return path


def image_grid(panels: Sequence[tuple[str, np.ndarray]], path: str | Path, *, cols: int) -> Path:
    """Titled RGB panels in a grid (Fig. 2 and the like)."""
    rows = max(1, int(np.ceil(len(panels) / cols)))
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.2 * cols, 2.8 * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, image) in zip(axes.ravel(), panels, strict=False):
        ax.imshow(image)
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


GROUND_TRUTH = "ground truth"


@dataclass(frozen=True)
class PredictionPanel:
    """One target image crop, its labels and what each model predicted (crop pixels, ``(K, 3)``).

    ``ground_truth``'s third column holds COCO visibility flags, ``predictions``' scores.
    """

    title: str
    image: np.ndarray
    predictions: dict[str, np.ndarray]  # model name -> keypoints with scores
    ground_truth: np.ndarray | None = None


def prediction_figure(
    panels: Sequence[PredictionPanel], *, title: str = "", threshold: float = DRAW_THRESHOLD
) -> plt.Figure:
    """Fig. 3: one row per image; the ground truth, then one column per model, on the same crop."""
    models = list(dict.fromkeys(m for p in panels for m in p.predictions))
    columns = ([GROUND_TRUTH] if any(p.ground_truth is not None for p in panels) else []) + models
    fig, axes = plt.subplots(
        max(len(panels), 1),
        max(len(columns), 1),
        figsize=(2.3 * max(len(columns), 1), 2.9 * max(len(panels), 1)),
        squeeze=False,
        layout="constrained",
    )
    for row, panel in enumerate(panels):
        for col, column in enumerate(columns):
            ax = axes[row, col]
            ax.axis("off")
            if column == GROUND_TRUTH and panel.ground_truth is not None:
                ax.imshow(draw_pose(panel.image, panel.ground_truth, kind="flags"))
            elif column in panel.predictions:
                ax.imshow(draw_pose(panel.image, panel.predictions[column], threshold=threshold))
            if row == 0:
                ax.set_title(MODEL_TITLES.get(column, column.capitalize()), fontsize=10)
            if col == 0:
                ax.text(
                    -0.05,
                    0.5,
                    panel.title,
                    transform=ax.transAxes,
                    rotation=90,
                    ha="right",
                    va="center",
                    fontsize=8,
                )
    note = f"predicted keypoints scoring under {threshold:g} not drawn" if threshold > 0 else ""
    if title or note:
        fig.suptitle("\n".join(t for t in (title, note) if t), fontsize=10)
    return fig


def prediction_grid(
    panels: Sequence[PredictionPanel],
    path: str | Path,
    *,
    title: str = "",
    threshold: float = DRAW_THRESHOLD,
) -> Path:
    """Write :func:`prediction_figure` to ``path``."""
    return _save(prediction_figure(panels, title=title, threshold=threshold), path)


def meta_test_loss_figure(results: Sequence[RunResult]) -> plt.Figure:
    """Fig. 4: fine-tuning loss per epoch, mean over seeds with a 95 % band, per target and K.

    Colour: the arm; line style: K. One legend for both, outside the panels. The arms only:
    a semi-supervised twin's loss is per step over unlabelled people, not per epoch of the shots.
    """
    adapted = [r for r in results if r.shots > 0 and r.epoch_losses and not _is_twin(r.model)]
    targets = list(dict.fromkeys(r.target for r in adapted))
    all_shots = sorted({r.shots for r in adapted})
    style = {k: K_STYLES[i % len(K_STYLES)] for i, k in enumerate(all_shots)}
    fig, axes = plt.subplots(
        1,
        max(len(targets), 1),
        figsize=(3.6 * max(len(targets), 1) + 1.6, 3.4),
        squeeze=False,
        layout="constrained",
    )
    models_shown: list[str] = []
    for ax, target in zip(axes[0], targets, strict=False):
        for k in sorted({r.shots for r in select(adapted, target=target)}):
            for model in FIGURE_ORDER:
                runs = select(adapted, target=target, model=model, shots=k)
                if not runs:
                    continue
                if model not in models_shown:
                    models_shown.append(model)
                length = min(len(r.epoch_losses) for r in runs)
                curves = np.array([r.epoch_losses[:length] for r in runs])
                epochs = np.arange(1, length + 1)
                est = [mean_ci(curves[:, e].tolist()) for e in range(length)]
                mean = np.array([e.mean for e in est])
                half = np.nan_to_num(np.array([e.half_width for e in est]))
                ax.plot(
                    epochs,
                    mean,
                    linestyle=style[k],
                    color=_colour(model),
                    marker=TWIN_MARKER if _is_twin(model) else None,
                    markevery=max(1, length // 10),
                    markersize=4,
                )
                ax.fill_between(epochs, mean - half, mean + half, color=_colour(model), alpha=0.15)
        ax.set_title(target)
        ax.set_xlabel("epoch of fine-tuning")
        ax.set_ylabel("train loss (JointsMSE)")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _log_ticks(ax)
    handles = [
        Line2D(
            [],
            [],
            color=_colour(m),
            marker=TWIN_MARKER if _is_twin(m) else None,
            label=MODEL_TITLES[m],
        )
        for m in models_shown
    ] + [Line2D([], [], color="black", linestyle=style[k], label=f"K = {k}") for k in all_shots]
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    return fig


def _log_ticks(ax: plt.Axes) -> None:
    """Labelled log ticks at 1, 2 and 5 x 10^n on short ranges (10^n only on long ones), and no
    minor labels: matplotlib's own minor labels collide on ranges of a decade or two."""
    low, high = ax.get_ylim()
    decades = np.log10(high / low) if low > 0 and high > low else np.inf
    subs = (1.0, 2.0, 5.0) if decades < 2 else (1.0,)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    every = (np.inf, np.inf)  # label every tick the locator places (its own rule drops some)
    ax.yaxis.set_major_formatter(
        LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=every)
    )
    ax.yaxis.set_minor_formatter(NullFormatter())


def meta_test_loss(results: Sequence[RunResult], path: str | Path) -> Path:
    """Write :func:`meta_test_loss_figure` to ``path``."""
    return _save(meta_test_loss_figure(results), path)


def k_curve_figure(rows: Sequence[SummaryRow], *, metric: str = "ap") -> plt.Figure:
    """Test metric against K, mean ± 95 % CI over seeds, one panel per target.

    K is categorical: one tick per K used, labelled with its value, so 4, 16 and 32 read as such.
    K = 0 (the arm not adapted) sits left of a dotted separator with hollow markers, not joined
    to the adapted points. Arms are shifted slightly apart so their error bars do not hide each
    other.
    """
    rows = [r for r in rows if not is_difference(r.model) and metric in r.metrics]
    targets = list(dict.fromkeys(r.target for r in rows))
    widest = max((len({r.shots for r in rows if r.target == t}) for t in targets), default=1)
    width = max(3.4, 0.6 * widest + 1.6)
    fig, axes = plt.subplots(
        1,
        max(len(targets), 1),
        figsize=(width * max(len(targets), 1) + 1.8, 3.4),
        squeeze=False,
        layout="constrained",
    )
    models_shown: list[str] = []
    for ax, target in zip(axes[0], targets, strict=False):
        here = [r for r in rows if r.target == target]
        shots = sorted({r.shots for r in here})
        position = {k: float(i) for i, k in enumerate(shots)}
        models = [m for m in FIGURE_ORDER if any(r.model == m for r in here)]
        for j, model in enumerate(models):
            if model not in models_shown:
                models_shown.append(model)
            shift = DODGE * (j - (len(models) - 1) / 2)
            pts = sorted((r.shots, r.metrics[metric]) for r in here if r.model == model)
            twin = _is_twin(model)
            for adapted in (False, True):  # a twin at K = 0 is adapted (on unlabelled people)
                part = [(k, e) for k, e in pts if (k > 0 or twin) == adapted]
                if not part:
                    continue
                x = np.array([position[k] + shift for k, _ in part])
                mean = np.array([e.mean for _, e in part])
                half = np.nan_to_num(np.array([e.half_width for _, e in part]))
                ax.errorbar(
                    x,
                    mean,
                    yerr=half,
                    marker=TWIN_MARKER if twin else "o",
                    capsize=3,
                    color=_colour(model),
                    linestyle=("--" if twin else "-") if adapted else "none",
                    markerfacecolor=_colour(model) if adapted else "white",
                )
        if 0 in shots and len(shots) > 1:
            ax.axvline(0.5, color="0.6", linestyle=":", linewidth=1)
        ax.set_xticks(list(position.values()), [str(k) for k in shots])
        ax.set_xlim(-0.5, len(shots) - 0.5)
        twins = any(_is_twin(m) for m in models)
        ax.set_xlabel(f"K (shots; 0: {'no shots' if twins else 'not adapted'})")
        ax.set_ylabel(METRIC_TITLES[metric])
        ax.set_title(target)
    handles = [
        Line2D(
            [],
            [],
            color=_colour(m),
            marker=TWIN_MARKER if _is_twin(m) else "o",
            linestyle="--" if _is_twin(m) else "-",
            label=MODEL_TITLES[m],
        )
        for m in models_shown
    ]
    if any(r.shots == 0 for r in rows):
        handles.append(
            Line2D(
                [],
                [],
                color="0.3",
                marker="o",
                markerfacecolor="white",
                linestyle="none",
                label="not adapted (K = 0)",
            )
        )
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    return fig


def k_curve(rows: Sequence[SummaryRow], path: str | Path, *, metric: str = "ap") -> Path:
    """Write :func:`k_curve_figure` to ``path``."""
    return _save(k_curve_figure(rows, metric=metric), path)
