"""The experiment's figures (matplotlib, written as PNG): the paper's Figures 2-4 and a K-curve.

Fig. 2: a source crop under each task augmentation. Fig. 3: predictions of each arm and the
meta-learned model on the same target images. Fig. 4: training loss during the meta-test
(few-shot fine-tuning). K-curve: test AP against the number of shots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from metapose.report import METRIC_TITLES, MODEL_TITLES, SummaryRow, is_difference  # noqa: E402
from metapose.results import RunResult, select  # noqa: E402
from metapose.stats import mean_ci  # noqa: E402
from metapose.viz import draw_pose  # noqa: E402

MODEL_COLOURS = {
    "as-is": "tab:green",
    "supervised": "tab:blue",
    "meta": "tab:orange",
    "scratch": "tab:gray",
}
DPI = 110


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def image_grid(panels: Sequence[tuple[str, np.ndarray]], path: str | Path, *, cols: int) -> Path:
    """Titled RGB panels in a grid (Fig. 2 and the like)."""
    rows = max(1, int(np.ceil(len(panels) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, image) in zip(axes.ravel(), panels, strict=False):
        ax.imshow(image)
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


@dataclass(frozen=True)
class PredictionPanel:
    """One target image crop with the keypoints (crop pixels, ``(K, 3)``) each model predicted."""

    title: str
    image: np.ndarray
    predictions: dict[str, np.ndarray]  # model name -> keypoints with scores


def prediction_grid(
    panels: Sequence[PredictionPanel], path: str | Path, *, threshold: float = 0.2
) -> Path:
    """Fig. 3: one row per image, one column per model, predictions drawn on the same crop."""
    models = list(dict.fromkeys(m for p in panels for m in p.predictions))
    fig, axes = plt.subplots(
        len(panels), len(models), figsize=(2.3 * len(models), 2.9 * len(panels)), squeeze=False
    )
    for row, panel in enumerate(panels):
        for col, model in enumerate(models):
            ax = axes[row, col]
            ax.axis("off")
            if model in panel.predictions:
                ax.imshow(draw_pose(panel.image, panel.predictions[model], threshold=threshold))
            if row == 0:
                ax.set_title(MODEL_TITLES.get(model, model), fontsize=10)
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
    return _save(fig, path)


def meta_test_loss(results: Sequence[RunResult], path: str | Path) -> Path:
    """Fig. 4: fine-tuning loss per epoch, mean over seeds with a 95 % band, per target and K."""
    adapted = [r for r in results if r.shots > 0 and r.epoch_losses]
    targets = list(dict.fromkeys(r.target for r in adapted))
    fig, axes = plt.subplots(
        1, max(len(targets), 1), figsize=(4.2 * max(len(targets), 1), 3.2), squeeze=False
    )
    styles = ["-", "--", ":", "-."]
    for ax, target in zip(axes[0], targets, strict=False):
        shots = sorted({r.shots for r in select(adapted, target=target)})
        for si, k in enumerate(shots):
            for model in MODEL_COLOURS:
                runs = select(adapted, target=target, model=model, shots=k)
                if not runs:
                    continue
                length = min(len(r.epoch_losses) for r in runs)
                curves = np.array([r.epoch_losses[:length] for r in runs])
                epochs = np.arange(1, length + 1)
                est = [mean_ci(curves[:, e].tolist()) for e in range(length)]
                mean = np.array([e.mean for e in est])
                half = np.nan_to_num(np.array([e.half_width for e in est]))
                ax.plot(
                    epochs,
                    mean,
                    styles[si % len(styles)],
                    color=MODEL_COLOURS[model],
                    label=f"{MODEL_TITLES[model]} K={k}",
                )
                ax.fill_between(
                    epochs, mean - half, mean + half, color=MODEL_COLOURS[model], alpha=0.15
                )
        ax.set_title(target)
        ax.set_xlabel("epoch of fine-tuning")
        ax.set_ylabel("train loss (JointsMSE)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    return _save(fig, path)


def k_curve(rows: Sequence[SummaryRow], path: str | Path, *, metric: str = "ap") -> Path:
    """Test metric against K (K = 0: not adapted), mean ± 95 % CI over seeds, per target."""
    rows = [r for r in rows if not is_difference(r.model) and metric in r.metrics]
    targets = list(dict.fromkeys(r.target for r in rows))
    fig, axes = plt.subplots(
        1, max(len(targets), 1), figsize=(4.2 * max(len(targets), 1), 3.2), squeeze=False
    )
    for ax, target in zip(axes[0], targets, strict=False):
        for model in MODEL_COLOURS:
            pts = sorted(
                (r.shots, r.metrics[metric])
                for r in rows
                if r.target == target and r.model == model
            )
            if not pts:
                continue
            ks = np.array([k for k, _ in pts], dtype=float)
            mean = np.array([e.mean for _, e in pts])
            half = np.nan_to_num(np.array([e.half_width for _, e in pts]))
            ax.errorbar(
                ks,
                mean,
                yerr=half,
                marker="o",
                capsize=3,
                color=MODEL_COLOURS[model],
                label=MODEL_TITLES[model],
            )
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("K (shots; 0 = not adapted)")
        ax.set_ylabel(METRIC_TITLES[metric])
        ax.set_title(target)
        ax.legend(fontsize=8)
    return _save(fig, path)
