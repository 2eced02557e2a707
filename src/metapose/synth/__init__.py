"""Procedural synthetic people with exact COCO-17 labels, in several visual domains.

``domains``: the built-in domains (``rgb``, ``thermal``, ``unique``) and :class:`Domain`; ``scene``:
:func:`render_scene` and :func:`render_crop`; ``items``: :func:`synth_item`, one labelled image from
its index and seed, for training on the fly; ``writer``: :func:`write_synth_dataset` (COCO format);
``preview``: labelled preview grids. Underneath: ``body`` (skeleton, shape, kinematics), ``poses``
(pose priors), ``camera``, ``appearance`` (styles), ``background`` and ``raster``.
"""

from metapose.synth.domains import DOMAINS, Domain, get_domain
from metapose.synth.items import synth_item
from metapose.synth.scene import render_crop, render_scene

__all__ = [
    "DOMAINS",
    "Domain",
    "get_domain",
    "render_crop",
    "render_scene",
    "synth_item",
]
