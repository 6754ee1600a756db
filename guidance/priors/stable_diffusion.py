"""Stable Diffusion 1.x / 2.x as a `DiffusionPrior` (latent space, loaded through diffusers).

    prior = StableDiffusionPrior.from_pretrained("/models/stable-diffusion-2-1-base")  # local folder
    prior = StableDiffusionPrior.from_pretrained("stabilityai/stable-diffusion-2-1-base")  # hub id, cached
    prior = StableDiffusionPrior.from_pipeline(pipe)  # an already built StableDiffusionPipeline

The components are loaded one by one from the diffusers layout (`unet/`, `vae/`, `text_encoder/`,
`tokenizer/`, `scheduler/`; `model_index.json` is not needed), all frozen (`requires_grad_(False)`,
`eval()`): fp16 on CUDA, fp32 on the CPU. The noise schedule is taken from the scheduler config
through `DDPMScheduler.from_config` (SD ships a PNDM config with the same betas), so
`alphas_cumprod` is the training schedule whatever sampler the folder names.

Prior space `y`: VAE latents, `vae.config.scaling_factor * E(2 rgb - 1)` at `resolution`
(`unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)`, 512 for SD 1.x and
2.1-base, 768 for 2.x-768). The encoder returns the *mean* of the VAE posterior, not a sample:
threestudio draws `latent_dist.sample()`, but without a generator that makes the guidance
gradient non-deterministic for little benefit (the SD VAE was trained with a tiny KL weight, so
its posterior std is small next to the latents). Gradients flow through the frozen encoder to
the render.

`predict_noise` returns float32 eps whatever the UNet's prediction type: "epsilon" as is,
"v_prediction" (SD 2.x 768) converted with eps = alpha_t v + sigma_t x_t, "sample" with
eps = (x_t - alpha_t x0) / sigma_t. Derivation of the v case: x_t = a y + s e and v = a e - s y give
a v + s x_t = a^2 e - a s y + a s y + s^2 e = (a^2 + s^2) e = e, since a^2 + s^2 = 1.

No weights can be downloaded on the machines this project is developed on: a hub id that is not in
the local Hugging Face cache fails with a one-line `OSError` that says so and asks for a local folder.
"""

from __future__ import annotations

from abc import abstractmethod

import contextlib
import os
import threading
from pathlib import Path

import torch
import torch.nn.functional as F

from .batch_threads import batch_chunks, run_in_slices
from .prior import DiffusionPrior, TextEmbedding, expand_embedding, resolve_device
from .prior_type import HUB_ID, is_local

SD_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


# ----------------------------------------------------------------------------------------------
# helpers shared with the DeepFloyd IF prior
# ----------------------------------------------------------------------------------------------

def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """None -> fp16 on CUDA, fp32 elsewhere; strings like "float16" / "fp16" are accepted."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        names = {"fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32", "bf16": "bfloat16"}
        dtype = getattr(torch, names.get(dtype, dtype))
    return dtype


def resolve_source(name_or_path: str | os.PathLike, subfolders: tuple[str, ...], kind: str) -> tuple[str, bool]:
    """-> (source string for from_pretrained, is_local). Raises FileNotFoundError for a local path
    that does not exist or is not a pipeline folder in the diffusers layout."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    looks_local = isinstance(name_or_path, os.PathLike) or is_local(text) or not HUB_ID.match(text)
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"prior path {path} is a file; expected a {kind} pipeline folder in the "
                                    f"diffusers layout ({', '.join(s + '/' for s in subfolders)}); for a single-file "
                                    f"checkpoint build the pipeline with diffusers' `from_single_file` and pass it "
                                    f"to `from_pipeline`")
        missing = [s for s in subfolders if not (path / s).is_dir()]
        if missing:
            raise FileNotFoundError(f"prior path {path} is not a {kind} pipeline folder in the diffusers layout: "
                                    f"missing {', '.join(m + '/' for m in missing)}")
        return str(path), True
    if looks_local:
        raise FileNotFoundError(f"prior path {path} does not exist (expected a {kind} pipeline folder in the "
                                f"diffusers layout, or a Hugging Face hub id such as 'org/name')")
    return text, False


def hub_error(name: str, kind: str, exc: BaseException) -> OSError:
    """The one-line error for a hub id whose files are neither cached nor downloadable."""
    reason = " ".join(str(exc).split())
    if len(reason) > 160:
        reason = reason[:157] + "..."
    return OSError(f"cannot load the {kind} prior {name!r}: it is not a local folder and its files are not in the "
                   f"local Hugging Face cache ({type(exc).__name__}: {reason}); model weights cannot be downloaded "
                   f"here, so download the pipeline elsewhere and pass its local folder (diffusers layout) instead")


def place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Move to device, and cast only if needed (diffusers warns on every dtype `.to`)."""
    module = module.to(device)
    if next(module.parameters()).dtype != dtype:
        module = module.to(dtype)
    return module


def diffusers_load_kwargs() -> dict:
    """Without accelerate, diffusers warns on every load unless low_cpu_mem_usage is off."""
    import importlib.util

    return {} if importlib.util.find_spec("accelerate") is not None else {"low_cpu_mem_usage": False}


def freeze(*modules: torch.nn.Module) -> None:
    for module in modules:
        if module is not None:
            module.requires_grad_(False)
            module.eval()


def model_output_to_eps(output: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
                        prediction_type: str) -> torch.Tensor:
    """Convert a UNet output to an eps-prediction (alpha, sigma broadcastable to x_t)."""
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return alpha * output + sigma * x_t
    if prediction_type == "sample":
        return (x_t - alpha * output) / sigma
    raise ValueError(f"unsupported prediction_type {prediction_type!r}; expected one of {', '.join(PREDICTION_TYPES)}")


def alphas_cumprod_from_scheduler_config(config) -> tuple[torch.Tensor, str]:
    """(alphas_cumprod [T] float32, prediction_type) of a scheduler config of any diffusers class."""
    from diffusers import DDPMScheduler

    config = dict(config)
    config.pop("_class_name", None)
    scheduler = DDPMScheduler.from_config(config)
    prediction_type = str(config.get("prediction_type", "epsilon"))
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unsupported prediction_type {prediction_type!r} in the scheduler config")
    return scheduler.alphas_cumprod.detach().clone().float(), prediction_type


def clip_sample_range_from_scheduler_config(config) -> float | None:
    """The range r to which the config's DDIM sampler clips predicted x0 ([-r, r], diffusers
    `clip_sample` / `clip_sample_range`, with diffusers' defaults for missing keys); None when it does
    not clip (or thresholds dynamically instead, as DeepFloyd IF)."""
    from diffusers import DDPMScheduler

    config = dict(config)
    config.pop("_class_name", None)
    full = DDPMScheduler.from_config(config).config
    if not full.clip_sample or full.thresholding:
        return None
    return float(full.clip_sample_range)


class PromptCache:
    """Per-prompt cache of [L, C] float32 states: `get(prompts, encode_fn)` calls `encode_fn` once on
    the prompts not seen yet (deduplicated) and stacks the cached rows."""

    def __init__(self):
        self._hidden: dict[str, torch.Tensor] = {}
        self._mask: dict[str, torch.Tensor | None] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._hidden)

    def clear(self) -> None:
        with self._lock:
            self._hidden.clear()
            self._mask.clear()

    def get(self, prompts: list[str], encode_fn) -> TextEmbedding:
        with self._lock:
            missing = list(dict.fromkeys(p for p in prompts if p not in self._hidden))
            if missing:
                hidden, mask = encode_fn(missing)
                for i, prompt in enumerate(missing):
                    self._hidden[prompt] = hidden[i].detach().float()
                    self._mask[prompt] = None if mask is None else mask[i].detach()
            hidden = torch.stack([self._hidden[p] for p in prompts])
            masks = [self._mask[p] for p in prompts]
        mask = None if any(m is None for m in masks) else torch.stack(masks)
        return TextEmbedding(hidden, mask)


def hub_kwargs(is_local: bool, local_files_only: bool | None, revision: str | None) -> dict:
    """from_pretrained keywords: a local folder never touches the network; for a hub id
    `local_files_only=None` leaves the decision to HF_HUB_OFFLINE."""
    if is_local:
        return {"local_files_only": True}
    kwargs = {} if local_files_only is None else {"local_files_only": bool(local_files_only)}
    if revision is not None:
        kwargs["revision"] = revision
    return kwargs


def resize_rgb(rgb: torch.Tensor, resolution: int) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 3, res, res] (bilinear, no antialias, as threestudio), float32, differentiable."""
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"expected rgb [B, 3, H, W], got {tuple(rgb.shape)}")
    rgb = rgb.float()
    if tuple(rgb.shape[-2:]) == (resolution, resolution):
        return rgb
    return F.interpolate(rgb, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=False)


def _as_prompt_list(prompts) -> list[str]:
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    if not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a string or a list of strings")
    return prompts


def _timesteps(t: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(t, device=device).long().reshape(-1)
    if t.numel() == 1 and batch != 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"got {t.numel()} timesteps for a batch of {batch}")
    return t


_float32_scopes = threading.local()  # per thread: the autocast-off scopes the output layer has entered
_hooks_lock = threading.Lock()


def _autocast_on() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _output_to_float32(module, args):
    """Forward pre-hook: under autocast, run this layer in float32 (its scope is closed by `_close_scope`)."""
    stack = _float32_scopes.__dict__.setdefault("stack", [])
    if not _autocast_on():
        stack.append(None)
        return None
    scope = torch.autocast("cpu", enabled=False)
    scope.__enter__()
    stack.append(scope)
    return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def _close_scope(module, args, output):
    scope = _float32_scopes.stack.pop()
    if scope is not None:
        scope.__exit__(None, None, None)


@contextlib.contextmanager
def _cpu_autocast(unet, dtype: torch.dtype):
    """CPU autocast to `dtype` around a UNet call, with its output convolution (`conv_out`) kept in
    float32: rounding eps to bf16 costs the SDS gradient more precision than the rest of the UNet does,
    since classifier-free guidance multiplies the small difference of two eps by its scale. The layer's
    hooks are installed once and keep their state per thread, so threads may share the UNet."""
    output_layer = getattr(unet, "conv_out", None)
    with _hooks_lock:
        if output_layer is not None and not getattr(output_layer, "_sds3d_float32_hooks", False):
            output_layer.register_forward_pre_hook(_output_to_float32)
            output_layer.register_forward_hook(_close_scope)
            output_layer._sds3d_float32_hooks = True
    with torch.autocast("cpu", dtype=dtype):
        yield


# ----------------------------------------------------------------------------------------------
# the part every diffusers UNet prior shares (noise prediction, schedule, prompt cache)
# ----------------------------------------------------------------------------------------------

class DiffusersUNetPrior(DiffusionPrior):
    """A frozen diffusers `UNet2DConditionModel` with a DDPM schedule and a cached text encoder.
    Subclasses provide the image space (`encode_images` / `decode_latents`) and `_encode_uncached`."""

    kind = "diffusers"
    autocast_dtype: torch.dtype | None = None  # the UNet's CPU autocast dtype (`set_precision`); None runs it as loaded
    batch_threads: bool = True  # no-grad CPU calls: one slice of the batch per intra-op thread (`batch_threads.py`)

    def _setup(self, unet, text_encoder, tokenizer, scheduler_config, device, dtype) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.unet = place(unet, self.device, self.dtype)
        self.text_encoder = place(text_encoder, self.device, self.dtype)
        self.tokenizer = tokenizer
        freeze(self.unet, self.text_encoder)
        abar, self.prediction_type = alphas_cumprod_from_scheduler_config(scheduler_config)
        self._alphas_cumprod = abar.to(self.device)
        self.scheduler_config = dict(scheduler_config)
        self.clip_sample_range = clip_sample_range_from_scheduler_config(scheduler_config)
        # channels of the prior space; a learned-variance UNet (IF) outputs twice as many
        self.latent_channels = int(self.unet.config.in_channels)
        self._prompts = PromptCache()

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self._alphas_cumprod

    def encode_prompts(self, prompts: list[str] | str) -> TextEmbedding:
        """Text-encoder hidden states [B, L, C] (float32, on `device`), cached per prompt."""
        return self._prompts.get(_as_prompt_list(prompts), self._encode_uncached).to(self.device)

    @abstractmethod
    def _encode_uncached(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Prompts -> (hidden [B, L, C], mask [B, L] or None); called once per new prompt."""

    def clear_prompt_cache(self) -> None:
        self._prompts.clear()

    def check_camera(self, text: TextEmbedding) -> None:
        """One-line ValueError when a camera-conditioned prior gets no cameras or a text-only one gets some."""
        if self.camera_conditioned and text.camera is None:
            raise ValueError(f"the {self.kind} prior is camera-conditioned and needs each view's camera "
                             "(pass orbit cameras; view words do not replace them)")
        if not self.camera_conditioned and text.camera is not None:
            raise ValueError(f"the {self.kind} prior takes no camera (a text-only prior such as embedded v1): "
                             "it is told the view by view words")

    def to_eps(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Convert a raw UNet output (this prior's prediction type) to eps; differentiable, so LoRA
        UNets (VSD) can reuse it."""
        alpha, sigma = self.alpha_sigma(_timesteps(t, x_t.shape[0], self.device), x_t.ndim)
        return model_output_to_eps(model_output, x_t, alpha, sigma, self.prediction_type)

    def set_precision(self, precision: str) -> None:
        """How the UNet runs on the CPU: "fp32" as loaded, "bf16" under bf16 autocast, "auto" bf16 where
        the CPU has native bf16 instructions (`sds3d.hardware.use_bf16`), else fp32. Outputs stay
        float32. A UNet not on the CPU (fp16 on CUDA) or not loaded in float32 keeps its dtype."""
        from sds3d.hardware import use_bf16

        bf16 = use_bf16(precision, "prior precision")
        on_cpu_fp32 = self.device.type == "cpu" and self.unet.dtype == torch.float32
        self.autocast_dtype = torch.bfloat16 if bf16 and on_cpu_fp32 else None

    def unet_output(self, x_t: torch.Tensor, t: torch.Tensor, text: TextEmbedding, unet=None,
                    **unet_kwargs) -> torch.Tensor:
        """Raw UNet output (float32, first `latent_channels` channels, i.e. without a learned
        variance), with gradients if enabled. `unet` may be another UNet with the same interface
        (e.g. a LoRA copy for VSD); `unet_kwargs` go to its forward. Without gradients on the CPU,
        the batch runs as one slice per intra-op thread, each on one core (`batch_threads`)."""
        unet = self.unet if unet is None else unet
        batch = x_t.shape[0]
        t = _timesteps(t, batch, self.device)
        text = expand_embedding(text, batch)
        self.check_camera(text)

        def forward(part: slice) -> torch.Tensor:
            kwargs = dict(unet_kwargs)
            if text.camera is not None:
                kwargs["camera"] = text.camera[part].to(self.device, unet.dtype)
            with contextlib.nullcontext() if self.autocast_dtype is None else _cpu_autocast(unet, self.autocast_dtype):
                out = unet(x_t[part].to(self.device, unet.dtype), t[part],
                           encoder_hidden_states=text.hidden[part].to(self.device, unet.dtype), **kwargs).sample
            return out[:, : self.latent_channels].float()

        split = self.batch_threads and self.device.type == "cpu" and not torch.is_grad_enabled() and not unet_kwargs
        return run_in_slices(forward, batch, batch_chunks(batch) if split else 1)

    @torch.no_grad()
    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, text: TextEmbedding) -> torch.Tensor:
        """eps [B, c, h, w] float32 for x_t at integer timesteps t [B] (a scalar t is broadcast; one
        text embedding is broadcast over the batch)."""
        x_t = x_t.to(self.device).float()
        out = self.unet_output(x_t, t, text)
        return self.to_eps(out, x_t, t)


# ----------------------------------------------------------------------------------------------
# Stable Diffusion
# ----------------------------------------------------------------------------------------------

class StableDiffusionPrior(DiffusersUNetPrior):
    """Frozen SD 1.x / 2.x (UNet, VAE, CLIP text encoder) behind the `DiffusionPrior` calls."""

    kind = "Stable Diffusion"

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler_config,
                 device: str | torch.device | None = "auto", dtype: torch.dtype | str | None = None):
        self._setup(unet, text_encoder, tokenizer, scheduler_config, device, dtype)
        self.vae = place(vae, self.device, self.dtype)
        freeze(self.vae)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = int(self.unet.config.sample_size) * self.vae_scale_factor
        self.scaling_factor = float(self.vae.config.scaling_factor)
        shift = getattr(self.vae.config, "shift_factor", None)
        self.shift_factor = 0.0 if shift is None else float(shift)
        self.max_length = int(tokenizer.model_max_length)
        if self.max_length > 10_000:  # tokenizer without a configured length ("very large integer")
            self.max_length = int(self.text_encoder.config.max_position_embeddings)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str | torch.device | None = "auto",
                        dtype: torch.dtype | str | None = None, local_files_only: bool | None = None,
                        revision: str | None = None) -> "StableDiffusionPrior":
        """Load from a local diffusers-layout folder or a hub id (the local HF cache is used; a
        download is attempted only when `local_files_only` is False or None and HF_HUB_OFFLINE is
        unset). Raises FileNotFoundError for a missing local path and a one-line OSError for a hub
        id that cannot be fetched."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        source, is_local = resolve_source(name_or_path, SD_SUBFOLDERS, cls.kind)
        device_ = resolve_device(device)
        dtype_ = resolve_dtype(dtype, device_)
        kwargs = hub_kwargs(is_local, local_files_only, revision)
        try:
            # The scheduler config first: a few hundred bytes, so a failing hub id fails fast.
            scheduler_config = DDPMScheduler.load_config(source, subfolder="scheduler", **kwargs)
            tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs)
            text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kwargs)
            dkw = dict(kwargs, torch_dtype=dtype_, **diffusers_load_kwargs())
            vae = AutoencoderKL.from_pretrained(source, subfolder="vae", **dkw)
            unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", **dkw)
        except (OSError, ValueError) as exc:
            if is_local:
                raise
            raise hub_error(source, cls.kind, exc) from exc
        return cls(unet, vae, text_encoder, tokenizer, scheduler_config, device=device_, dtype=dtype_)

    @classmethod
    def from_pipeline(cls, pipe, device: str | torch.device | None = None,
                      dtype: torch.dtype | str | None = None) -> "StableDiffusionPrior":
        """Wrap an already built `StableDiffusionPipeline` (its modules are frozen in place). By
        default keep the pipeline's device and dtype."""
        device = pipe.unet.device if device is None else device
        dtype = pipe.unet.dtype if dtype is None else dtype
        return cls(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config,
                   device=device, dtype=dtype)

    # -- DiffusionPrior -----------------------------------------------------------------------

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> tuple[torch.Tensor, None]:
        """CLIP `last_hidden_state` of the prompts padded to `max_length` (77), as StableDiffusionPipeline."""
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                                return_tensors="pt")
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):  # as StableDiffusionPipeline
            mask = tokens["attention_mask"].to(self.device)
        hidden = self.text_encoder(tokens["input_ids"].to(self.device), attention_mask=mask)[0]
        return hidden.float(), None

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb [B, 3, H, W] in [0, 1] -> latents [B, 4, res/8, res/8] float32, differentiable in rgb."""
        x = resize_rgb(rgb.to(self.device), self.resolution)
        x = (x * 2.0 - 1.0).to(self.dtype)
        posterior = self.vae.encode(x).latent_dist
        latents = (posterior.mean - self.shift_factor) * self.scaling_factor
        return latents.float()

    def decode_latents(self, y: torch.Tensor) -> torch.Tensor:
        """latents -> rgb [B, 3, res, res] in [0, 1] float32 (differentiable; wrap in no_grad for previews)."""
        z = (y.to(self.device) / self.scaling_factor + self.shift_factor).to(self.dtype)
        image = self.vae.decode(z).sample
        return (image.float() * 0.5 + 0.5).clamp(0.0, 1.0)

    def __repr__(self) -> str:
        side = self.unet.config.sample_size
        return (f"{type(self).__name__}(resolution={self.resolution}, latents={self.latent_channels}x{side}x{side}, "
                f"prediction={self.prediction_type}, device={self.device}, dtype={self.dtype})")
