"""The default precision is float32 on every CPU, so the suite and the defaults give the same
bytes on CPUs with and without native bfloat16; bfloat16 autocast stays an explicit option.

Both kinds of CPU are tested here by setting what :func:`metapose.device.cpu_has_bf16` answers
(CPU autocast to bfloat16 runs everywhere; native support only makes it fast).
"""

from dataclasses import replace

import pytest
import torch

from metapose.config.training import AdaptConfig, OptimizerConfig, ReptileConfig, TrainConfig
from metapose.data.batches import EpochBatches, IndexedBatches, collate
from metapose.device import DeviceOptions
from metapose.models import TopDownModel
from metapose.training.adapt import fine_tune
from metapose.training.meta import meta_train
from metapose.training.train import train
from tests.conftest import TINY_MODEL
from tests.helpers import tiny_dataset

CPU = torch.device("cpu")
BOTH_KINDS = pytest.mark.parametrize("native_bf16", [False, True], ids=["no-bf16", "native-bf16"])


@pytest.fixture
def cpu_kind(monkeypatch: pytest.MonkeyPatch, native_bf16: bool) -> bool:
    monkeypatch.setattr("metapose.device.cpu_has_bf16", lambda: native_bf16)
    return native_bf16


def fresh_model() -> TopDownModel:
    torch.manual_seed(0)
    return TopDownModel(TINY_MODEL)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_bytes(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@BOTH_KINDS
def test_defaults_are_float32_on_every_cpu_and_bfloat16_on_cuda(cpu_kind: bool) -> None:
    for amp in (DeviceOptions(CPU).amp, TrainConfig().amp, ReptileConfig().amp):
        assert amp == "auto"
        assert not DeviceOptions(CPU, amp).use_amp
        assert DeviceOptions(torch.device("cuda"), amp).use_amp
    assert DeviceOptions(CPU, True).use_amp is cpu_kind  # the explicit option
    assert not DeviceOptions(CPU, False).use_amp
    assert not DeviceOptions(torch.device("cuda"), False).use_amp


def run_train(amp: bool | str = "auto") -> dict[str, torch.Tensor]:
    model = fresh_model()
    cfg = TrainConfig(steps=3, batch_size=4, amp=amp)  # type: ignore[arg-type]
    train(model, EpochBatches(tiny_dataset(8), 4, seed=1), cfg, CPU)
    return weights(model)


def run_meta() -> dict[str, torch.Tensor]:
    def task(index: int) -> object:
        data = tiny_dataset(4, seed=index)
        return collate([data[i] for i in range(4)])

    model = fresh_model()
    cfg = ReptileConfig(
        meta_steps=3, inner_steps=2, inner=OptimizerConfig(name="sgd", lr=0.05), batch_size=4
    )
    meta_train(model, IndexedBatches(task), cfg, CPU)  # type: ignore[arg-type]
    return weights(model)


def run_adapt() -> dict[str, torch.Tensor]:
    model = fresh_model()
    fine_tune(model, tiny_dataset(6), AdaptConfig(epochs=2, batch_size=4), DeviceOptions(CPU))
    return weights(model)


@BOTH_KINDS
@pytest.mark.parametrize("run", [run_train, run_meta, run_adapt], ids=["train", "meta", "adapt"])
def test_two_runs_with_the_defaults_give_the_same_bytes_on_either_cpu(
    cpu_kind: bool, run: object
) -> None:
    first = run()  # type: ignore[operator]
    assert all(torch.isfinite(v).all() for v in first.values() if v.is_floating_point())
    assert_same_bytes(first, run())  # type: ignore[operator]


def test_the_defaults_give_the_same_bytes_whatever_the_cpu_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("metapose.device.cpu_has_bf16", lambda: False)
    without = run_train()
    monkeypatch.setattr("metapose.device.cpu_has_bf16", lambda: True)
    assert_same_bytes(without, run_train())


def test_bfloat16_stays_an_option_and_changes_the_arithmetic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("metapose.device.cpu_has_bf16", lambda: True)
    bf16 = run_train(amp=True)
    assert all(torch.isfinite(v).all() for v in bf16.values() if v.is_floating_point())
    float32 = run_train(amp=False)
    assert any(not torch.equal(bf16[k], float32[k]) for k in bf16 if bf16[k].is_floating_point())
    assert_same_bytes(float32, run_train())  # "auto" on a CPU is float32


def test_amp_reads_from_yaml_as_auto_or_a_boolean() -> None:
    from metapose.config.loading import ConfigError, from_dict

    assert from_dict(TrainConfig, {"amp": "auto"}).amp == "auto"
    assert from_dict(TrainConfig, {"amp": True}).amp is True
    assert replace(ReptileConfig(), amp=False).amp is False
    with pytest.raises(ConfigError, match="amp"):
        from_dict(TrainConfig, {"amp": "fast"})
