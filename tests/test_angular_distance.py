"""`angular_distance` = angle(w_t, w_0) over the weights that feed a BatchNorm, every step."""

import math

import pandas as pd
import pytest
import torch
from test_weight_distance import RecordWeights, fit
from torch import nn

from lbtrain.callbacks.angular_distance import batchnorm_fed_weights
from lbtrain.models import create_model


def test_the_weights_that_feed_a_batchnorm_are_found_by_tracing_the_model():
    resnet = create_model("resnet20", 10, (3, 32, 32))
    convs = {m.weight for m in resnet.modules() if isinstance(m, nn.Conv2d)}
    fed = batchnorm_fed_weights(resnet, torch.zeros(2, 3, 32, 32))
    assert fed == convs  # every conv is followed by a BatchNorm; the classifier is not
    mlp = create_model("mlp", 10, (1, 40), hidden=[16, 8])
    linears = [m.weight for m in mlp.modules() if isinstance(m, nn.Linear)]
    assert batchnorm_fed_weights(mlp, torch.zeros(2, 1, 40)) == set(linears[:2])


def test_angular_distance_equals_an_independent_computation_at_every_step(tmp_path, data_dir):
    record = RecordWeights()
    overrides = ("trainer.max_epochs=2", "ghost_batch_size=8",
                 "callbacks.angular_distance.flush_every_n_steps=3")  # fmt: skip
    trainer = fit(tmp_path, data_dir, *overrides, extra_callbacks=[record])
    df = pd.read_csv(tmp_path / "csv" / "metrics.csv").dropna(subset=["angular_distance"])
    series = df.set_index("step")["angular_distance"]
    assert list(series.index) == list(range(1, 11))
    # cnn1d: parameters 0, 3 and 6 are the three conv weights, each followed by a BatchNorm
    names = [n for n, p in trainer.lightning_module.named_parameters() if p.requires_grad]
    fed = [i for i, n in enumerate(names) if n in ("model.0.weight", "model.3.weight",
                                                    "model.6.weight")]  # fmt: skip
    assert len(fed) == 3
    w0 = torch.cat([record.snapshots[0][i].flatten() for i in fed]).double()
    for step, value in series.items():
        w = torch.cat([record.snapshots[step][i].flatten() for i in fed]).double()
        expected = math.acos(float(w @ w0 / (w.norm() * w0.norm())))
        assert value == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert series.iloc[-1] > series.iloc[0] > 0


def test_the_measurements_of_a_step_reach_the_loggers_as_one_row(tmp_path, data_dir):
    """Weight and angular distance at step t: one CSV row (and one W&B `log` call), not two."""
    fit(tmp_path, data_dir, "trainer.max_epochs=1")
    log = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    rows = log.dropna(subset=["weight_distance"])
    assert len(rows) == 5 and rows["angular_distance"].notna().all()
    assert log["angular_distance"].notna().sum() == 5
