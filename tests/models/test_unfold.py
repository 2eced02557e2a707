"""Folded BatchNorm gets statistics back: same function in eval mode, the same in train mode on
images like the calibration ones (so an imported deployment file trains like the original)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from metapose.models import TopDownModel
from metapose.models.weights.unfold import folded_batchnorms, unfold_batchnorm
from tests.models.test_architectures import TINY


def folded_model() -> TopDownModel:
    """A tiny Lite-HRNet whose BatchNorm layers look like an importer wrote them from a file
    that folded them: identity statistics and weight, a bias."""
    torch.manual_seed(0)
    model = TopDownModel(TINY["lite_hrnet"])
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.3)
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_var is not None and m.running_mean is not None
            m.running_mean.zero_()
            m.running_var.fill_(1.0 - m.eps)
            m.weight.data.fill_(1.0)
            m.bias.data.normal_(std=0.1)
    return model.eval()


def test_unfolding_keeps_the_eval_function_and_makes_train_mode_agree() -> None:
    model = folded_model()
    images = torch.randn(8, 3, 64, 32)
    with torch.no_grad():
        before = model(images)
        trained = copy.deepcopy(model).train()(images)
        assert not torch.allclose(trained, before, atol=1e-2)  # the problem
    layers = len(folded_batchnorms(model))
    assert layers > 10 and unfold_batchnorm(model, [images]) == layers
    assert not folded_batchnorms(model)
    with torch.no_grad():
        assert torch.allclose(model(images), before, atol=1e-4)
        assert torch.allclose(model.train()(images), before, atol=1e-3)


def test_ordinary_batchnorm_is_left_alone() -> None:
    torch.manual_seed(0)
    model = TopDownModel(TINY["resnet"])
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_var is not None
            m.running_var.fill_(2.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert unfold_batchnorm(model, [torch.randn(2, 3, 64, 32)]) == 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
