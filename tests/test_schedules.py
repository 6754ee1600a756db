import math

import pytest
import torch

from sds3d.guidance.schedules import TimestepConfig, TimestepSchedule, scheduled_value


def test_scheduled_value():
    assert scheduled_value(0.5, 10) == 0.5
    s = [100, 0.98, 0.5, 200]
    assert scheduled_value(s, 0) == 0.98 and scheduled_value(s, 150) == pytest.approx(0.74)
    assert scheduled_value(s, 10_000) == 0.5
    with pytest.raises(ValueError):
        scheduled_value([1, 2, 3], 0)


@pytest.mark.parametrize("kind", ["sqrt_anneal", "linear_anneal", "dreamtime"])
def test_deterministic_schedules_decrease_from_max_to_min(kind):
    sched = TimestepSchedule(TimestepConfig(kind=kind, min_step_percent=0.02, max_step_percent=0.98), 1000, 500)
    ts = [sched.sample(i, 1)[0].item() for i in range(501)]
    assert all(a >= b for a, b in zip(ts, ts[1:]))
    assert ts[0] >= 970 and ts[-1] <= 30
    if kind == "sqrt_anneal":
        assert ts[125] == int((0.98 - 0.96 * math.sqrt(0.25)) * 1000)


def test_dreamtime_spends_steps_in_proportion_to_its_weight():
    config = TimestepConfig(kind="dreamtime", min_step_percent=0.0, max_step_percent=1.0)
    sched = TimestepSchedule(config, 1000, 10_000)
    ts = torch.tensor([sched.sample(i, 1)[0].item() for i in range(10_001)], dtype=torch.float64)
    grid = torch.arange(1000, dtype=torch.float64)
    w = torch.ones_like(grid)
    w = torch.where(grid > 800, torch.exp(-((grid - 800) ** 2) / 100**2), w)
    w = torch.where(grid < 400, torch.exp(-((grid - 400) ** 2) / 150**2), w)
    p = w / w.sum()
    for lo, hi in [(400, 800), (800, 1000), (0, 400), (500, 600)]:
        steps = ((ts >= lo) & (ts < hi)).double().mean().item()
        assert steps == pytest.approx(p[lo:hi].sum().item(), abs=0.01)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown timestep schedule"):
        TimestepSchedule(TimestepConfig(kind="cosine"), 1000, 10)
