"""ReDream: retrieval-augmented score distillation.

ReDream retrieves 3D assets close to the prompt and uses them twice: they initialise the variational
distribution q(theta), i.e. the VSD particles (particle i starts from retrieved asset i mod K), and
the 2D prior is briefly fine-tuned on multi-view renders of them so its density is spread evenly
over viewpoints (less front-view bias, fewer multi-face assets). The objective is then VSD's,

    g = w(t) (eps_adapted^s(x_t, t, y_view) - eps_phi(x_t, t, y, c)),  w = 1 - abar_t,

with eps_adapted the adapted prior and eps_phi VSD's LoRA estimator, which sits on the adapted
prior's UNet and so starts from it (at s = 1 a fresh estimator gives g = 0 exactly, as in VSD).

Retrieval and adaptation happen before the guidance exists (`sds3d.retrieval.run.prepare_retrieval`
returns the adapted prior and the initial particles); this class is VSD that refuses a prior that
was not adapted, so a run named "redream" is always the paper's method and never plain VSD.

Reference: "Retrieval-Augmented Score Distillation for Text-to-3D Generation", Seo et al. 2024,
arXiv:2402.02972; "ProlificDreamer: High-Fidelity and Diverse Text-to-3D Generation
with Variational Score Distillation", Wang et al. 2023, arXiv:2305.16213.
"""

from __future__ import annotations

from dataclasses import dataclass

from .priors.stable_diffusion import DiffusersUNetPrior
from .vsd import VSD, VSDConfig


@dataclass
class ReDreamConfig(VSDConfig):
    """VSD's settings (guidance scale 7.5, LoRA estimator, t schedule); `particles` = n particles,
    each initialised from one retrieved asset (the top n when n <= K, cycling otherwise)."""


class ReDream(VSD):
    name = "redream"

    def __init__(self, prior: DiffusersUNetPrior, config: ReDreamConfig | None = None, total_steps: int = 1000):
        if getattr(prior, "adaptation", None) is None:
            raise ValueError("ReDream scores with the prior adapted on the retrieved assets; pass the prior that "
                             "sds3d.retrieval.run.prepare_retrieval returns (sds3d generate --retrieve LIB)")
        super().__init__(prior, config or ReDreamConfig(), total_steps)


__all__ = ["ReDreamConfig", "ReDream"]
