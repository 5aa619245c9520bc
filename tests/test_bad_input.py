"""Bad input: one line naming the key, the value and what is allowed; exit 2; nothing trained."""

import pytest

CASES = [
    (["model=resnet9000"], "model=resnet9000: no such model config; choose one of: alexnet_bn,"),
    (["data=imagenet22k"], "data=imagenet22k: no such data config; choose one of: cifar10, "),
    (["logger=mlflow"], "logger=mlflow: no such logger config; choose one of: csv, default"),
    (["-m", "model=cnn1d,nope"], "model=nope: no such model config"),
    (["ghost_batch_size=64"], "ghost_batch_size=64 exceeds the per-device batch 32"),
    (
        ["ghost_batch_size=16", "trainer=ddp", "trainer.sync_batchnorm=true"],
        "trainer.sync_batchnorm=True: cannot be combined with ghost_batch_size",
    ),
    (
        ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=3"],
        "batch_size=32 is not divisible by the 3 devices",
    ),
    (["optim.gamma=[0.5,0.2,0.1]"], "optim.gamma=[0.5, 0.2, 0.1]: must be a factor in (0, 1], or"),
    # one factor in a list would decay once, at the first of the two milestones
    (["optim.gamma=[0.1]"], "optim.gamma=[0.1]: must be a factor in (0, 1], or a list of one such"),
    (["batchsize=64"], "batchsize=64: no such key in the config (check the spelling; a new key"),
    (["-m", "optim.lrr=0.1,0.2"], "optim.lrr=0.1: no such key in the config"),
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
]


@pytest.mark.parametrize(("overrides", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_fails_before_training_with_one_line(cli, tmp_path, overrides, message):
    result = cli(*overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("lbtrain: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("logs/**/summary.json"))
    assert not list(tmp_path.glob("logs/**/*.ckpt"))
