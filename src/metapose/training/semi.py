"""Semi-supervised few-shot adaptation: K labelled shots (K may be 0) plus unlabelled target crops.

Two methods, chosen by :class:`~metapose.config.training.SemiConfig`:

- ``adabn``: BatchNorm statistics re-measured on unlabelled target crops (AdaBN, Li et al., 2017),
  then the usual fine-tune on the shots (:func:`metapose.training.adapt.fine_tune`).
- ``mean_teacher``: self-training with an exponential-moving-average teacher (Tarvainen &
  Valpola, 2017), with the easy/hard views of Xie et al. (ICCV 2021): the teacher, first
  fine-tuned on the shots, predicts flip-averaged heatmaps on the plain crop; the student sees the
  crop warped by a random rotation and scale plus cutout patches, and learns the teacher's
  heatmaps warped by the same affine (``grid_sample`` on the heatmaps themselves, so there is no
  decode/encode round trip). Joints the teacher is not confident of are left out. The shots stay
  in every batch (JointsMSE), so the pseudo-labels cannot drift the model away from them.
- ``distill``: a larger teacher labels the unlabelled people (:mod:`metapose.inference.distill`,
  which needs the inference phase); :func:`fine_tune_on_pseudo_labels` here is its student's
  training: batches of pseudo-labelled people plus shots, augmented as the shots are.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metapose.config import AdaptConfig, ConfigError, TopDownAugmentConfig
from metapose.config.training import SemiConfig
from metapose.data.batches import EpochBatches
from metapose.data.codec import HeatmapCodec
from metapose.data.dataset import Instance, Sample, TopDownDataset
from metapose.device import DeviceOptions
from metapose.errors import check_finite_loss
from metapose.skeleton import COCO17, Skeleton
from metapose.training.adapt import (
    L2SP,
    AdaptResult,
    adapt_by,
    fine_tune,
    lr_scheduler,
    reestimate_batchnorm,
)
from metapose.training.losses import joints_mse
from metapose.training.step import batch_loss, build_optimizer, train_mode

log = logging.getLogger(__name__)

_AFFINE_STREAM = 2  # the hard views' draws: a stream of their own beside the seed


@dataclass(frozen=True)
class SemiResult:
    """What :func:`fine_tune_with_unlabelled` did."""

    method: str
    shots: AdaptResult | None  # the fine-tune on the labelled shots (None: K = 0)
    unlabelled_crops: int  # people in the unlabelled set
    losses: tuple[float, ...] = ()  # mean teacher: total loss per step, before its update
    unlabelled_losses: tuple[float, ...] = ()  # the masked MSE to the teacher, per step
    confident: tuple[float, ...] = ()  # share of joints above the threshold, per step


# ------------------------------------------------------------------------------ pieces


def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``teacher = decay * teacher + (1 - decay) * student`` over floating tensors (parameters
    and BatchNorm statistics); other buffers (counters) are copied from the student."""
    with torch.no_grad():
        for (name, t), s in zip(
            teacher.state_dict().items(), student.state_dict().values(), strict=True
        ):
            if t.shape != s.shape:
                raise ValueError(f"teacher and student differ at {name}")
            if t.is_floating_point():
                t.mul_(decay).add_(s.detach(), alpha=1 - decay)
            else:
                t.copy_(s)


def _pixel_affine(angle: float, scale: float, size: tuple[int, int]) -> np.ndarray:
    """``(3, 3)`` output pixel -> input pixel map of content rotated by ``angle`` (radians) and
    scaled by ``scale`` about the centre of a ``size = (width, height)`` image."""
    cx, cy = (size[0] - 1) / 2, (size[1] - 1) / 2
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    # inverse of (rotate by angle, scale) about the centre: rotate by -angle, divide by scale
    linear = np.array([[c, s], [-s, c]])
    out = np.eye(3)
    out[:2, :2] = linear
    out[:2, 2] = np.array([cx, cy]) - linear @ np.array([cx, cy])
    return out


def _theta(pixel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An output -> input pixel affine as ``affine_grid``'s ``theta`` (``align_corners=False``:
    pixel ``x`` is at normalised ``(2x + 1) / W - 1``)."""
    w, h = size
    to_norm = np.array([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]])
    to_pixel = np.linalg.inv(to_norm)
    return (to_norm @ pixel @ to_pixel)[:2]


def random_affines(
    count: int, codec: HeatmapCodec, rotation: float, scale: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random rotations (up to ``rotation`` degrees) and scales (``1 +- scale``) as
    ``(count, 2, 3)`` thetas for the crops and for their heatmaps: the same warp of the person
    at both resolutions (the heatmap's pixel grid is the crop's times ``heatmap_per_input``)."""
    to_heatmap = np.diag([*codec.heatmap_per_input, 1.0])
    crops, heatmaps = [], []
    for _ in range(count):
        angle = math.radians(rng.uniform(-rotation, rotation))
        factor = rng.uniform(1 - scale, 1 + scale)
        pixel = _pixel_affine(angle, factor, codec.input_size)
        crops.append(_theta(pixel, codec.input_size))
        heatmap_pixel = to_heatmap @ pixel @ np.linalg.inv(to_heatmap)
        heatmaps.append(_theta(heatmap_pixel, codec.heatmap_size))
    as_tensor = lambda x: torch.from_numpy(np.stack(x)).float()  # noqa: E731
    return as_tensor(crops), as_tensor(heatmaps)


def warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` maps resampled by ``(B, 2, 3)`` output -> input thetas; zeros outside
    (a normalised crop's zero is the mean colour; a heatmap's zero is no joint)."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def cutout(images: torch.Tensor, count: int, size: float, rng: np.random.Generator) -> torch.Tensor:
    """A copy of ``(B, C, H, W)`` ``images`` with ``count`` square patches of side ``size`` times
    the shorter side set to 0 in each (occlusion: the student must infer hidden joints)."""
    out = images.clone()
    height, width = images.shape[-2:]
    side = max(1, round(size * min(height, width)))
    for b in range(images.shape[0]):
        for _ in range(count):
            y = int(rng.integers(0, height - side + 1))
            x = int(rng.integers(0, width - side + 1))
            out[b, :, y : y + side, x : x + side] = 0
    return out


def confident_joints(heatmaps: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(B, K)`` weights: 1 where a ``(B, K, h, w)`` heatmap's peak is at least ``threshold``."""
    return (heatmaps.flatten(2).amax(dim=2) >= threshold).float()


def teacher_heatmaps(
    teacher: nn.Module,
    images: torch.Tensor,
    codec: HeatmapCodec,
    options: DeviceOptions,
    flip_index: np.ndarray | None,
) -> torch.Tensor:
    """The teacher's heatmaps of ``images`` in eval mode, averaged with the mirrored crops' (the
    codec's flip test) when ``flip_index`` is given."""
    teacher.eval()
    with (
        torch.no_grad(),
        torch.autocast(options.device.type, dtype=torch.bfloat16, enabled=options.use_amp),
    ):
        heatmaps = teacher(images).float()
        if flip_index is None:
            return heatmaps
        mirrored = teacher(images.flip(-1)).float().cpu().numpy()
    back = torch.from_numpy(codec.flip_back(mirrored, flip_index)).to(heatmaps.device)
    return 0.5 * (heatmaps + back)


def unlabelled_loss(
    student: torch.Tensor, targets: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """JointsMSE of the student's heatmaps to the (warped) teacher heatmaps over the confident
    joints, and the ``(B, K)`` mask used."""
    mask = confident_joints(targets, threshold)
    return joints_mse(student.float(), targets, mask), mask


def joined(first: Sample, second: Sample) -> Sample:
    """Two collated batches as one (every field concatenated along the batch axis)."""
    pairs: Any = zip(first, second, strict=True)  # collated: every field is a tensor
    fields: Any = [torch.cat([a, b]) for a, b in pairs]
    return Sample(*fields)


def mixed_batches(
    unlabelled: Iterator[Sample], labelled: Iterator[Sample] | None
) -> Iterator[Sample]:
    """Each ``unlabelled`` batch joined by the next ``labelled`` one (when there are shots)."""
    for batch in unlabelled:
        yield batch if labelled is None else joined(batch, next(labelled))


# ------------------------------------------------------------------------------ the methods


def fine_tune_on_pseudo_labels(
    model: nn.Module,
    support: TopDownDataset | None,
    pseudo: Sequence[Instance],
    adapt_config: AdaptConfig,
    config: SemiConfig,
    options: DeviceOptions,
    *,
    codec: HeatmapCodec,
    seed: int = 0,
    skeleton: Skeleton = COCO17,
    on_step: Callable[[int, float], None] | None = None,
) -> AdaptResult:
    """``config.steps`` steps on batches of ``config.unlabelled_batch`` ``pseudo``-labelled people
    (keypoints flagged 0 are not learnt) plus ``config.labelled_batch`` crops of ``support`` (None:
    K = 0), both augmented as the support set is (default: SimpleBaseline's). The optimiser,
    frozen BatchNorm, head-only and L2-SP are ``adapt_config``'s, and so are its learning rate and
    schedule unless ``config`` sets them (:meth:`SemiConfig.student_adapt`); ``model`` changes in
    place. The pseudo-labelled images are read from disk as needed, not kept in memory."""
    if not pseudo:
        raise ConfigError("no unlabelled person was labelled confidently enough to learn from")
    augment = TopDownAugmentConfig() if support is None else support.augment
    people = TopDownDataset(pseudo, codec, augment=augment, seed=seed, skeleton=skeleton)
    unlabelled = EpochBatches(people, config.unlabelled_batch, seed=seed).batches()
    labelled = (
        None
        if support is None
        else EpochBatches(support, config.labelled_batch, seed=seed).batches()
    )
    log.info(
        "distillation: %d steps on %d pseudo-labelled people and %d shots",
        config.steps,
        len(pseudo),
        0 if support is None else len(support),
    )
    batches = mixed_batches(unlabelled, labelled)
    student = config.student_adapt(adapt_config)
    return adapt_by(model, batches, config.steps, student, options, on_step=on_step)


def _unlabelled_batches(
    unlabelled: Sequence[Instance], codec: HeatmapCodec, batch: int, seed: int, skeleton: Skeleton
) -> EpochBatches:
    crops = TopDownDataset(
        unlabelled, codec, seed=seed, cache_images=True, skeleton=skeleton, targets=False
    )
    return EpochBatches(crops, batch, seed=seed)


def _mean_teacher(
    model: nn.Module,
    support: TopDownDataset | None,
    stream: EpochBatches,
    adapt_config: AdaptConfig,
    config: SemiConfig,
    codec: HeatmapCodec,
    options: DeviceOptions,
    seed: int,
    flip_index: np.ndarray | None,
    on_step: Callable[[int, float], None] | None,
) -> tuple[list[float], list[float], list[float]]:
    teacher = copy.deepcopy(model)
    student = config.student_adapt(adapt_config)
    frozen = student.batchnorm != "train"
    optimizer = build_optimizer(
        [p for p in model.parameters() if p.requires_grad], student.optimizer
    )
    scheduler = lr_scheduler(optimizer, student.lr_schedule, config.steps)
    penalty = L2SP(model, student.l2sp) if student.l2sp > 0 else None
    labelled = (
        None
        if support is None
        else EpochBatches(support, adapt_config.batch_size, seed=seed).batches()
    )
    unlabelled = stream.batches()
    rng = np.random.default_rng((seed, _AFFINE_STREAM))
    losses, unlabelled_losses, confident = [], [], []
    for step in range(config.steps):
        crops = next(unlabelled).image.to(options.device)
        targets = teacher_heatmaps(teacher, crops, codec, options, flip_index)
        crop_theta, heatmap_theta = random_affines(
            crops.shape[0], codec, config.rotation, config.scale, rng
        )
        hard = cutout(
            warp(crops, crop_theta.to(crops.device)), config.cutouts, config.cutout_size, rng
        )
        warped = warp(targets, heatmap_theta.to(targets.device))
        train_mode(model, frozen)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(options.device.type, dtype=torch.bfloat16, enabled=options.use_amp):
            predicted = model(hard.contiguous(memory_format=options.memory_format))
        unsup, mask = unlabelled_loss(predicted, warped, config.threshold)
        total = config.weight * unsup
        if labelled is not None:
            total = total + batch_loss(model, next(labelled), options)
        loss = total if penalty is None else total + penalty()
        loss.backward()
        optimizer.step()
        scheduler.step()
        ema_update(teacher, model, config.ema_decay)
        value = float(total.detach())
        check_finite_loss(value, step + 1)
        losses.append(value)
        unlabelled_losses.append(float(unsup.detach()))
        confident.append(float(mask.mean()))
        if on_step is not None:
            on_step(step, value)
    if config.final == "teacher":
        model.load_state_dict(teacher.state_dict())
    return losses, unlabelled_losses, confident


def fine_tune_with_unlabelled(
    model: nn.Module,
    support: TopDownDataset | None,
    unlabelled: Sequence[Instance],
    adapt_config: AdaptConfig,
    config: SemiConfig,
    options: DeviceOptions,
    *,
    codec: HeatmapCodec,
    seed: int = 0,
    skeleton: Skeleton = COCO17,
    flip: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> SemiResult:
    """Adapt ``model`` in place on the labelled ``support`` (None or empty: K = 0) and the
    ``unlabelled`` people by ``config.method``.

    The shots are fine-tuned on by ``adapt_config`` (:func:`fine_tune`) first; for
    ``mean_teacher`` that model is also the teacher's start. ``codec`` cuts the unlabelled crops
    (the model's own); ``flip``: the teacher averages with mirrored crops (``skeleton``'s flip
    pairs). ``on_step`` sees the mean-teacher steps.
    """
    if not unlabelled:
        raise ConfigError("semi-supervised adaptation needs at least one unlabelled image")
    if config.method == "distill":
        raise ConfigError(
            "distillation needs its teacher: metapose.inference.distill.distill_from_teacher"
        )
    if support is not None and len(support) == 0:
        support = None
    options.prepare(model)
    stream = _unlabelled_batches(unlabelled, codec, config.unlabelled_batch, seed, skeleton)
    if config.method == "adabn":
        batches = list(itertools.islice(stream.batches(), config.adabn_batches))
        reestimate_batchnorm(model, batches, options)
        log.info(
            "BatchNorm statistics re-measured on %d unlabelled crops",
            sum(len(b.image) for b in batches),
        )
        shots = None
        if support is not None:
            # the statistics just measured stay: the fine-tune must not move or re-measure them
            kept = replace(adapt_config, batchnorm="frozen")
            shots = fine_tune(model, support, kept, options, seed=seed)
        return SemiResult("adabn", shots, len(unlabelled))
    shots = None if support is None else fine_tune(model, support, adapt_config, options, seed=seed)
    flip_index = skeleton.flip_index if flip else None
    log.info("mean teacher: %d steps on %d unlabelled crops", config.steps, len(unlabelled))
    losses, unsup, confident = _mean_teacher(
        model, support, stream, adapt_config, config, codec, options, seed, flip_index, on_step
    )
    return SemiResult(
        "mean_teacher", shots, len(unlabelled), tuple(losses), tuple(unsup), tuple(confident)
    )
