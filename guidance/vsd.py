"""Variational Score Distillation (ProlificDreamer).

g = w(t) (eps_pre^s(x_t, t, y_view) - eps_phi(x_t, t, y, c)),  w = 1 - abar_t,  s = 7.5 (diffusers),

with x_t = alpha_t y + sigma_t eps. eps_pre is the frozen prior (CFG over the view-dependent
prompt); eps_phi is the same UNet with a LoRA adapter and a camera embedding (`lora.UNetLoRA`),
conditioned on the view-independent prompt and the flattened camera-to-world matrix c [B, 16].
Both are converted to eps through `prior.to_eps`, so eps- and v-prediction priors work alike.
With `camera_guidance_scale` s_c != 1, eps_phi = eps_phi(c=0) + s_c (eps_phi(c) - eps_phi(c=0))
(threestudio); s_c = 1 is the official camera-conditioned estimator.

Every `__call__` also trains the estimator (`lora_steps` AdamW steps, lr 1e-4) on the detached
latents: L_phi = mean((UNet_phi(alpha y + sigma eps', t', y, c~) - target)^2) with t' ~ U{0..T-1},
fresh eps', c~ = 0 with probability `camera_dropout`, target = eps' (eps-prediction),
alpha eps' - sigma y (v-prediction) or y ("sample"). L_phi never reaches the render, and the returned
VSD loss (target trick on y) never reaches the LoRA.

The view-independent prompt is the view-dependent text with its ", <view> view" suffix removed
(`view_independent_texts`), encoded by `prior.encode_prompts` (cached).

Particles (the paper's n particles): `particles` = n representations share this one LoRA. Nothing here depends on which
particle produced the render; the generation loop (`sds3d.generate`) visits every particle once per
step, each with its own random views, and each visit is one guidance call (one LoRA step on that
particle's render).

By default the LoRA sits on the prior's own UNet (no copy; it is active only while eps_phi is
evaluated or trained). `separate_unet=True` deep-copies the UNet first: one more UNet in memory
(3.4 GB for SD 2.1 in fp32), in exchange for leaving the prior's modules untouched.

Reference: "ProlificDreamer: High-Fidelity and Diverse Text-to-3D Generation with Variational Score
Distillation", Wang, Lu, Wang, Bao, Li, Su, Zhu, 2023, arXiv:2305.16213.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from sds3d.views import VIEW_WORDS
from .base import Guidance, GuidanceOutput, clip_gradient, images_from_render, target_trick_loss
from .lora import UNetLoRA, camera_condition
from .priors.prior import TextEmbedding, cfg_combine, guided_noise
from .schedules import Scheduled, TimestepConfig, TimestepSchedule, scheduled_value
from .sds import sds_weight
from .priors.stable_diffusion import DiffusersUNetPrior


def lora_target(prediction_type: str, y: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor,
                sigma: torch.Tensor) -> torch.Tensor:
    """What a UNet of this prediction type should output for x_t = alpha y + sigma noise."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return alpha * noise - sigma * y
    if prediction_type == "sample":
        return y
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def view_independent_texts(texts: list[str], views: list[str]) -> list[str]:
    """Strip the ", <view> view" suffix that view-dependent prompts append."""
    out = []
    for text, view in zip(texts, views):
        suffix = f", {VIEW_WORDS[view]}" if view in VIEW_WORDS else None
        out.append(text[: -len(suffix)] if suffix and text.endswith(suffix) else text)
    return out


@dataclass
class VSDConfig:
    guidance_scale: Scheduled = 7.5  # diffusers convention, as the official code
    weighting: str = "sds"  # w = 1 - abar_t
    # U[0.02, 0.98], then U[0.02, 0.5] from step 5000 (threestudio `max_step_percent: (5000, 0.98, 0.5, 5001)`)
    timesteps: TimestepConfig = field(default_factory=lambda: TimestepConfig(max_step_percent=(5000, 0.98, 0.5, 5001)))
    grad_clip: Scheduled | None = None
    lora_rank: int = 4
    lora_lr: float = 1e-4
    lora_weight_decay: float = 0.01  # torch AdamW default, as the official code
    lora_steps: int = 1  # estimator steps per guidance call (K)
    camera_dropout: float = 0.1  # probability of c~ = 0 in L_phi
    camera_guidance_scale: float = 1.0  # s_c; 1 = camera-conditioned estimator, one UNet evaluation
    separate_unet: bool = False  # deep-copy the UNet for the estimator instead of sharing it
    particles: int = 1  # representations trained together on this LoRA (official default 1; more = diversity)


class VSD(Guidance):
    name = "vsd"

    def __init__(self, prior: DiffusersUNetPrior, config: VSDConfig | None = None, total_steps: int = 1000):
        if not isinstance(prior, DiffusersUNetPrior):
            raise TypeError(f"VSD needs a diffusers UNet prior (LoRA on its UNet); got {type(prior).__name__}")
        super().__init__(prior, total_steps)
        self.config = config or VSDConfig()
        if self.config.particles < 1:
            raise ValueError(f"VSD needs at least one particle, got particles={self.config.particles}")
        sds_weight(self.config.weighting, torch.ones(1), torch.ones(1))  # validate early
        self.schedule = TimestepSchedule(self.config.timesteps, prior.num_train_timesteps, total_steps)
        unet = copy.deepcopy(prior.unet) if self.config.separate_unet else prior.unet
        self.lora = UNetLoRA(unet, rank=self.config.lora_rank)
        self.optimizer = torch.optim.AdamW(self.lora.parameters(), lr=self.config.lora_lr,
                                           weight_decay=self.config.lora_weight_decay)

    def unet_evals_per_step(self) -> int:
        """Per particle: CFG prior (2, or 1 at s = 1) + estimator (1, or 2 with camera CFG) +
        `lora_steps` training evaluations (each a forward and a backward); times the particle count."""
        pre = 1 if self.config.guidance_scale == 1 else 2
        phi = 1 if self.config.camera_guidance_scale == 1 else 2
        return self.config.particles * (pre + phi + self.config.lora_steps)

    # -- the two networks --------------------------------------------------------------------

    def prior_noise(self, x_t: torch.Tensor, t: torch.Tensor, cond: TextEmbedding, uncond: TextEmbedding,
                    scale: float) -> torch.Tensor:
        """eps_pre^s; at s = 1 the unconditional evaluation is skipped (it would not contribute)."""
        if scale == 1:
            return self.prior.predict_noise(x_t, t, cond)
        return guided_noise(self.prior, x_t, t, cond, uncond, scale)[0]

    @torch.no_grad()
    def estimator_noise(self, x_t: torch.Tensor, t: torch.Tensor, text: TextEmbedding,
                        camera: torch.Tensor) -> torch.Tensor:
        """eps_phi(x_t, t, text, c) [B, ...] float32 (camera [B, 16])."""
        scale = self.config.camera_guidance_scale
        if scale == 1:
            with self.lora.active(camera):
                out = self.prior.unet_output(x_t, t, text, unet=self.lora.unet)
            return self.prior.to_eps(out, x_t, t)
        with self.lora.active(torch.cat([camera, torch.zeros_like(camera)])):
            out = self.prior.unet_output(torch.cat([x_t, x_t]), torch.cat([t, t]), TextEmbedding.cat([text, text]),
                                         unet=self.lora.unet)
        eps_cam, eps_free = self.prior.to_eps(out, torch.cat([x_t, x_t]), torch.cat([t, t])).chunk(2)
        return cfg_combine(eps_cam, eps_free, scale)

    # -- the VSD gradient ----------------------------------------------------------------------

    def gradient(self, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, cond: TextEmbedding,
                 uncond: TextEmbedding, text: TextEmbedding, camera: torch.Tensor, step: int) -> torch.Tensor:
        """g [B, c, h, w] for latents y (not differentiated), timesteps t [B], noise eps, the
        view-dependent cond/uncond of the prior, and the estimator's text and camera [B, 16]."""
        x_t = self.prior.add_noise(y.detach(), noise, t)
        eps_pre = self.prior_noise(x_t, t, cond, uncond, scheduled_value(self.config.guidance_scale, step))
        eps_phi = self.estimator_noise(x_t, t, text, camera.to(x_t.device))
        alpha, sigma = self.prior.alpha_sigma(t, y.ndim)
        grad = sds_weight(self.config.weighting, alpha, sigma) * (eps_pre - eps_phi)
        clip = None if self.config.grad_clip is None else scheduled_value(self.config.grad_clip, step)
        return clip_gradient(grad, clip)

    # -- the estimator's loss L_phi ----------------------------------------------------------

    def lora_loss(self, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, text: TextEmbedding,
                  camera: torch.Tensor) -> torch.Tensor:
        """L_phi (scalar, differentiable in the LoRA and camera MLP only) for latents y (detached here),
        timesteps t [B], noise eps' and camera condition [B, 16] (zero rows = dropped)."""
        y = y.detach()
        x_t = self.prior.add_noise(y, noise, t)
        with self.lora.active(camera.to(x_t.device)):
            out = self.prior.unet_output(x_t, t, text, unet=self.lora.unet)
        alpha, sigma = self.prior.alpha_sigma(t, y.ndim)
        return F.mse_loss(out, lora_target(self.prior.prediction_type, y, noise, alpha, sigma))

    def lora_step(self, y: torch.Tensor, text: TextEmbedding, camera: torch.Tensor,
                  generator: torch.Generator | None = None) -> float:
        """One AdamW step on L_phi with t' ~ U{0..T-1}, fresh eps' and camera dropout; returns L_phi."""
        batch = y.shape[0]
        t = torch.randint(0, self.prior.num_train_timesteps, (batch,), generator=generator).to(y.device)
        noise = torch.randn(y.shape, generator=generator).to(y.device, y.dtype)
        keep = (torch.rand(batch, generator=generator) >= self.config.camera_dropout).float()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = self.lora_loss(y, t, noise, text, camera * keep[:, None].to(camera))
            loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    # -- one guidance call -------------------------------------------------------------------

    def estimator_text(self, prompts) -> TextEmbedding:
        """Embeddings [B] of the view-independent prompts of a PromptBatch."""
        return self.prior.encode_prompts(view_independent_texts(prompts.texts, prompts.views)).with_camera(
            prompts.cond.camera)

    def __call__(self, render, prompts, cameras, step: int, generator: torch.Generator | None = None) -> GuidanceOutput:
        if cameras is None:
            raise ValueError("VSD conditions its estimator on the cameras; pass the Cameras of the render")
        y = self.prior.encode_images(images_from_render(render.rgb))
        t = self.schedule.sample(step, y.shape[0], generator).to(y.device)
        noise = torch.randn(y.shape, generator=generator).to(y.device, y.dtype)
        text = self.estimator_text(prompts)
        camera = camera_condition(cameras).to(y.device)
        grad = self.gradient(y, t, noise, prompts.cond, prompts.uncond, text, camera, step)
        loss = target_trick_loss(y, grad)
        losses = [self.lora_step(y.detach(), text, camera, generator) for _ in range(self.config.lora_steps)]
        return GuidanceOutput(loss=loss, logs={"t": t.float().mean().item(), "grad_norm": grad.norm().item(),
                                               "loss_lora": sum(losses) / len(losses)})

    # -- resuming ------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """LoRA weights, camera MLP and the AdamW state (copies)."""
        return {**self.lora.state_dict(), "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        self.lora.load_state_dict(state)
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))

    def remove(self) -> None:
        """Take the LoRA adapter off the UNet (after a run, when the prior is reused)."""
        self.lora.remove()
