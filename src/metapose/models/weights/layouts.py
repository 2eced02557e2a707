"""Importing pretrained weights into TopDownModel, without unpickling code.

Three layouts map onto TopDownModel's parameter names by a prefix rename, because TopDownModel keeps
the names of the original networks (see :mod:`metapose.models`):

- ``torchvision``: an ImageNet ResNet state dict (``conv1.*``, ``bn1.*``, ``layer1..4.*``,
  ``fc.*``), the usual starting point of SimpleBaseline. It becomes the backbone; the ``fc``
  classifier is dropped and the deconvolution head keeps its fresh initialisation.
- ``simplebaseline``: the original release (Xiao et al., ECCV 2018,
  ``pose_resnet_{50,101,152}_{256x192,384x288}``): the backbone keys at top level,
  ``deconv_layers.{0..8}.*`` and ``final_layer.*``. The whole model.
- ``mmpose``: MMPose ``td-hm_res*`` checkpoints: ``backbone.*``, ``head.deconv_layers.*`` and
  ``head.final_layer.*`` under ``state_dict`` (MMPose 0.x's ``keypoint_head.`` is read alike).
  The whole model.

``.pth`` files are read with ``torch.load(weights_only=True)`` (tensors and plain containers
only), ``.safetensors`` with safetensors. A ``module.`` prefix (``DataParallel``) is removed. The
ResNet depth, the deconvolution channels and kernel and the number of keypoints are read off the
tensors' shapes; the input size, which weights do not fix, comes from the caller or from a
``<height>x<width>`` in the file name (both releases name files so).
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from metapose.config import (
    ConfigError,
    LiteHRNetConfig,
    MobileNetV2Config,
    ModelConfig,
    ResNetConfig,
)
from metapose.errors import DataError, cut
from metapose.files import show
from metapose.models import TopDownModel, seeded_model
from metapose.models.backbones.resnet import ARCHITECTURES, Bottleneck

log = logging.getLogger(__name__)

WeightFormat = Literal["torchvision", "simplebaseline", "mmpose"]
WEIGHT_FORMATS: tuple[str, ...] = get_args(WeightFormat)

BACKBONE = "backbone."
HEAD_MODULES = ("deconv_layers.", "final_layer.")
RESNET_MODULES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
TORCHVISION_CLASSIFIER = "fc."
DATA_PARALLEL_PREFIX = "module."
MMPOSE_HEAD_PREFIXES = ("head.", "keypoint_head.")  # MMPose 1.x, MMPose 0.x
STATE_DICT_KEY = "state_dict"
# BatchNorm's update counter: absent from checkpoints saved before PyTorch 0.4.1 and only used
# when ``momentum`` is None, so leaving it at 0 loses nothing.
BN_COUNTER = "num_batches_tracked"
# ``pose_resnet_50_256x192``, ``td-hm_res50_8xb64-210e_coco-256x192``: height x width.
SIZE_IN_NAME = re.compile(r"(?<![\dA-Za-z])(\d{2,4})x(\d{2,4})(?![\dA-Za-z])")
# How torch's restricted unpickler names the first Python object it refused to build.
UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
DECONV_STEP = 3  # deconv_layers is (ConvTranspose2d, BatchNorm2d, ReLU) per upsampling
CONV_WEIGHT_RANK = 4
SIZE_MULTIPLE = 32  # the backbone's stride
SUMMARY_KEYS = 6  # keys named per list in a report's summary


def describe_backbone(config: ModelConfig) -> str:
    """``ResNet-50``, ``Lite-HRNet (32; 40-80-160-320)``, ``MobileNetV2 x0.5``."""
    backbone = config.backbone
    match backbone:
        case ResNetConfig():
            return f"ResNet-{backbone.depth}"
        case LiteHRNetConfig():
            widths = "-".join(str(c) for c in backbone.branch_channels)
            return f"Lite-HRNet ({widths})"
        case MobileNetV2Config():
            return f"MobileNetV2 x{backbone.width_mult:g}"
    raise TypeError(f"unknown backbone {backbone!r}")


@dataclass(frozen=True)
class ShapeMismatch:
    key: str  # TopDownModel name
    file_shape: tuple[int, ...]
    model_shape: tuple[int, ...]


@dataclass(frozen=True)
class ImportReport:
    """What an import did; keys are TopDownModel names unless said otherwise.

    ``missing``: keys of the imported part (the backbone, or the whole model) the file lacks;
    ``unexpected``: file keys with no place in the model (file names); ``fresh``: keys outside
    the imported part, left at their initialisation (the head of a backbone import);
    ``dropped``: file keys a format discards on purpose (torchvision's classifier).
    """

    source: Path
    format: str
    config: ModelConfig
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    shape_mismatches: tuple[ShapeMismatch, ...]
    fresh: tuple[str, ...]
    dropped: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """Every key of the imported part came from the file, and every file key was used."""
        return not (self.missing or self.unexpected or self.shape_mismatches)

    def summary(self) -> str:
        lines = [
            f"{self.format} weights: loaded {len(self.loaded)} tensors into "
            f"{describe_backbone(self.config)}, {self.config.num_keypoints} keypoints, "
            f"deconv {list(self.config.deconv_channels)} k{self.config.deconv_kernel}, "
            f"input {self.config.input_size[0]}x{self.config.input_size[1]} (WxH)"
        ]
        for title, keys in (
            ("missing (left at initialisation)", self.missing),
            ("unexpected (ignored)", self.unexpected),
            ("initialised fresh", self.fresh),
            ("dropped", self.dropped),
        ):
            if keys:
                lines.append(
                    f"  {title}: {len(keys)}: {', '.join(keys[:SUMMARY_KEYS])}"
                    + (", ..." if len(keys) > SUMMARY_KEYS else "")
                )
        for m in self.shape_mismatches:
            lines.append(f"  shape mismatch {m.key}: file {m.file_shape} vs model {m.model_shape}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """For the checkpoint's metadata: the file's name, not where it sat on this machine."""
        return {
            "source": self.source.name,
            "format": self.format,
            "loaded": len(self.loaded),
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "shape_mismatches": [
                {"key": m.key, "file": list(m.file_shape), "model": list(m.model_shape)}
                for m in self.shape_mismatches
            ],
            "fresh": len(self.fresh),
            "dropped": list(self.dropped),
        }


# ------------------------------------------------------------------------------ reading


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (``.safetensors`` or a ``torch.save`` file), never unpickled.

    A checkpoint that wraps its weights under ``state_dict`` (MMPose, MMEngine, the
    SimpleBaseline training script) is unwrapped and a ``module.`` prefix is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "weights file not found")
    raw: Any
    if path.suffix == ".safetensors":
        try:
            raw = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as err:
            raise DataError(path, f"not a readable safetensors file ({err})") from None
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            refused = UNSAFE_GLOBAL.search(str(err))
            if refused is None:
                raise DataError(path, "not a PyTorch weights file (cannot unpickle it)") from None
            raise DataError(
                path,
                f"holds Python objects besides tensors ({refused.group(1)}), which weights_only "
                "loading refuses. Save its state dict alone (torch.save(state_dict)) or as "
                ".safetensors with a tool you trust",
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            raise DataError(path, f"not a PyTorch weights file ({err})") from None
    if isinstance(raw, Mapping) and STATE_DICT_KEY in raw:
        raw = raw[STATE_DICT_KEY]
    if not isinstance(raw, Mapping) or not raw:
        raise DataError(path, f"expected a state dict (names -> tensors), got {type(raw).__name__}")
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise DataError(
                path,
                f"not a state dict: {show(key)} holds a {type(value).__name__}",
                field=cut(str(key)),
            )
        state[key] = value
    if all(k.startswith(DATA_PARALLEL_PREFIX) for k in state):
        state = {k[len(DATA_PARALLEL_PREFIX) :]: v for k, v in state.items()}
    return state


def input_size_from_name(path: str | Path) -> tuple[int, int] | None:
    """``(width, height)`` from a ``<height>x<width>`` in the file name (the last one), if any."""
    matches = SIZE_IN_NAME.findall(Path(path).name)
    if not matches:
        return None
    height, width = (int(v) for v in matches[-1])
    if width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
        return None
    return (width, height)


# ------------------------------------------------------------------------------ key mapping


@dataclass(frozen=True)
class _Mapped:
    tensors: dict[str, torch.Tensor]  # TopDownModel name -> tensor
    source_of: dict[str, str]  # TopDownModel name -> file name
    unexpected: tuple[str, ...]
    dropped: tuple[str, ...]


def _is_backbone_key(key: str) -> bool:
    return key.startswith(RESNET_MODULES)


def _rename(key: str, fmt: str) -> str | None:
    """The TopDownModel name of a file key, or None when it has none."""
    if fmt == "torchvision":
        return BACKBONE + key if _is_backbone_key(key) else None
    if fmt == "simplebaseline":
        if _is_backbone_key(key):
            return BACKBONE + key
        return key if key.startswith(HEAD_MODULES) else None
    if key.startswith(BACKBONE) and _is_backbone_key(key[len(BACKBONE) :]):
        return key
    for prefix in MMPOSE_HEAD_PREFIXES:
        if key.startswith(prefix) and key[len(prefix) :].startswith(HEAD_MODULES):
            return key[len(prefix) :]
    return None


def map_keys(state: Mapping[str, torch.Tensor], fmt: str) -> _Mapped:
    if fmt not in WEIGHT_FORMATS:
        raise ValueError(f"weight format must be one of {WEIGHT_FORMATS}, got {fmt!r}")
    tensors: dict[str, torch.Tensor] = {}
    source_of: dict[str, str] = {}
    unexpected: list[str] = []
    dropped: list[str] = []
    for key, value in state.items():
        if fmt == "torchvision" and key.startswith(TORCHVISION_CLASSIFIER):
            dropped.append(key)
            continue
        name = _rename(key, fmt)
        if name is None:
            unexpected.append(key)
        else:
            tensors[name] = value
            source_of[name] = key
    return _Mapped(tensors, source_of, tuple(unexpected), tuple(dropped))


# ------------------------------------------------------------------------------ config inference


def _infer_depth(tensors: Mapping[str, torch.Tensor], source: Path, fmt: str) -> int:
    blocks = []
    for stage in range(1, 5):
        pattern = re.compile(rf"^{re.escape(BACKBONE)}layer{stage}\.(\d+)\.")
        indices = {int(m.group(1)) for k in tensors if (m := pattern.match(k))}
        blocks.append(len(indices))
    if not any(blocks):
        raise DataError(
            source, f"no ResNet layers (layer1..4) found where the {fmt!r} layout puts them"
        )
    bottleneck = f"{BACKBONE}layer1.0.conv3.weight" in tensors
    for depth, (block, counts) in ARCHITECTURES.items():
        if (block is Bottleneck) == bottleneck and tuple(blocks) == counts:
            return depth
    kind = "bottleneck" if bottleneck else "basic"
    raise DataError(source, f"no ResNet has {blocks} {kind} blocks per stage")


def _infer_head(
    tensors: Mapping[str, torch.Tensor], source: Path
) -> tuple[tuple[int, ...], int, int]:
    """Deconvolution channels and kernel, and the number of keypoints, from the head's shapes."""
    deconvs = sorted(
        (int(m.group(1)), t)
        for k, t in tensors.items()
        if (m := re.fullmatch(r"deconv_layers\.(\d+)\.weight", k)) and t.ndim == CONV_WEIGHT_RANK
    )
    final = tensors.get("final_layer.weight")
    if not deconvs or final is None:
        raise DataError(source, "no deconv_layers.*.weight / final_layer.weight: not a whole model")
    if [i for i, _ in deconvs] != list(range(0, DECONV_STEP * len(deconvs), DECONV_STEP)):
        raise DataError(
            source,
            f"deconvolutions at deconv_layers {[i for i, _ in deconvs]}, expected every "
            f"{DECONV_STEP}rd from 0 (ConvTranspose2d, BatchNorm2d, ReLU)",
        )
    # ConvTranspose2d weights are (in, out, kh, kw).
    channels = tuple(int(t.shape[1]) for _, t in deconvs)
    kernel = int(deconvs[0][1].shape[2])
    return channels, kernel, int(final.shape[0])


def infer_config(
    tensors: Mapping[str, torch.Tensor],
    fmt: str,
    source: Path,
    *,
    input_size: tuple[int, int] | None = None,
    base: ModelConfig | None = None,
) -> ModelConfig:
    """The ModelConfig the (renamed) weights fit; ``base`` supplies what they do not fix."""
    base = base or ModelConfig()
    size = input_size or input_size_from_name(source) or base.input_size
    try:
        config = replace(
            base,
            backbone=ResNetConfig(depth=_infer_depth(tensors, source, fmt)),
            input_size=size,
        )
        if fmt != "torchvision":
            channels, kernel, keypoints = _infer_head(tensors, source)
            config = replace(
                config, deconv_channels=channels, deconv_kernel=kernel, num_keypoints=keypoints
            )
    except ConfigError as err:
        raise DataError(source, f"the weights do not fit a TopDownModel: {err}") from None
    return config


# ------------------------------------------------------------------------------ import


def _imported_part(fmt: str, key: str) -> bool:
    return key.startswith(BACKBONE) if fmt == "torchvision" else True


def import_layout(
    path: str | Path,
    fmt: WeightFormat,
    *,
    input_size: tuple[int, int] | None = None,
    config: ModelConfig | None = None,
    strict: bool = True,
    init_seed: int = 0,
) -> tuple[TopDownModel, ImportReport]:
    """A TopDownModel holding the weights of ``path`` in layout ``fmt``, and what was loaded.

    ``config`` fixes the architecture (else it is inferred, see :func:`infer_config`);
    ``input_size`` is ``(width, height)``. Parameters the file does not give start from
    TopDownModel's initialisation under ``init_seed``. With ``strict`` anything missing,
    unexpected or of the wrong shape is a :class:`~metapose.errors.DataError`; without it the
    fitting tensors are loaded and the report says what was not.
    """
    source = Path(path)
    mapped = map_keys(read_weights(source), fmt)
    if not mapped.tensors:
        raise DataError(source, f"no key of the {fmt!r} layout found; is this the right format?")
    if config is None:
        config = infer_config(mapped.tensors, fmt, source, input_size=input_size)
    elif input_size is not None:
        config = replace(config, input_size=input_size)
    model = seeded_model(config, init_seed)
    own = model.state_dict()

    loaded: dict[str, torch.Tensor] = {}
    mismatches = []
    unexpected = list(mapped.unexpected)
    for name, tensor in mapped.tensors.items():
        if name not in own:
            unexpected.append(mapped.source_of[name])
        elif tuple(tensor.shape) != tuple(own[name].shape):
            mismatches.append(ShapeMismatch(name, tuple(tensor.shape), tuple(own[name].shape)))
        else:
            loaded[name] = tensor.to(own[name].dtype)
    part = [k for k in own if _imported_part(fmt, k)]
    missing = [k for k in part if k not in mapped.tensors and not k.endswith(BN_COUNTER)]
    report = ImportReport(
        source=source,
        format=fmt,
        config=config,
        loaded=tuple(sorted(loaded)),
        missing=tuple(missing),
        unexpected=tuple(unexpected),
        shape_mismatches=tuple(mismatches),
        fresh=tuple(k for k in own if not _imported_part(fmt, k)),
        dropped=mapped.dropped,
    )
    if strict and not report.complete:
        raise DataError(source, "the weights do not fit the model:\n" + report.summary())
    model.load_state_dict(loaded, strict=False)
    log.info("%s", report.summary())
    return model, report
