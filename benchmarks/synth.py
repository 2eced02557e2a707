"""Synthetic generator speed on one core, where the time goes, and how the pose priors differ.

Prints, per domain, single-person 256x192 crops per second and 640x480 multi-person scenes per
second on one thread (OpenCV, numpy's BLAS and torch limited to one thread; CPU time of this
process, so other jobs on the machine do not count against it), then the share of the crop time
spent in each stage of the renderer, then the pose-prior statistics (share of people with their
ankles above their hips, with a hand above the head, upside down; mean 1-D Wasserstein distance
between the joint-angle distributions of the daily and unique priors, against two independent
daily samples as the noise floor).

    python benchmarks/synth.py [--crops 300] [--scenes 40] [--poses 2000]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import cv2  # noqa: E402

from metapose.synth import appearance, poses, raster, scene  # noqa: E402
from metapose.synth.domains import DOMAINS  # noqa: E402
from metapose.synth.items import item_rng  # noqa: E402

CROP = (192, 256)
SCENE = (640, 480)

# Renderer stages, timed by wrapping the functions that make them up.
STAGES: dict[str, list[tuple[Any, str]]] = {
    "sample people (pose, shape, look, kinematics)": [(scene, "sample_figure")],
    "room layout": [(scene, "sample_room")],
    "background planes (ray cast, textures, shadows)": [(scene, "render_background")],
    "background blocks": [(scene, "paint_blocks"), (raster.Canvas, "draw_polygon")],
    "people: capsules": [(raster.Canvas, "draw_cone")],
    "people: ellipsoids": [(raster.Canvas, "draw_ellipsoid")],
    "projection and draw lists": [(scene, "figure_jobs"), (scene, "draw_blocks")],
    "labels from buffers": [(scene, "label_figure")],
    "sensor finish (noise, blur, palette)": [
        (appearance.RGBStyle, "finish"),
        (appearance.ThermalStyle, "finish"),
    ],
}


def rate(render: Callable[[int], object], count: int) -> tuple[float, float]:
    """Items per CPU-second and per wall-second over ``count`` renders."""
    render(0)  # warm caches
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(1, count + 1):
        render(i)
    return count / (time.process_time() - cpu), count / (time.perf_counter() - wall)


def profile_stages(domain: str, count: int) -> dict[str, float]:
    """CPU milliseconds per crop spent in each stage (functions wrapped, then restored)."""
    spent: dict[str, float] = defaultdict(float)
    originals = []
    for stage, targets in STAGES.items():
        for owner, name in targets:
            original = getattr(owner, name)
            originals.append((owner, name, original))

            def timed(*args: Any, _f: Any = original, _s: str = stage, **kwargs: Any) -> Any:
                start = time.process_time()
                try:
                    return _f(*args, **kwargs)
                finally:
                    spent[_s] += time.process_time() - start

            setattr(owner, name, timed)
    try:
        start = time.process_time()
        for i in range(count):
            scene.render_crop(domain, item_rng(99, i), *CROP)
        total = time.process_time() - start
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    out = {stage: 1e3 * spent[stage] / count for stage in STAGES}
    out["other (python glue)"] = 1e3 * total / count - sum(out.values())
    out["total"] = 1e3 * total / count
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=300)
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--poses", type=int, default=2000)
    parser.add_argument("--domains", nargs="*", default=list(DOMAINS))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # the generator itself does not need torch
        pass

    print(
        f"one thread; {args.crops} crops {CROP[1]}x{CROP[0]}, {args.scenes} scenes "
        f"{SCENE[0]}x{SCENE[1]} per domain (CPU time of this process)"
    )
    print(f"{'domain':10s} {'crops/s':>10s} {'(wall)':>8s} {'scenes/s':>10s} {'(wall)':>8s}")
    for name in args.domains:
        crops, crops_wall = rate(
            lambda i, n=name: scene.render_crop(n, item_rng(1, i), *CROP), args.crops
        )
        scenes, scenes_wall = rate(
            lambda i, n=name: scene.render_scene(n, item_rng(2, i), *SCENE), args.scenes
        )
        print(f"{name:10s} {crops:10.1f} {crops_wall:8.1f} {scenes:10.1f} {scenes_wall:8.1f}")

    print("\nwhere a crop's time goes (ms per 256x192 crop, CPU)")
    for name in args.domains:
        stages = profile_stages(name, max(args.crops // 2, 10))
        print(f"  {name}")
        for stage, ms in stages.items():
            print(f"    {stage:48s} {ms:6.2f}")

    print(f"\npose priors over {args.poses} people each")
    daily = poses.pose_statistics(poses.DAILY, args.poses, seed=0)
    unique = poses.pose_statistics(poses.UNIQUE, args.poses, seed=0)
    print(f"  {'':22s} {'daily':>8s} {'unique':>8s}")
    for field in daily._fields:
        print(f"  {field:22s} {getattr(daily, field):8.3f} {getattr(unique, field):8.3f}")
    apart = poses.angle_distance(poses.DAILY, poses.UNIQUE, args.poses // 2, seed=1)
    floor = poses.angle_distance(poses.DAILY, poses.DAILY, args.poses // 2, seed=2)
    print(
        f"  joint-angle Wasserstein-1, daily vs unique: {apart:.1f} deg "
        f"(daily vs daily: {floor:.1f} deg)"
    )


if __name__ == "__main__":
    main()
