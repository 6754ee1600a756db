"""Plain SDS towards the target prompt, the editing baseline: the source render and prompt are not
used, so nothing but the starting point keeps the asset's identity.

g = w(t) (eps_hat^s(x_t, t; y_tgt) - eps), exactly `sds3d.guidance.sds.SDS.gradient`.

Reference: "DreamFusion: Text-to-3D using 2D Diffusion", Poole, Jain, Barron, Mildenhall, 2022,
arXiv:2209.14988.
"""

from __future__ import annotations

from dataclasses import dataclass

from sds3d.guidance.priors.prior import DiffusionPrior
from sds3d.guidance.schedules import Scheduled
from sds3d.guidance.sds import SDS, SDSConfig
from .base import EditConfig, EditScore


@dataclass
class EditSDSConfig(EditConfig):
    # diffusers form, generation's SDS default for the embedded prior; as an editor it smears the source's details
    # ("a red mug" -> "a blue mug": Chamfer to the source 0.031 after 200 steps, against PDS's 0.018)
    guidance_scale: Scheduled = 20.0
    weighting: str = "sds"


class EditSDS(EditScore):
    name = "sds"
    needs_source = False
    unet_evals = 2
    config_class = EditSDSConfig

    def __init__(self, prior: DiffusionPrior, config: EditSDSConfig | None = None, total_steps: int = 1000):
        super().__init__(prior, config, total_steps)
        c = self.config
        self.sds = SDS(prior, SDSConfig(guidance_scale=c.guidance_scale, weighting=c.weighting,
                                        timesteps=c.timesteps), total_steps)

    def gradient(self, y, y_src, t, noise, target, source, uncond, step):  # shapes: EditScore.gradient
        return self.sds.gradient(y, t, noise[0], target, uncond, step)
