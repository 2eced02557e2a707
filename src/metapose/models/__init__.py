"""Top-down pose models: a backbone, a deconvolution head and a 1x1 heatmap layer.

:class:`TopDownModel` is the one model class; :mod:`metapose.models.backbones` holds ResNet,
Lite-HRNet and MobileNetV2, :mod:`metapose.models.heads` SimpleBaseline's head. Models know
nothing of data.
"""

from metapose.models.topdown import TopDownModel, count_parameters, seeded_model

__all__ = ["TopDownModel", "count_parameters", "seeded_model"]
