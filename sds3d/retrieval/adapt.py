"""Prior adaptation on retrieved assets: a short LoRA fine-tune of the 2D prior on multi-view renders of
the assets, so that its density is spread across viewpoints rather than piled on the front view
(ReDream's "lightweight adaptation", against the Janus problem).

Data. Each asset (placed by `sds3d.retrieval.library.load_asset`: front +x, largest extent 1) is
rendered over white from `views_per_asset` random orbit cameras drawn as the micro-world's training
images were (`sds3d.world.dataset.sample_views`: elevation -10..60 with 15% overhead 60..80, any
azimuth, distance 2.2..2.8, field of view 35..45), at `render_resolution` and reduced to the
prior's image space by `prior.encode_images`. Captions are view-dependent: the asset's caption with
its view bin's words (`sds3d.views`: "a red mug, back view") with probability `view_caption_prob`,
else the caption alone. A camera-conditioned prior is given each view's camera instead of words.

Training. A PEFT LoRA (rank r, alpha = r, B = 0 at the start, on `to_q`, `to_k`, `to_v`, `to_out.0` of
every attention block, as VSD's estimator in `sds3d.guidance.lora`) on a copy of the prior's UNet,
`steps` AdamW steps on the denoising loss mean((UNet(alpha y + sigma eps, t, c) - target)^2),
t ~ U{0..T-1}, target by the prior's prediction type. The LoRA is then merged into a clean copy of
the UNet (W + B A), so the adapted prior is an ordinary prior of the same class: another LoRA (VSD's)
can sit on it, and the original prior is untouched.

Cache. The LoRA weights are stored under `cache_dir/<key>.pt` (with `<key>.json`: the cost), the key
a sha256 of the assets' file contents and yaws and captions (as a set: order does not matter), the
prior's identity (a digest of its UNet weights and noise schedule) and these settings; a second call
with the same assets loads them and trains nothing.

Reference: "Retrieval-Augmented Score Distillation for Text-to-3D Generation", Seo et al. 2024,
arXiv:2402.02972; "LoRA: Low-Rank Adaptation of Large Language Models", Hu et al. 2021, arXiv:2106.09685.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sds3d.guidance.lora import LORA_TARGETS
from sds3d.guidance.priors.prior import TextEmbedding
from sds3d.guidance.priors.stable_diffusion import DiffusersUNetPrior
from sds3d.guidance.vsd import lora_target
from sds3d.views import VIEW_WORDS, view_bins

FORMAT_VERSION = 1
ADAPTER = "retrieval"


@dataclass
class AdaptationConfig:
    steps: int = 200  # AdamW steps
    rank: int = 8  # LoRA rank r (alpha = r)
    lr: float = 1e-3  # AdamW learning rate of the LoRA
    weight_decay: float = 0.0  # AdamW weight decay of the LoRA
    batch_size: int = 16  # renders per step
    views_per_asset: int = 48  # renders per asset, drawn once
    view_caption_prob: float = 0.75  # captions naming the view (text-only priors); the rest plain
    render_resolution: int = 64  # renders are reduced to the prior's resolution by `encode_images`
    seed: int = 0  # the renders' views and captions, and the training's noise


@dataclass(frozen=True)
class AdaptationAsset:
    """One retrieved asset as adaptation sees it: file, the turn about +z that fronts it, its caption."""

    path: Path
    yaw_degrees: float
    caption: str


def default_cache_dir() -> Path:
    """`$SDS3D_CACHE_DIR/adapted_priors`, else `~/.cache/sds3d/adapted_priors`."""
    from sds3d.cache import cache_dir

    return cache_dir("adapted_priors")


def prior_identity(prior: DiffusersUNetPrior) -> str:
    """sha256 of the prior's UNet weights (names, shapes, bytes), prediction type and noise schedule;
    computed once per prior object (a few seconds for Stable Diffusion's 3.4 GB)."""
    cached = getattr(prior, "_identity", None)
    if cached is not None:
        return cached
    digest = hashlib.sha256(f"{type(prior).__name__}|{prior.prediction_type}".encode())
    digest.update(prior.alphas_cumprod.detach().cpu().numpy().tobytes())
    for name, tensor in prior.unet.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    prior._identity = digest.hexdigest()
    return prior._identity


def adaptation_key(assets: list[AdaptationAsset], prior: DiffusersUNetPrior, config: AdaptationConfig) -> str:
    """The cache key (hex sha256) of adapting `prior` on this set of assets with `config`, at the
    prior's precision (a LoRA trained under bf16 autocast differs from one trained in fp32)."""
    from .library import content_hash

    items = sorted((content_hash(a.path), float(a.yaw_degrees), a.caption) for a in assets)
    payload = json.dumps({"version": FORMAT_VERSION, "assets": items, "prior": prior_identity(prior),
                          "autocast": str(prior.autocast_dtype), "config": asdict(config)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


# ----- training data ----------------------------------------------------------------------------

@dataclass
class ViewSet:
    """Renders of assets in the prior's space: y [N, c, h, w], captions [N] (view words per
    `view_caption_prob`), their view bins [N], and for camera-conditioned priors features [N, D]."""

    y: torch.Tensor
    captions: list[str]
    bins: list[str]
    camera: torch.Tensor | None

    def text(self, prior: DiffusersUNetPrior, index) -> TextEmbedding:
        rows = index.tolist() if torch.is_tensor(index) else list(index)
        text = prior.encode_prompts([self.captions[i] for i in rows])
        return text.with_camera(None if self.camera is None else self.camera[rows].to(prior.device))


@torch.no_grad()
def render_view_set(prior: DiffusersUNetPrior, assets: list[AdaptationAsset], views_per_asset: int,
                    render_resolution: int = 64, view_caption_prob: float = 0.75, seed: int = 0) -> ViewSet:
    """`views_per_asset` random views of every asset (see the module docstring), deterministic for `seed`."""
    from sds3d.cameras import cameras_features, orbit_cameras
    from sds3d.world.dataset import sample_views

    from .library import load_asset

    rng = np.random.default_rng(seed)
    ys, captions, bins, cameras_seen = [], [], [], []
    for asset in assets:
        representation = load_asset(asset.path, asset.yaw_degrees)
        views = sample_views(views_per_asset, rng)
        cameras = orbit_cameras(torch.as_tensor(views["elevation"], dtype=torch.float32),
                                torch.as_tensor(views["azimuth"], dtype=torch.float32),
                                torch.as_tensor(views["radius"], dtype=torch.float32),
                                torch.as_tensor(views["fovy"], dtype=torch.float32), render_resolution)
        rgb = representation.render(cameras, torch.ones(3)).rgb.permute(0, 3, 1, 2).clamp(0, 1).float()
        ys.append(prior.encode_images(rgb.to(prior.device)).float())
        names = view_bins(cameras.elevation, cameras.azimuth)
        bins.extend(names)
        for name in names:
            with_view = not prior.camera_conditioned and rng.random() < view_caption_prob
            captions.append(f"{asset.caption}, {VIEW_WORDS[name]}" if with_view else asset.caption)
        if prior.camera_conditioned:
            cameras_seen.append(cameras_features(cameras))
    camera = torch.cat(cameras_seen) if cameras_seen else None
    return ViewSet(torch.cat(ys), captions, bins, camera)


def denoising_loss(prior: DiffusersUNetPrior, views: ViewSet, unet=None, timesteps: int = 8, seed: int = 0,
                   batch_size: int = 32) -> torch.Tensor:
    """Per view [N]: the denoising loss averaged over `timesteps` evenly spaced t (fixed noise for
    `seed`), so two UNets are compared on exactly the same problems."""
    generator = torch.Generator().manual_seed(seed)
    T = prior.num_train_timesteps
    grid = torch.linspace(0, T - 1, timesteps + 2)[1:-1].round().long()
    totals = torch.zeros(len(views.y))
    with torch.no_grad():
        for t_value in grid.tolist():
            noise = torch.randn(views.y.shape, generator=generator)
            for start in range(0, len(views.y), batch_size):
                rows = torch.arange(start, min(start + batch_size, len(views.y)))
                y, eps = views.y[rows].to(prior.device), noise[rows].to(prior.device)
                t = torch.full((len(rows),), t_value, dtype=torch.long, device=prior.device)
                out = prior.unet_output(prior.add_noise(y, eps, t), t, views.text(prior, rows), unet=unet)
                alpha, sigma = prior.alpha_sigma(t, y.ndim)
                target = lora_target(prior.prediction_type, y, eps, alpha, sigma)
                totals[rows] += ((out - target) ** 2).flatten(1).mean(1).cpu()
    return totals / len(grid)


# ----- the LoRA -----------------------------------------------------------------------------------

def add_lora(unet, rank: int):
    """`unet` with a PEFT LoRA adapter named "retrieval" (B = 0: the UNet's function unchanged), active."""
    from peft import LoraConfig

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(LORA_TARGETS),
                                    init_lora_weights=True), adapter_name=ADAPTER)
    unet.set_adapter(ADAPTER)
    return unet


def lora_state(unet) -> dict[str, torch.Tensor]:
    """The adapter's weights by parameter name (float32 copies)."""
    return {name: param.detach().float().clone() for name, param in unet.named_parameters() if f".{ADAPTER}." in name}


def merged_unet(base_unet, state: dict[str, torch.Tensor], rank: int):
    """A deep copy of `base_unet` with the LoRA `state` merged into its weights: W + (alpha / r) B A
    for every adapted Linear (alpha = r), no adapter left behind."""
    unet = copy.deepcopy(base_unet)
    modules = dict(unet.named_modules())
    with torch.no_grad():
        for name in [key for key in state if key.endswith(f".lora_A.{ADAPTER}.weight")]:
            layer = name[: -len(f".lora_A.{ADAPTER}.weight")]
            down, up = state[name], state[f"{layer}.lora_B.{ADAPTER}.weight"]
            target = modules[layer]
            target.weight.add_((up @ down).to(target.weight.dtype))  # alpha / r = 1
    return unet.eval().requires_grad_(False)


def with_unet(prior: DiffusersUNetPrior, unet, adaptation: dict) -> DiffusersUNetPrior:
    """A shallow copy of `prior` (same class, text encoder and prompt cache) whose UNet is `unet`;
    `adaptation` (the record) is kept on it as `prior.adaptation`."""
    adapted = copy.copy(prior)
    adapted.unet = unet
    adapted.adaptation = adaptation
    adapted._identity = None
    return adapted


def train_lora(prior: DiffusersUNetPrior, views: ViewSet, config: AdaptationConfig, progress: bool = True):
    """`config.steps` AdamW steps of a fresh LoRA on a copy of the prior's UNet -> (state, losses)."""
    unet = add_lora(copy.deepcopy(prior.unet), config.rank)
    params = [param for name, param in unet.named_parameters() if f".{ADAPTER}." in name]
    for param in params:
        param.data = param.data.float()
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    losses = []
    for _ in tqdm(range(config.steps), desc="adapting the prior", disable=not progress, dynamic_ncols=True):
        rows = torch.randint(0, len(views.y), (min(config.batch_size, len(views.y)),), generator=generator)
        y = views.y[rows].to(prior.device)
        t = torch.randint(0, prior.num_train_timesteps, (len(rows),), generator=generator).to(prior.device)
        noise = torch.randn(y.shape, generator=generator).to(prior.device)
        out = prior.unet_output(prior.add_noise(y, noise, t), t, views.text(prior, rows), unet=unet)
        alpha, sigma = prior.alpha_sigma(t, y.ndim)
        loss = F.mse_loss(out, lora_target(prior.prediction_type, y, noise, alpha, sigma))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return lora_state(unet), losses


def adapt_prior(prior: DiffusersUNetPrior, assets: list[AdaptationAsset], config: AdaptationConfig | None = None,
                cache_dir: str | Path | None = None, progress: bool = True) -> tuple[DiffusersUNetPrior, dict]:
    """(the prior adapted on `assets`, a record of what it cost). The record: key, cached (True when
    the LoRA came from the cache), seconds (this call), train_seconds and steps (of the training,
    this call's or the cached one's), final_loss, assets. The given prior is not modified."""
    if not isinstance(prior, DiffusersUNetPrior):
        raise TypeError(f"prior adaptation needs a diffusers UNet prior; got {type(prior).__name__}")
    if not assets:
        raise ValueError("prior adaptation needs at least one asset")
    config = config or AdaptationConfig()
    started = time.perf_counter()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = adaptation_key(assets, prior, config)
    weights, meta = cache / f"{key}.pt", cache / f"{key}.json"
    if weights.is_file() and meta.is_file():
        state = torch.load(weights, map_location="cpu", weights_only=True)
        trained = json.loads(meta.read_text())
        cached = True
    else:
        views = render_view_set(prior, assets, config.views_per_asset, config.render_resolution,
                                config.view_caption_prob, config.seed)
        state, losses = train_lora(prior, views, config, progress)
        trained = {"train_seconds": round(time.perf_counter() - started, 2), "steps": config.steps,
                   "final_loss": round(float(np.mean(losses[-20:])), 5) if losses else None,
                   "views": len(views.y)}
        cache.mkdir(parents=True, exist_ok=True)
        for path, write in ((weights, lambda tmp: torch.save(state, tmp)),
                            (meta, lambda tmp: tmp.write_text(json.dumps(trained, indent=2)))):
            tmp = path.with_name(path.name + ".tmp")
            write(tmp)
            os.replace(tmp, path)
        cached = False
    unet = merged_unet(prior.unet, {k: v.to(prior.device) for k, v in state.items()}, config.rank)
    record = {"key": key, "cached": cached, "seconds": round(time.perf_counter() - started, 2), **trained,
              "config": asdict(config),
              "assets": [{"path": str(a.path), "yaw_degrees": a.yaw_degrees, "caption": a.caption} for a in assets]}
    return with_unet(prior, unet, record), record


__all__ = ["AdaptationConfig", "AdaptationAsset", "default_cache_dir", "prior_identity", "adaptation_key", "ViewSet",
           "render_view_set", "denoising_loss", "add_lora", "lora_state", "merged_unet", "with_unet", "train_lora",
           "adapt_prior"]
