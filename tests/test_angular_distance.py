"""`angular_distance` = angle(w_t, w_0) over the weights that feed a BatchNorm, every step."""

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from test_weight_distance import RecordWeights, fit
from torch import nn

from lbtrain.measure.angular_distance import AngularDistance, batchnorm_fed_weights
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


@pytest.mark.parametrize("per_layer", [False, True])
@pytest.mark.parametrize("angle", [1e-4, 0.3, 2.5])
def test_angular_distance_is_accurate_from_tiny_to_large_angles_in_float32(angle, per_layer):
    """At 1e-4 rad, cos is 1 - 5e-9: 1.0 in float32, so acos(u . v) would give 0."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1000, 4, bias=False), nn.BatchNorm1d(4))
    callback = AngularDistance(flush_every_n_steps=100, per_layer=per_layer)
    pl_module = SimpleNamespace(model=model, named_parameters=lambda: [
        ("model.0.weight", model[0].weight), ("model.1.weight", model[1].weight)])  # fmt: skip
    trainer = SimpleNamespace(datamodule=SimpleNamespace(input_shape=(1000,)))
    callback.start(trainer, pl_module)
    w0 = model[0].weight.detach().flatten().double()
    across = torch.randn_like(w0)
    across -= (across @ w0) / (w0 @ w0) * w0  # orthogonal to w_0, as long as w_0, then
    across *= w0.norm() / across.norm()  # w_t = 3 (cos(a) w_0 + sin(a) across): a from w_0
    w = 3 * (math.cos(angle) * w0 + math.sin(angle) * across)
    with torch.no_grad():
        model[0].weight.copy_(w.view_as(model[0].weight).float())
        measured = callback.finish(callback.measure(pl_module))
    assert measured.tolist() == pytest.approx([angle] * (2 if per_layer else 1), rel=1e-3)


def test_the_measurements_of_a_step_reach_the_loggers_as_one_row(tmp_path, data_dir):
    """Weight and angular distance at step t: one CSV row (and one W&B `log` call), not two."""
    fit(tmp_path, data_dir, "trainer.max_epochs=1")
    log = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    rows = log.dropna(subset=["weight_distance"])
    assert len(rows) == 5 and rows["angular_distance"].notna().all()
    assert log["angular_distance"].notna().sum() == 5
