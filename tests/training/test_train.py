from pathlib import Path

import numpy as np
import pytest
import torch

from metapose.config import TopDownAugmentConfig, replace
from metapose.config.training import AdaptConfig, OptimizerConfig, TrainConfig
from metapose.data.batches import EpochBatches, IndexedBatches, collate
from metapose.device import DeviceOptions
from metapose.models import TopDownModel
from metapose.training.adapt import fine_tune
from metapose.training.few_shot import choose_shots
from metapose.training.run_folder import FINAL_FILE, STATE_FILE, StepLog
from metapose.training.train import train
from tests.conftest import TINY_MODEL
from tests.helpers import tiny_dataset

CPU = torch.device("cpu")


def fresh_model() -> TopDownModel:
    torch.manual_seed(0)
    return TopDownModel(TINY_MODEL)


def test_interrupted_training_resumes_to_identical_weights(tmp_path: Path) -> None:
    data = tiny_dataset(12, augment=TopDownAugmentConfig())
    # The learning rate decays after step 4, past the resume point: a resumed run must decay too.
    cfg = TrainConfig(steps=6, batch_size=4, checkpoint_every=3, lr_milestones=(0.75,))
    straight = fresh_model()
    train(straight, EpochBatches(data, 4, seed=1), cfg, CPU, out_dir=tmp_path / "a")

    # Crash during step 5 (after the checkpoint of step 3), then start again in the same folder.
    def crash(entry: StepLog) -> None:
        if entry.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            fresh_model(),
            EpochBatches(data, 4, seed=1),
            cfg,
            CPU,
            out_dir=tmp_path / "b",
            on_step=crash,
        )
    assert (tmp_path / "b" / STATE_FILE).exists()
    resumed = fresh_model()
    history = train(resumed, EpochBatches(data, 4, seed=1), cfg, CPU, out_dir=tmp_path / "b")
    assert [s.step for s in history.steps] == [1, 2, 3, 4, 5, 6]
    assert [s.lr for s in history.steps] == [1e-3] * 4 + [pytest.approx(1e-4)] * 2
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert (tmp_path / "b" / FINAL_FILE).exists() and (tmp_path / "b" / "train.csv").exists()


def test_resuming_rewrites_the_validation_log_after_the_checkpoint(tmp_path: Path) -> None:
    """val.csv, like train.csv, shows each validation once after a resume."""
    data = tiny_dataset(8)
    cfg = TrainConfig(steps=4, batch_size=4, checkpoint_every=2, log_every=1)
    calls = [0]

    def validate(model: TopDownModel) -> dict[str, float]:
        calls[0] += 1
        if calls[0] == 4:  # the validation of step 4 in the first run, after step 3's
            raise KeyboardInterrupt
        return {"ap": 0.5}

    def run() -> None:
        train(
            fresh_model(),
            EpochBatches(data, 4, seed=1),
            cfg,
            CPU,
            out_dir=tmp_path,
            validate=validate,
            validate_every=1,
        )

    with pytest.raises(KeyboardInterrupt):
        run()  # validations of steps 1-3 logged, state saved at step 2
    run()  # resumes at step 2: validates steps 3 and 4 again
    for log in ("train.csv", "val.csv"):
        rows = (tmp_path / log).read_text().split()[1:]
        assert [row.split(",")[0] for row in rows] == ["1", "2", "3", "4"], log


def test_training_reduces_the_loss_on_a_fixed_batch() -> None:
    model = fresh_model()
    batch = collate([tiny_dataset(4)[i] for i in range(4)])
    stream = IndexedBatches(lambda b: batch)
    cfg = TrainConfig(
        steps=40, batch_size=4, optimizer=OptimizerConfig(lr=3e-3), lr_milestones=(0.9,)
    )
    history = train(model, stream, cfg, CPU)
    losses = history.losses()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert history.images_seen == 160


@pytest.mark.parametrize("batchnorm", ["train", "frozen"])
def test_frozen_batchnorm_training_keeps_the_statistics_and_trains_the_weights(
    batchnorm: str,
) -> None:
    model = fresh_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(steps=2, batch_size=4, batchnorm=batchnorm)  # type: ignore[arg-type]
    train(model, EpochBatches(tiny_dataset(8), 4, seed=0), cfg, CPU)
    after = model.state_dict()
    stats = [k for k in after if k.endswith(("running_mean", "running_var"))]
    assert stats and any(k.endswith(".bias") and "bn" in k for k in after)
    kept = [torch.equal(before[k], after[k]) for k in stats]
    assert all(kept) if batchnorm == "frozen" else not any(kept)
    assert not torch.equal(before["final_layer.weight"], after["final_layer.weight"])


def test_head_only_fine_tune_leaves_the_backbone_untouched() -> None:
    model = fresh_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = AdaptConfig(epochs=2, batch_size=4, head_only=True)
    result = fine_tune(model, tiny_dataset(8), cfg, DeviceOptions(CPU))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    assert not torch.equal(before["final_layer.weight"], after["final_layer.weight"])
    assert len(result.losses) == 4 and len(result.epoch_losses) == 2 and result.images == 16
    assert all(p.requires_grad for p in model.parameters())


def test_head_only_fine_tune_keeps_what_the_caller_had_frozen() -> None:
    model = fresh_model()
    frozen = model.final_layer.bias
    frozen.requires_grad_(False)
    fine_tune(
        model,
        tiny_dataset(4),
        AdaptConfig(epochs=1, batch_size=4, head_only=True),
        DeviceOptions(CPU),
    )
    assert not frozen.requires_grad
    assert all(p.requires_grad for p in model.parameters() if p is not frozen)


def test_few_shot_with_fewer_images_than_a_batch_takes_one_step_per_epoch() -> None:
    model = fresh_model()
    result = fine_tune(
        model, tiny_dataset(3), AdaptConfig(epochs=5, batch_size=32), DeviceOptions(CPU)
    )
    assert len(result.losses) == 5 and result.images == 15


def test_indexed_batches_do_not_depend_on_worker_count() -> None:
    def make(b: int) -> object:
        return collate([tiny_dataset(2, seed=b)[0]] * 2)

    serial = [b.image for _, b in zip(range(5), IndexedBatches(make).batches(3), strict=False)]
    parallel = [
        b.image
        for _, b in zip(range(5), IndexedBatches(make, num_workers=2).batches(3), strict=False)
    ]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))
    assert not torch.equal(serial[0], serial[1])


def test_choose_shots_is_seeded_and_respects_the_pool() -> None:
    from metapose.data.coco import load_coco
    from tests.conftest import COCO_MINI, require

    ds = load_coco(require(COCO_MINI) / "annotations/person_keypoints_val2017.json")
    pool = sorted({a.image_id for a in ds.trainable()})[:20]
    a = choose_shots(ds, 8, seed=3, pool=pool)
    assert a == choose_shots(ds, 8, seed=3, pool=pool) and set(a) <= set(pool) and len(set(a)) == 8
    assert a != choose_shots(ds, 8, seed=4, pool=pool)
    with pytest.raises(ValueError, match="only 20"):
        choose_shots(ds, 21, seed=0, pool=pool)


def _crashing_run(out: Path, cfg: TrainConfig, at_step: int, **kwargs: object) -> None:
    def crash(entry: StepLog) -> None:
        if entry.step == at_step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            fresh_model(),
            EpochBatches(tiny_dataset(8), 4, seed=1),
            cfg,
            CPU,
            out_dir=out,
            on_step=crash,
            **kwargs,  # type: ignore[arg-type]
        )


def test_resuming_with_another_configuration_is_refused(tmp_path: Path) -> None:
    from metapose.config import ConfigError, TrainRunConfig

    cfg = TrainConfig(steps=4, batch_size=4, checkpoint_every=2)
    run = TrainRunConfig(train=cfg)
    _crashing_run(tmp_path, cfg, 3, run_config=run)
    state_before = (tmp_path / STATE_FILE).read_bytes()
    other = TrainRunConfig(train=replace(cfg, optimizer=OptimizerConfig(lr=5e-4)))
    with pytest.raises(
        ConfigError, match=r"different configuration \(run_config.train.optimizer.lr"
    ):
        train(
            fresh_model(),
            EpochBatches(tiny_dataset(8), 4, seed=1),
            other.train,
            CPU,
            out_dir=tmp_path,
            run_config=other,
        )
    with pytest.raises(ConfigError, match="init: None -> 'x.safetensors'"):
        train(
            fresh_model(),
            EpochBatches(tiny_dataset(8), 4, seed=1),
            cfg,
            CPU,
            out_dir=tmp_path,
            run_config=run,
            init="x.safetensors",
        )
    assert (tmp_path / STATE_FILE).read_bytes() == state_before
    history = train(
        fresh_model(),
        EpochBatches(tiny_dataset(8), 4, seed=1),
        cfg,
        CPU,
        out_dir=tmp_path,
        run_config=run,
    )
    assert [s.step for s in history.steps] == [1, 2, 3, 4]


def test_resuming_a_finished_run_rewrites_nothing(tmp_path: Path) -> None:
    cfg = TrainConfig(steps=2, batch_size=4, checkpoint_every=1)
    train(fresh_model(), EpochBatches(tiny_dataset(8), 4, seed=1), cfg, CPU, out_dir=tmp_path)
    final = (tmp_path / FINAL_FILE).read_bytes()
    again = train(
        fresh_model(), EpochBatches(tiny_dataset(8), 4, seed=1), cfg, CPU, out_dir=tmp_path
    )
    assert (tmp_path / FINAL_FILE).read_bytes() == final  # provenance (time) included
    assert [s.step for s in again.steps] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        FINAL_FILE,
        "train.csv",
        STATE_FILE,
    ]


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_state(tmp_path: Path) -> None:
    from metapose.errors import DivergedError
    from metapose.models.checkpoint import load_state

    cfg = TrainConfig(
        steps=8,
        batch_size=4,
        checkpoint_every=1,
        optimizer=OptimizerConfig(name="sgd", lr=1e6),
        lr_milestones=(),
    )
    with pytest.raises(DivergedError, match="at step [0-9]+: training diverged"):
        train(fresh_model(), EpochBatches(tiny_dataset(8), 4, seed=1), cfg, CPU, out_dir=tmp_path)
    assert not (tmp_path / FINAL_FILE).exists()
    state = load_state(tmp_path / STATE_FILE)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_an_unreadable_resume_state_is_one_clear_error(tmp_path: Path) -> None:
    from metapose.errors import DataError

    (tmp_path / STATE_FILE).write_bytes(b"garbage")
    cfg = TrainConfig(steps=2, batch_size=4)
    with pytest.raises(DataError, match="unreadable training state.*--no-resume"):
        train(fresh_model(), EpochBatches(tiny_dataset(8), 4, seed=1), cfg, CPU, out_dir=tmp_path)
    (tmp_path / ".model.safetensors.tmp").write_bytes(b"half")
    (tmp_path / ".tmpAb12Cd").write_bytes(b"half of a safetensors write")
    train(
        fresh_model(),
        EpochBatches(tiny_dataset(8), 4, seed=1),
        cfg,
        CPU,
        out_dir=tmp_path,
        resume=False,
    )
    assert not (tmp_path / ".model.safetensors.tmp").exists()
    assert not (tmp_path / ".tmpAb12Cd").exists()
