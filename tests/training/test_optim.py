import pytest
import torch
from torch import nn

from cnnkit.config import ScheduleConfig, TrainConfig
from cnnkit.training.optim import Lookahead, build_optimizer
from cnnkit.training.schedules import build_schedule


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


def test_normalisation_layers_get_their_own_lr_and_weight_decay() -> None:
    net = small_net()
    net(torch.zeros(1, 3, 5, 5))
    config = TrainConfig(data="cifar10", out="x", optimizer="sgd", weight_decay=1e-3, norm_lr_scale=64.0)
    optimizer = build_optimizer(config, net, lr=0.1)
    other, norm = optimizer.param_groups
    assert {id(p) for p in norm["params"]} == {id(net[1].weight), id(net[1].bias)}
    assert (norm["lr"], norm["weight_decay"]) == pytest.approx((6.4, 1e-3 / 64))
    assert (other["lr"], other["weight_decay"]) == pytest.approx((0.1, 1e-3))
    assert optimizer.defaults["nesterov"]
    # One-cycle and linear schedules keep the groups' ratio.
    for name in ("onecycle", "linear"):
        optimizer = build_optimizer(config, net, lr=0.1)
        schedule = build_schedule(ScheduleConfig(name=name, warmup_epochs=1), optimizer, lr=0.1, epochs=4,
                                  steps_per_epoch=5)
        for _ in range(7):
            optimizer.step()
            schedule.after_batch()
        assert optimizer.param_groups[1]["lr"] == pytest.approx(64 * optimizer.param_groups[0]["lr"])
    plain = build_optimizer(TrainConfig(data="cifar10", out="x"), net, lr=0.1)
    assert len(plain.param_groups) == 1


def test_the_linear_schedule_rises_from_a_fifth_then_falls_to_the_floor() -> None:
    weight = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    schedule = build_schedule(ScheduleConfig(name="linear", warmup_epochs=2), optimizer, lr=1.0, epochs=10,
                              steps_per_epoch=5)
    lrs = []
    for _ in range(50):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.after_batch()
    assert lrs[0] == pytest.approx(0.2) and lrs[10] == pytest.approx(1.0) and max(lrs) == lrs[10]
    assert lrs[30] == pytest.approx(0.5) and lrs[-1] == pytest.approx(1 / 40)


def test_lookahead_pulls_the_weights_back_toward_the_slow_copy() -> None:
    net = nn.Linear(2, 1, bias=False)
    nn.init.zeros_(net.weight)
    lookahead = Lookahead(net, total_steps=4, every=2, max_decay=0.5)
    lookahead.begin_epoch(step=2)  # halfway: decay 0.5 * (4/4)^3 at the next pull, step 4
    with torch.no_grad():
        net.weight.add_(1.0)
    lookahead.after_batch()  # step 3: no pull
    assert net.weight.eq(1.0).all()
    with torch.no_grad():
        net.weight.add_(1.0)
    lookahead.after_batch()  # step 4: slow = 0 + (2 - 0) * 0.5, and the model jumps back to it
    torch.testing.assert_close(net.weight, torch.ones(1, 2))
    lookahead.end_epoch()  # already pulled at this step: nothing more
    torch.testing.assert_close(net.weight, torch.ones(1, 2))
