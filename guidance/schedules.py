"""Scheduled scalars and timestep schedules shared by every guidance variant.

A scheduled scalar is a number or threestudio's `[start_step, start_value, end_value, end_step]`,
linear in between and constant outside. Timestep schedules return integer DDPM steps in [0, T):
- "random":  t ~ U{floor(min% T), ..., floor(max% T)} per view (min%/max% may be scheduled);
- "sqrt_anneal" (HiFA): t% = max% - (max% - min%) sqrt(step / N), one t for the batch;
- "linear_anneal": t% = max% - (max% - min%) step / N;
- "dreamtime": the monotone schedule t(i) = argmin_t |sum_{t' > t} p(t') - i / N| with
  p proportional to W(t): 1 on [m2, m1], exp(-(t - m1)^2 / s1^2) above, exp(-(t - m2)^2 / s2^2)
  below, mapped into [min%, max%] as t% = min% + (max% - min%) t* / 1000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Scheduled = float | list | tuple


def scheduled_value(value: Scheduled, step: int) -> float:
    """A number, or [start_step, start_value, end_value, end_step] interpolated linearly."""
    if isinstance(value, (int, float)):
        return float(value)
    if len(value) != 4:
        raise ValueError(f"a schedule is [start_step, start_value, end_value, end_step], got {value!r}")
    start_step, start_value, end_value, end_step = value
    if end_step <= start_step:
        return float(end_value if step >= end_step else start_value)
    fraction = min(max((step - start_step) / (end_step - start_step), 0.0), 1.0)
    return float(start_value + (end_value - start_value) * fraction)


@dataclass
class TimestepConfig:
    kind: str = "random"  # random | sqrt_anneal | linear_anneal | dreamtime
    min_step_percent: Scheduled = 0.02
    max_step_percent: Scheduled = 0.98
    dreamtime_m1: float = 800.0
    dreamtime_m2: float = 400.0
    dreamtime_s1: float = 100.0
    dreamtime_s2: float = 150.0


KINDS = ("random", "sqrt_anneal", "linear_anneal", "dreamtime")


class TimestepSchedule:
    def __init__(self, config: TimestepConfig, num_train_timesteps: int, total_steps: int):
        if config.kind not in KINDS:
            raise ValueError(f"unknown timestep schedule {config.kind!r}; choose one of {', '.join(KINDS)}")
        self.config = config
        self.T = num_train_timesteps
        self.total_steps = max(int(total_steps), 1)
        self._dreamtime = self._dreamtime_table() if config.kind == "dreamtime" else None

    def bounds(self, step: int) -> tuple[int, int]:
        """Inclusive integer range [t_min, t_max] at this step."""
        lo = int(scheduled_value(self.config.min_step_percent, step) * self.T)
        hi = int(scheduled_value(self.config.max_step_percent, step) * self.T)
        return min(lo, hi), max(lo, hi)

    def sample(self, step: int, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[batch_size] int64 timesteps for this optimisation step."""
        kind = self.config.kind
        if kind == "random":
            lo, hi = self.bounds(step)
            return torch.randint(lo, hi + 1, (batch_size,), generator=generator)
        progress = min(step / self.total_steps, 1.0)
        lo, hi = (scheduled_value(v, step) for v in (self.config.min_step_percent, self.config.max_step_percent))
        if kind == "sqrt_anneal":
            percent = hi - (hi - lo) * math.sqrt(progress)
        elif kind == "linear_anneal":
            percent = hi - (hi - lo) * progress
        else:
            percent = lo + (hi - lo) * self._dreamtime[min(int(progress * (len(self._dreamtime) - 1)), len(self._dreamtime) - 1)] / 1000.0
        t = min(max(int(percent * self.T), 0), self.T - 1)
        return torch.full((batch_size,), t, dtype=torch.long)

    def _dreamtime_table(self, resolution: int = 1000) -> list[float]:
        """t*(i) for i = 0..resolution, on the 1000-step grid of the paper."""
        c = self.config
        ts = torch.arange(1000, dtype=torch.float64)
        weight = torch.ones_like(ts)
        weight = torch.where(ts > c.dreamtime_m1, torch.exp(-((ts - c.dreamtime_m1) ** 2) / c.dreamtime_s1**2), weight)
        weight = torch.where(ts < c.dreamtime_m2, torch.exp(-((ts - c.dreamtime_m2) ** 2) / c.dreamtime_s2**2), weight)
        p = weight / weight.sum()
        # mass strictly above t: sum_{t' > t} p(t')
        above = torch.flip(torch.cumsum(torch.flip(p, [0]), 0), [0]) - p
        table = []
        for i in range(resolution + 1):
            table.append(float(torch.argmin((above - i / resolution).abs())))
        return table
