"""DeepFloyd IF stage I as a `DiffusionPrior` (pixel space, 64x64, T5 text encoder).

    prior = DeepFloydIFPrior.from_pretrained("/models/IF-I-XL-v1.0")   # local diffusers folder
    prior = DeepFloydIFPrior.from_pipeline(if_pipe)                    # an IFPipeline object

DreamFusion distilled a 64x64 pixel-space prior (Imagen); IF stage I is the open counterpart
(threestudio's `deep-floyd-guidance`). The prior space is the image itself: y = 2 rgb - 1 at
`resolution` = `unet.config.sample_size` (64), so `encode_images` is a resize and an affine map
(differentiable, no encoder), `decode_latents` its inverse.

As in `IFPipeline`: prompts are lower-cased and stripped (the optional bs4/ftfy caption cleaning is
not applied), tokenized by T5 to 77 tokens (padding "max_length"), encoded by `T5EncoderModel` with
the attention mask; the UNet receives all 77 hidden states (the mask is returned in the
`TextEmbedding` for reference only). IF's UNet learns the variance: it outputs 2 x 3 channels, the
first 3 are eps (`DiffusersUNetPrior.unet_output` keeps the first `in_channels`). The schedule is
the scheduler config's ("squaredcos_cap_v2", 1000 steps) through `DDPMScheduler.from_config`.

Loading: the components `unet/`, `text_encoder/`, `tokenizer/`, `scheduler/` of the diffusers
layout (the safety checker, feature extractor and watermarker are not needed). fp16 on CUDA, fp32
on the CPU. The IF repositories ship the tokenizer as `spiece.model`, which needs the
`sentencepiece` package (or a `tokenizer.json`). Weights cannot be downloaded on the project's
machines; a hub id that is not cached fails with a one-line OSError.
"""

from __future__ import annotations

import os

import torch

from .prior import resolve_device
from .stable_diffusion import (DiffusersUNetPrior, diffusers_load_kwargs, hub_error, hub_kwargs, resize_rgb,
                               resolve_dtype, resolve_source)

IF_SUBFOLDERS = ("unet", "text_encoder", "tokenizer", "scheduler")
IF_MAX_LENGTH = 77


class DeepFloydIFPrior(DiffusersUNetPrior):
    """Frozen IF stage I (UNet with learned variance, T5 encoder) behind the `DiffusionPrior` calls."""

    kind = "DeepFloyd IF"

    def __init__(self, unet, text_encoder, tokenizer, scheduler_config,
                 device: str | torch.device | None = "auto", dtype: torch.dtype | str | None = None,
                 max_length: int = IF_MAX_LENGTH):
        self._setup(unet, text_encoder, tokenizer, scheduler_config, device, dtype)
        self.resolution = int(self.unet.config.sample_size)
        self.max_length = int(max_length)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str | torch.device | None = "auto",
                        dtype: torch.dtype | str | None = None, local_files_only: bool | None = None,
                        revision: str | None = None) -> "DeepFloydIFPrior":
        """Load from a local diffusers-layout folder or a (cached) hub id; errors as
        `StableDiffusionPrior.from_pretrained`."""
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, T5EncoderModel

        source, is_local = resolve_source(name_or_path, IF_SUBFOLDERS, cls.kind)
        device_ = resolve_device(device)
        dtype_ = resolve_dtype(dtype, device_)
        kwargs = hub_kwargs(is_local, local_files_only, revision)
        try:
            scheduler_config = DDPMScheduler.load_config(source, subfolder="scheduler", **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs)
            text_encoder = T5EncoderModel.from_pretrained(source, subfolder="text_encoder", **kwargs)
            unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype_,
                                                        **kwargs, **diffusers_load_kwargs())
        except (OSError, ValueError) as exc:
            if is_local:
                raise
            raise hub_error(source, cls.kind, exc) from exc
        return cls(unet, text_encoder, tokenizer, scheduler_config, device=device_, dtype=dtype_)

    @classmethod
    def from_pipeline(cls, pipe, device: str | torch.device | None = None,
                      dtype: torch.dtype | str | None = None) -> "DeepFloydIFPrior":
        """Wrap an already built `IFPipeline` (its modules are frozen in place)."""
        device = pipe.unet.device if device is None else device
        dtype = pipe.unet.dtype if dtype is None else dtype
        return cls(pipe.unet, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config, device=device, dtype=dtype)

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        texts = [p.lower().strip() for p in prompts]
        tokens = self.tokenizer(texts, padding="max_length", max_length=self.max_length, truncation=True,
                                add_special_tokens=True, return_tensors="pt")
        mask = tokens["attention_mask"].to(self.device)
        hidden = self.text_encoder(tokens["input_ids"].to(self.device), attention_mask=mask)[0]
        return hidden.float(), mask.long()

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb [B, 3, H, W] in [0, 1] -> pixels [B, 3, res, res] in [-1, 1] float32, differentiable."""
        return resize_rgb(rgb.to(self.device), self.resolution) * 2.0 - 1.0

    def decode_latents(self, y: torch.Tensor) -> torch.Tensor:
        """pixels in [-1, 1] -> rgb in [0, 1] float32."""
        return (y.to(self.device).float() * 0.5 + 0.5).clamp(0.0, 1.0)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(resolution={self.resolution}, prediction={self.prediction_type}, "
                f"device={self.device}, dtype={self.dtype})")
