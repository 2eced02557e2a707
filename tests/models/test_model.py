import pytest
import torch

from metapose.config import ConfigError, ModelConfig, ResNetConfig
from metapose.models import TopDownModel, count_parameters
from metapose.models.backbones.resnet import ResNet


@pytest.mark.parametrize(("depth", "millions"), [(50, 34.0), (18, 15.4)])
def test_simplebaseline_parameter_counts(depth: int, millions: float) -> None:
    model = TopDownModel(ModelConfig(backbone=ResNetConfig(depth=depth), num_keypoints=17))
    assert abs(count_parameters(model) / 1e6 - millions) <= 0.05


def test_every_parameter_receives_a_gradient(tiny_model: TopDownModel) -> None:
    images = torch.randn(2, 3, 64, 32)
    tiny_model(images).square().mean().backward()
    missing = [
        n for n, p in tiny_model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert missing == []


@pytest.mark.parametrize("input_size", [(192, 256), (96, 128), (288, 384)])
def test_heatmap_size_follows_the_derived_stride(input_size: tuple[int, int]) -> None:
    config = ModelConfig(
        backbone=ResNetConfig(depth=18), input_size=input_size, deconv_channels=(8, 8, 8)
    )
    model = TopDownModel(config).eval()
    out = model(torch.zeros(1, 3, input_size[1], input_size[0]))
    assert model.stride == config.stride == 4
    assert tuple(out.shape) == (1, 17, *reversed(config.heatmap_size))


def test_two_deconvolutions_give_stride_eight() -> None:
    config = ModelConfig(
        backbone=ResNetConfig(depth=18), input_size=(64, 64), deconv_channels=(8, 8)
    )
    out = TopDownModel(config).eval()(torch.zeros(1, 3, 64, 64))
    assert config.stride == 8 and tuple(out.shape[-2:]) == (8, 8)


def test_features_then_head_equals_forward(tiny_model: TopDownModel) -> None:
    tiny_model.eval()
    x = torch.randn(1, 3, 64, 32)
    assert torch.equal(tiny_model(x), tiny_model.forward_head(tiny_model.forward_features(x)))


def test_backbone_keys_are_torchvision_resnet_keys() -> None:
    keys = set(ResNet(50).state_dict())
    # A few names of torchvision.models.resnet50().state_dict() (fc.* excluded: no classifier).
    for name in [
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.conv3.weight",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.num_batches_tracked",
        "layer3.5.bn2.bias",
        "layer4.2.conv2.weight",
    ]:
        assert name in keys
    assert not any(k.startswith("fc.") for k in keys)
    assert ResNet(50).state_dict()["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)


def test_head_keys_follow_the_simplebaseline_release(tiny_model: TopDownModel) -> None:
    keys = set(tiny_model.state_dict())
    assert {
        "deconv_layers.0.weight",
        "deconv_layers.1.running_mean",
        "deconv_layers.7.bias",
        "final_layer.weight",
        "final_layer.bias",
    } <= keys
    assert "deconv_layers.0.bias" not in keys  # deconvolutions have no bias


def test_head_init_is_small_normal() -> None:
    model = TopDownModel(ModelConfig(backbone=ResNetConfig(depth=18)))
    w = model.deconv_layers[0].weight.detach()
    assert (
        abs(float(w.std()) - 0.001) < 1e-4
        and float(model.final_layer.bias.detach().abs().max()) == 0.0
    )


@pytest.mark.parametrize("bad", [{"input_size": (100, 256)}, {"num_keypoints": 0}])
def test_bad_model_config_is_rejected(bad: dict) -> None:
    with pytest.raises(ConfigError):
        ModelConfig(**bad)


def test_bad_backbone_config_is_rejected() -> None:
    with pytest.raises(ConfigError):
        ResNetConfig(depth=20)


def test_a_seeded_model_depends_on_its_seed_only_and_leaves_torch_rng_alone() -> None:
    from metapose.models import seeded_model

    config = ModelConfig(backbone=ResNetConfig(depth=18), deconv_channels=(8,))
    state = torch.random.get_rng_state()
    a, b, c = (seeded_model(config, s).state_dict() for s in (3, 3, 4))
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["final_layer.weight"], c["final_layer.weight"])
