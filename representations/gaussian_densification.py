"""Adaptive density control for 3D Gaussians, driven by gsplat's pure-PyTorch DefaultStrategy.

Works with every rasterizer backend because each returns gsplat's `meta` keys (`means2d` with a
retained gradient, `radii` [C, N, 2], `width`, `height`, `n_cameras`). Steps and thresholds are
gsplat's (grow by 2D gradient, split large / duplicate small, prune transparent or huge ones).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import torch


UNSCHEDULED_RUN_STEPS = 250  # the run length a schedule left None is for outside a run: the Gaussians' default
# in the registry (importing it here would be a cycle; tests/test_run_defaults.py keeps the two equal)


@dataclass
class DensificationConfig:
    enabled: bool = True
    # the three refine_* steps: None follows the run's length (`for_steps`): every steps / 5 steps from
    # steps / 5 to 4 steps / 5 (250 steps: 50, 200, 50); numbers are taken as they are
    refine_start_iter: int | None = None
    refine_stop_iter: int | None = None
    refine_every: int | None = None
    reset_every: int = 100_000  # opacity reset (clamped to 2 prune_opa) every N steps before refine_stop_iter;
    # effectively off by default
    grow_grad2d: float = 0.0002
    grow_scale3d: float = 0.01
    prune_opa: float = 0.005
    prune_scale3d: float = 0.1
    scene_scale: float = 1.0
    max_gaussians: int = 60_000  # growth stops beyond this count

    def for_steps(self, steps: int) -> DensificationConfig:
        """This schedule for a run of `steps` steps: the refine_* steps left None filled in (600 steps:
        every 120 steps from 120 to 480)."""
        every = max(1, round(steps / 5))
        start, stop = (self.refine_start_iter, self.refine_stop_iter)
        return replace(self, refine_every=every if self.refine_every is None else self.refine_every,
                       refine_start_iter=every if start is None else start,
                       refine_stop_iter=round(4 * steps / 5) if stop is None else stop)


class GaussianDensifier:
    def __init__(self, config: DensificationConfig):
        config = config.for_steps(UNSCHEDULED_RUN_STEPS)  # a no-op for a run's (`generate.run_section`)
        self.config = config
        self.strategy = None
        self.state: dict = {}
        if config.enabled:
            from gsplat.strategy import DefaultStrategy

            self.strategy = DefaultStrategy(
                prune_opa=config.prune_opa, grow_grad2d=config.grow_grad2d, grow_scale3d=config.grow_scale3d,
                prune_scale3d=config.prune_scale3d, refine_start_iter=config.refine_start_iter,
                refine_stop_iter=config.refine_stop_iter, refine_every=config.refine_every,
                reset_every=config.reset_every, verbose=False)
            self.state = self.strategy.initialize_state(scene_scale=config.scene_scale)

    def before_backward(self, params, step: int, meta: dict | None) -> None:
        if self.strategy is not None and meta is not None and torch.is_grad_enabled():
            self.strategy.step_pre_backward(params, {}, self.state, step, meta)

    def after_step(self, params, optimizers, step: int, meta: dict | None) -> None:
        if self.strategy is None or meta is None or meta["means2d"].grad is None:
            return
        count = params["means"].shape[0]
        if count >= self.config.max_gaussians:
            self.strategy.refine_stop_iter = min(self.strategy.refine_stop_iter, step)
        self.strategy.step_post_backward(params, optimizers, self.state, step, meta, packed=False)
        if 0 < step < self.config.refine_stop_iter and step % self.config.reset_every == 0:
            self.reset_opacities(params, optimizers)
        if count and not params["means"].shape[0]:
            warnings.warn(f"step {step}: pruning removed every Gaussian (all opacities < prune_opa = "
                          f"{self.config.prune_opa}); the asset is empty from here on", RuntimeWarning, stacklevel=2)

    def reset_opacities(self, params, optimizers) -> None:
        """Clamp every opacity to 2 prune_opa and clear its Adam moments, as 3DGS's periodic reset does.
        Done here because gsplat's DefaultStrategy (up to 1.5.3 at least) never runs its own: its test
        `step % reset_every == 0 & step > 0` parses as a chained comparison that is always false
        (nerfstudio-project/gsplat#776). Clamping twice is the same as once, so a fixed gsplat is harmless."""
        from gsplat.strategy.ops import reset_opa

        reset_opa(params=params, optimizers=optimizers, state=self.state, value=2.0 * self.config.prune_opa)

    def state_dict(self) -> dict:
        return {key: value.clone() if torch.is_tensor(value) else value for key, value in self.state.items()}

    def load_state_dict(self, state: dict) -> None:
        self.state.update(state)
