"""Synthetic visual domains: a pose prior, an appearance style and a camera prior, by name.

A domain is data, built in a few lines: any :class:`Domain` object can be passed wherever a
domain is taken (``render_crop``, ``synth_item``, ``write_synth_dataset``, previews); the
:data:`DOMAINS` table only names the built-in ones:

* ``rgb``: daily poses in colour photographs (the source domain standing in for COCO);
* ``thermal``: daily poses seen by a long-wave infrared camera, mostly from above (surveillance);
* ``unique``: yoga, dance and gymnastics poses in colour photographs of lightly dressed people.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from metapose.config import ConfigError
from metapose.files import show
from metapose.synth.appearance import AppearanceStyle, RGBStyle, ThermalStyle
from metapose.synth.camera import CameraPrior
from metapose.synth.poses import DAILY, UNIQUE, PosePrior


@dataclass(frozen=True)
class Domain:
    """One synthetic domain. ``max_people`` bounds the people of a scene (1 to it)."""

    name: str
    poses: PosePrior
    style: AppearanceStyle
    camera: CameraPrior
    max_people: int = 4

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a domain needs a name")
        if self.max_people < 1:
            raise ValueError(
                f"domain {self.name!r}: max_people must be >= 1, got {self.max_people}"
            )
        if self.style.channels < 1:
            raise ValueError(f"domain {self.name!r}: style must render at least one channel")


RGB = Domain("rgb", DAILY, RGBStyle(), CameraPrior())

THERMAL = Domain(
    "thermal",
    DAILY,
    ThermalStyle(),
    CameraPrior(fov=(35.0, 60.0), elevation=(5.0, 50.0), height=(2.0, 5.0), distance=(4.0, 14.0)),
)

UNIQUE_DOMAIN = Domain(
    "unique",
    UNIQUE,
    RGBStyle(
        name="unique",
        outdoor_share=0.25,
        barefoot_share=0.5,
        bare_arms_share=0.5,
        shorts_share=0.35,
        tight_clothes_share=0.6,
    ),
    CameraPrior(azimuth_weights=(0.4, 0.4, 0.2), elevation=(-10.0, 25.0), roll_sd=6.0),
)

DOMAINS: Mapping[str, Domain] = MappingProxyType({d.name: d for d in (RGB, THERMAL, UNIQUE_DOMAIN)})


def get_domain(name: str | Domain) -> Domain:
    """The built-in domain called ``name`` (a :class:`Domain` is returned as it is)."""
    if isinstance(name, Domain):
        return name
    try:
        return DOMAINS[name]
    except KeyError:
        raise ConfigError(
            f"unknown synthetic domain {show(name)}; known domains: {', '.join(sorted(DOMAINS))}"
        ) from None
