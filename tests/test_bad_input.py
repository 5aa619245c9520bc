"""Bad input: one line naming the key, the value and what is allowed; exit 2; nothing trained."""

import pytest

CASES = [
    (["model=resnet9000"], "model=resnet9000 is not a known model; choose one of:"),
    (["data=imagenet22k"], "data=imagenet22k is not a known data; choose one of: mnist1d"),
    (["logger=mlflow"], "logger=mlflow is not a known logger; choose one of: csv, default"),
    (["-m", "model=cnn1d,nope"], "model=nope is not a known model"),
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
