"""Bad input: one line naming the key, the value and what is allowed; exit 2; nothing trained."""

import pytest

CASES = [
    (["model=resnet9000"], "model=resnet9000: no such model config; choose one of: alexnet_bn,"),
    (["data=imagenet22k"], "data=imagenet22k: no such data config; choose one of: cifar10, "),
    (["logger=mlflow"], "logger=mlflow: no such logger config; choose one of: csv, default"),
    (["-m", "model=cnn1d,nope"], "model=nope: no such model config"),
    (["ghost_batch_size=64"], "ghost_batch_size=64 exceeds the per-device batch 32"),
    (
        ["+trainer.fast_dev_run=true"],
        "trainer.fast_dev_run=True: lbtrain sets the epochs and steps from its batch plan",
    ),  # fmt: skip
    (
        ["ghost_batch_size=16", "trainer=ddp", "trainer.sync_batchnorm=true"],
        "trainer.sync_batchnorm=True: cannot be combined with ghost_batch_size",
    ),
    (
        ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=3"],
        "batch_size=32 is not divisible by the 3 devices",
    ),
    (  # rank 0 measures alone: SyncBatchNorm would wait for the other ranks for ever
        ["trainer=ddp", "trainer.devices=2", "trainer.sync_batchnorm=true", "callbacks=all"],
        "callbacks.batch_sharpness: measures in training mode on rank 0 alone, where SyncBatchNorm",
    ),
    (["optim.gamma=[0.5,0.2,0.1]"], "optim.gamma=[0.5, 0.2, 0.1]: must be a factor in (0, 1], or"),
    # one factor in a list would decay once, at the first of the two milestones
    (["optim.gamma=[0.1]"], "optim.gamma=[0.1]: must be a factor in (0, 1], or a list of one such"),
    (["batchsize=64"], "batchsize=64: no such key in the config (check the spelling; a new key"),
    (["-m", "optim.lrr=0.1,0.2"], "optim.lrr=0.1: no such key in the config"),
    (  # a key only a later point's group lacks: that point named, in one line
        ["-m", "model=cnn1d,mlp", "model.channels=[8]"],
        "model.channels=[8]: no such key in the config (check the spelling; a new key needs a "
        "leading +, as in +model.channels=[8]) (in the sweep's point model=mlp)",
    ),
    (["+foo=1"], "foo: Key 'foo' not in 'RunSchema'"),
    (["batch_size=0"], "batch_size=0: must be a positive integer"),
    (["batch_size=-4"], "batch_size=-4: must be a positive integer"),
    (["batch_size=abc"], "batch_size: Value 'abc' of type 'str' could not be converted to Integer"),
    (["optim.lr=-0.1"], "optim.lr=-0.1: must be >= 0"),
    (["lr_scaling=cubic"], "lr_scaling=cubic: use none, linear, sqrt"),
    (["regime=longer"], "regime=longer: use fixed, adapted"),
    (["ghost_batch_size=0"], "ghost_batch_size=0: must be > 0 or null"),
    (["optim.momentum=1.5"], "optim.momentum=1.5: must be in [0, 1)"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0: must be an int > 0"),
    (["model.name=nope"], "model.name=nope: use one of"),
    # found by trying every key in conf/ as a newcomer would
    (["ckpt_path=/nonexistent/last.ckpt"], "ckpt_path=/nonexistent/last.ckpt: no such checkpoint"),
    (
        ["data=cifar10", "data.data_dir=/nonexistent"],
        "data.data_dir=/nonexistent: CIFAR-10 not found",
    ),
    (
        ["data=imagenet", "data.data_dir=/nonexistent"],
        "data.data_dir=/nonexistent: ImageNet not found",
    ),
    (["seed=-1"], "seed=-1: must be >= 0"),
    (["trainer.precision=fp13"], "trainer: Precision 'fp13' is invalid"),
    (["trainer.devices=0"], "trainer: "),
    (["trainer.accelerator=tpu"], "trainer: Requirement 'torch_xla"),
    (
        ["trainer.accumulate_grad_batches=0"],
        "trainer.accumulate_grad_batches=0: must be an int >= 1",
    ),
    (["trainer.log_every_n_steps=-1"], "trainer.log_every_n_steps=-1: must be an int >= 1"),
    (["trainer.max_epochs=2.5"], "trainer.max_epochs=2.5: must be an int > 0"),
    # once a traceback (None > 0) where lbtrain read null as -1 with a fallback of its own
    (["trainer.max_steps=null"], "trainer.max_steps=None: must be -1 (no step budget) or an int"),
    (["trainer.max_steps=0"], "trainer.max_steps=0: must be -1 (no step budget) or an int > 0"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1: must be >= 0 or null"),
    (["optim.milestones=[20,10]"], "optim.milestones=[20, 10]: must be increasing positive"),
    (["optim.warmup=-1"], "optim.warmup=-1: must be >= 0"),
    (["optim.schedule_unit=minute"], "optim.schedule_unit=minute: use epoch, step"),
    (["optim.weight_decay=-1"], "optim.weight_decay=-1: must be >= 0"),
    (["optim.base_batch_size=0", "batch_size=32"], "optim.base_batch_size=0: must be > 0"),
    (["regime_multiplier=0"], "regime_multiplier=0: must be > 0"),
    (["large_batch_size=0"], "large_batch_size=0: must be > 0"),
    (["data.eval_batch_size=0"], "data.eval_batch_size=0: must be a positive integer"),
    (["data.num_samples=10"], "data.num_samples=10: gives 8 training samples, fewer than one"),
    (["data.train_split=1.5"], "data.train_split=1.5: must be in (0, 1)"),
    (["model.channels=[32,0]"], "model.channels=[32, 0]: widths must be positive integers"),
    (["model=mlp", "model.hidden=[-3]"], "model.hidden=[-3]: widths must be positive integers"),
    (["+model.depth=7"], "model=cnn1d cannot be built for data=mnist1d (samples of shape (1, 40)"),
    (["model.depth=7"], "model.depth=7: no such key"),
    (
        ["callbacks.weight_distance.flush_every_n_steps=0"],
        "callbacks.weight_distance: flush_every_n_steps=0 must be >= 1",
    ),
    (
        ["callbacks.weight_distance.per_layr=true"],
        "callbacks.weight_distance.per_layr=true: no such key",
    ),
    (["logger.wandb.mode=bogus"], "logger.wandb.mode=bogus: use online, offline, disabled"),
    (["model=c1"], "model=c1 cannot be built for data=mnist1d (samples of shape (1, 40)"),
    (["model=mlp", "model.norm=layer"], "model.norm=layer: use batch, none"),
    (
        ["model=mlp", "model.norm=none", "ghost_batch_size=8"],
        "ghost_batch_size=8: model=mlp has no BatchNorm to split into ghost batches",
    ),
    (["compile=maybe"], "compile: Value 'maybe' is not a valid bool"),
    (["callbacks=all", "callbacks.noise_scale.chunks=1"], "callbacks.noise_scale: chunks=1 must"),
    (
        ["callbacks=all", "callbacks.noise_scale.granularity=bogus"],
        "callbacks.noise_scale: granularity='bogus' is not one of auto, devices, chunks, accum",
    ),
    (
        ["callbacks=all", "callbacks.noise_scale.granularity=devices"],
        "callbacks.noise_scale.granularity=devices needs DDP on more than one device",
    ),
    (
        ["callbacks=all", "callbacks.noise_scale.chunks=64"],
        "callbacks.noise_scale.chunks=64: the per-device batch 32 has fewer samples",
    ),
    (
        [
            "callbacks=all",
            "callbacks.noise_scale.granularity=accumulation",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
        ],
        "callbacks.noise_scale.granularity=accumulation: under DDP the micro-batch gradients",
    ),  # fmt: skip
    (["callbacks=all", "callbacks.noise_scale.ema_decay=1"], "ema_decay=1 must be in [0, 1)"),
    (
        ["callbacks=all", "batch_size=30"],
        "callbacks.noise_scale.chunks=4: a per-device batch of 30 does not split into 4 "
        "chunks of 7",
    ),
    (
        ["callbacks=all", "batch_size=40", "ghost_batch_size=16"],
        "callbacks.noise_scale.chunks=4: a per-device batch of 40 does not split into ghost "
        "batches of 16",
    ),
    (["optim.optimizer=rmsprop"], "optim.optimizer=rmsprop: use sgd, lars, adamw, lamb"),
    (["+optim.options.alpha=0.9"], "optim.options.alpha: optim.optimizer=sgd has no such option"),
    (
        ["+optim.options.momentum=0.5"],
        "optim.options.momentum=0.5: lbtrain passes momentum itself; set optim.momentum instead",
    ),
    (["+optim.options.lr=0.5"], "optim.options.lr=0.5: lbtrain passes lr itself; set optim.lr"),
    (["report.order=abc"], "report.order=abc: must be an integer or null"),
    (["report=5"], "report=5: must be {label: <text or null>, order: <int or null>}"),
    (
        ["optim.optimizer=adamw", "lr_scaling=linear"],
        "lr_scaling=linear: has no defined rule for optim.optimizer=adamw; use none, sqrt",
    ),
    (
        ["optim.optimizer=lamb", "lr_scaling=linear"],
        "lr_scaling=linear: has no defined rule for optim.optimizer=lamb; use none, sqrt",
    ),
    (
        ["optim.optimizer=adamw", "lr_scaling=sqrt", "batch_size=1024"],
        "lr_scaling=sqrt: with optim.optimizer=adamw scales 1 - beta by batch_size / optim.base",
    ),
    (["optim.adam_rule=sqrt"], "optim.adam_rule=sqrt: use null, sde, halflife"),
    (
        ["optim.adam_rule=halflife"],
        "optim.adam_rule=halflife: optim.optimizer=sgd has no Adam moments; use null, or one of "
        "adamw, lamb",
    ),
    (
        ["optim.optimizer=adamw", "optim.adam_rule=sde"],
        "optim.adam_rule=sde: Malladi et al.'s rule scales the lr by sqrt(batch_size / optim.bas",
    ),
    (
        ["optim.optimizer=lamb", "optim.adam_rule=sde", "lr_scaling=sqrt", "batch_size=1024"],
        "optim.adam_rule=sde: with optim.optimizer=lamb scales 1 - beta by batch_size / optim.ba",
    ),
    (
        ["optim.fixed_timescale=true"],
        "optim.fixed_timescale=True: optim.optimizer=sgd does not shrink the weights by lr x wei",
    ),
    (
        ["optim.optimizer=adamw", "optim.fixed_timescale=true", "optim.weight_decay=0"],
        "optim.fixed_timescale=True: needs optim.weight_decay > 0 (no decay, no timescale)",
    ),
    (["optim.optimizer=lars", "optim.momentum=1.0"], "optim.momentum=1.0: must be in [0, 1)"),
    (["optim.optimizer=lars", "optim.momentum=-0.5"], "optim.momentum=-0.5: must be in [0, 1)"),
    (["optim.optimizer=lamb", "optim.betas=[0.9]"], "optim.betas=[0.9]: must be two values"),
    (["optim.max_grad_norm=0"], "optim.max_grad_norm=0: must be > 0 or null"),
    (["batch_augment=0"], "batch_augment=0: must be an integer >= 1"),
    (["batch_schedule=double"], "batch_schedule=double: use none, grow, warmup"),
    (
        ["batch_schedule=warmup"],
        "batch_schedule_points=[]: are what batch_schedule=warmup follows, and only it",
    ),
    (
        ["batch_schedule=warmup", "batch_schedule_points=[[0,64],[0,128]]"],
        "batch_schedule_points=[[0, 64], [0, 128]]: must be [[epoch, batch], ...] with increas",
    ),
    (
        ["batch_schedule=warmup", "batch_schedule_points=[[2,16]]"],
        "batch_schedule_points=[[2, 16]]: must be [[epoch, batch], ...] with increasing epochs",
    ),
    (
        ["branch.base_run=nowhere", "branch.step=5", "branch.samples=64"],
        "branch.base_run=nowhere: no lbtrain run there (no config.yaml)",
    ),
    (
        ["batch_schedule=warmup", "batch_schedule_points=[[40,64]]"],
        "batch_schedule_points: [40, 64] must start within the run's 30 epochs with a batch",
    ),
    (
        ["optim.optimizer=adamw", "optim.adam_rule=halflife", "batch_schedule=grow"],
        "optim.adam_rule=halflife: follows one batch; under batch_schedule=grow the batch",
    ),
    (
        [
            "experiment=mnist1d_cbs_branch",
            "branch.base_run=b",
            "branch.step=5",
            "branch.samples=null",
        ],
        "branch.samples=None: must be a positive number of training samples",
    ),  # fmt: skip
    (
        ["experiment=mnist1d_cbs_branch", "branch.step=5"],
        "branch.base_run=None: a branch (branch.step, branch.samples) starts from a base run",
    ),
    (
        ["branch.base_run=nowhere", "branch.step=0", "branch.samples=64"],
        "branch.step=0: must be the optimizer step of a checkpoint the base run saved",
    ),
    (
        ["batch_schedule=grow", "batch_schedule_cap=10000", "data.num_samples=2000"],
        "batch_schedule=grow: the batch grows to 3200 at epoch 25, more than the 1600 training",
    ),
    (
        [
            "batch_schedule=grow",
            "batch_size=48",
            "batch_schedule_cap=1000",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=3",
        ],
        "batch_schedule=grow: the batch grows to 1000 at epoch 25, which does not divide across",
    ),  # fmt: skip
    (
        ["batch_schedule=grow", "trainer.accumulate_grad_batches=2"],
        "batch_schedule=grow: needs real batches changing between epochs",
    ),
    (["batch_schedule=grow", "optim.milestones=[15.5]"], "milestones [15.5] must be whole epochs"),
    (
        ["batch_schedule=grow", "data=imagenet", "data.data_dir=/nonexistent"],
        "data.data_dir=/nonexistent: ImageNet not found",
    ),
    (["batch_augment=4"], "batch_augment=4: the copies would be identical without augmentation"),
    (["data=mnist", "batch_augment=2"], "batch_augment=2: data=mnist has no batch augmentation"),
    (["data=mnist", "+data.augment=true"], "data.augment: data=mnist has no such option"),
    (["callbacks=all", "callbacks.sharpness.every_n_step=5"], "every_n_step=5: no such key"),
    # ARPACK's traceback at the first measurement ("Starting vector is zero"), mid-run, before
    (
        ["callbacks=all", "callbacks.sharpness.num_samples=0"],
        "callbacks.sharpness: num_samples=0 must be >= 1",
    ),
    (
        ["callbacks=all", "callbacks.sharpness.bn_mode=test"],
        "callbacks.sharpness: bn_mode='test' is not one of train, eval",
    ),
    (
        ["callbacks=all", "callbacks.batch_sharpness.every_n_steps=0"],
        "callbacks.batch_sharpness: every_n_steps=0 must be >= 1",
    ),
    (
        ["callbacks=all", "callbacks.noise_scale.pool_last=0"],
        "callbacks.noise_scale: pool_last=0 must be in (0, 1]",
    ),
    (
        ["callbacks=all", "callbacks.sharpness.krylov_dim=1"],
        "callbacks.sharpness: krylov_dim=1 must be >= 2",
    ),
    (["callbacks=all", "callbacks.sharpness.tol=-1"], "callbacks.sharpness: tol=-1 must be >= 0"),
    (["threads=0"], "threads=0: must be auto or an int >= 1"),
    # a sweep is checked whole, before any job runs: one bad point refuses it, naming the point
    (
        ["-m", "batch_size=32,0", "seed=0,1"],
        "batch_size=0: must be a positive integer (in the sweep's point batch_size=0 seed=0)",
    ),
    (  # the stretch makes B=48's milestones fractional: refused before B=32 trains
        [
            "-m",
            "batch_schedule=grow",
            "regime=adapted",
            "batch_size=32,48",
            "optim.milestones=[1,3]",
        ],
        "batch_schedule=grow: the milestones [1.5, 4.5] must be whole epochs (the batch changes "
        "between epochs); use integer optim.milestones and regime stretch (in the sweep's point "
        "batch_size=48)",
    ),  # fmt: skip
    (
        ["-m", "optim.lr=0.1,fast", "hydra/launcher=joblib"],
        "optim.lr: Value 'fast' of type 'str' could not be converted to Float (in the sweep's "
        "point optim.lr=fast)",
    ),
]


def assert_one_line_and_nothing_trained(code: int, stderr: str, message: str, root) -> None:
    assert code == 2, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("lbtrain: error:")]
    assert len(errors) == 1 and message in errors[0], stderr[-2000:]
    assert "Traceback" not in stderr
    assert not [p for p in root.glob("logs/**/*") if p.is_file()]  # not even Hydra's .hydra/


@pytest.mark.parametrize(("overrides", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_fails_before_training_with_one_line(
    cli_in_process, tmp_path, overrides, message
):
    result = cli_in_process(*overrides)
    assert_one_line_and_nothing_trained(result.returncode, result.stderr, message, tmp_path)


def test_a_bad_value_in_a_fresh_interpreter_prints_no_traceback(cli, tmp_path):
    """The same path as a user's shell: a new process, exit code 2, one line."""
    result = cli("data=cifar10", "data.data_dir=/nonexistent")
    message = "data.data_dir=/nonexistent: CIFAR-10 not found (missing cifar-10-batches-py/)"
    assert_one_line_and_nothing_trained(result.returncode, result.stderr, message, tmp_path)


def results_under(root) -> dict:
    """A run's results; not Hydra's record of the latest command (.hydra/, *.log), which
    Hydra rewrites in a run dir it is pointed at before lbtrain starts."""
    files = (p for p in root.rglob("*") if p.is_file() and p.suffix != ".log")
    return {p: p.read_bytes() for p in files if ".hydra" not in p.parts}


def test_foreign_or_broken_checkpoints_are_one_line_and_leave_the_run_alone(
    cli_in_process, tmp_path
):
    tiny = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", "logger=csv")
    first = cli_in_process(*tiny, "model=mlp", "hydra.run.dir=logs/earlier")
    assert first.returncode == 0, first.stderr[-2000:]
    earlier = tmp_path / "logs" / "earlier"
    ckpt = earlier / "checkpoints" / "last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    before = results_under(earlier)
    everything = {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()}
    # the run's own record of its command, also where the refused command ran in its dir
    trained = "; it was trained with: trainer.max_epochs=1 trainer.limit_train_batches=2 " \
              "logger=csv model=mlp"  # fmt: skip
    cases = [
        ((f"ckpt_path={truncated}",), f"ckpt_path={truncated}: not a readable lbtrain checkpoint"),
        ((f"ckpt_path={ckpt}",), f"ckpt_path={ckpt}: holds another model (model.0.weight"),
        ((f"ckpt_path={ckpt}",), trained),
        ((f"ckpt_path={ckpt}", "hydra.run.dir=logs/earlier"), trained),
    ]
    for overrides, message in cases:  # the default model (cnn1d) from mlp's checkpoint
        result = cli_in_process(*tiny, *overrides)
        assert_one_line_and_nothing_trained(
            result.returncode, result.stderr, message, tmp_path / "logs" / "runs"
        )
    assert results_under(earlier) == before
    assert {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()} == everything


def test_truncated_mnist1d_cache_is_one_line(cli_in_process, tmp_path):
    from lbtrain.data.mnist1d import MNIST1DDataModule

    data = tmp_path / "data"
    cache = MNIST1DDataModule(str(data), batch_size=32).path
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"PK\x03\x04 truncated")
    result = cli_in_process(f"paths.data_dir={data}")
    message = f"data.data_dir={data}: the MNIST-1D cache {cache.name} is unreadable"
    assert_one_line_and_nothing_trained(result.returncode, result.stderr, message, tmp_path)


def test_a_model_that_cannot_take_the_data_names_both(cli_in_process, tmp_path, cifar10_dir,
                                                      skip_cifar_md5):  # fmt: skip
    result = cli_in_process("data=cifar10", f"data.data_dir={cifar10_dir}", "batch_size=8")
    message = "model=cnn1d cannot be built for data=cifar10 (samples of shape (3, 32, 32)"
    assert_one_line_and_nothing_trained(
        result.returncode, result.stderr, message, tmp_path / "logs"
    )


def test_a_measurement_the_data_cannot_give_is_one_line(cli_in_process, tmp_path, imagenet_dir):
    """Sharpness needs the first n training samples in memory: ImageNet is refused before
    anything is built or trained."""
    sharpness = "+callbacks.sharpness._target_=lbtrain.measure.sharpness_callback.Sharpness"
    result = cli_in_process("data=imagenet", f"data.data_dir={imagenet_dir}", sharpness)
    message = "callbacks.sharpness: ImageNetDataModule offers no measurement set"
    assert_one_line_and_nothing_trained(result.returncode, result.stderr, message, tmp_path)


def test_a_string_where_a_group_belongs_names_the_key_and_the_file(cli_in_process, tmp_path):
    """`logger: csv` in a user's experiment file (a group picked as if it were a value)."""
    (tmp_path / "my_conf" / "experiment").mkdir(parents=True)
    (tmp_path / "my_conf" / "experiment" / "slip.yaml").write_text(
        "# @package _global_\nlogger: csv\n"
    )
    result = cli_in_process("hydra.searchpath=[file://my_conf]", "experiment=slip")
    message = ("logger=csv (set in my_conf/experiment/slip.yaml): must be a mapping of logger "
               "settings; to pick the logger config 'csv', write `- override /logger: csv` in "
               "that file's defaults list")  # fmt: skip
    assert_one_line_and_nothing_trained(result.returncode, result.stderr, message, tmp_path)


def test_only_a_refusal_that_names_its_key_becomes_one_line():
    """Lower layers refuse a value with a ValueError that starts with its key: one line. Any
    other ValueError while building is a bug, and keeps its traceback."""
    from lbtrain.errors import ConfigError
    from lbtrain.train.fit import refusals_as_config_errors

    refusal = pytest.raises(ConfigError, match=r"^model\.depth=7 is not a CIFAR ResNet depth")
    with refusal, refusals_as_config_errors():
        raise ValueError("model.depth=7 is not a CIFAR ResNet depth")
    with pytest.raises(ValueError, match="not enough values") as bug, refusals_as_config_errors():
        raise ValueError("not enough values to unpack (expected 2, got 1)")
    assert not isinstance(bug.value, ConfigError)


def test_a_model_with_its_own_syncbatchnorm_and_ghost_batches_is_one_line():
    """validate refuses ghost_batch_size with trainer.sync_batchnorm; a model that brings its
    own SyncBatchNorm is refused as it is converted, in one line naming the key."""
    from torch import nn

    from lbtrain.errors import ConfigError
    from lbtrain.train.fit import refusals_as_config_errors
    from lbtrain.train.gbn import convert_to_ghost_batchnorm

    line = r"^ghost_batch_size=8: ghost batch norm cannot be combined with sync_batchnorm: 1 is"
    with pytest.raises(ConfigError, match=line), refusals_as_config_errors():
        convert_to_ghost_batchnorm(nn.Sequential(nn.Linear(4, 4), nn.SyncBatchNorm(4)), 8)
