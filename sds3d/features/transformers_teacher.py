"""CLIP or DINOv2 as a 2D feature teacher, through transformers, from a local model folder.

- CLIP: dense features are the vision transformer's patch tokens after its final layer norm,
  mapped by the visual projection into the joint image-text space (as MaskCLIP reads dense CLIP
  features); `text_features` are the projected pooled text embeddings. Both unit length.
- DINOv2: the patch tokens after the final layer norm (the width of the model); it has no text
  space, so `text_features` raises InputError.

Images are resized (antialiased bilinear) to the model's `image_size` and normalised with the
folder's preprocessor_config.json mean and std (the models' published defaults if absent).
Features come out on the patch grid, [B, D, image_size / patch, image_size / patch].

Reference: Learning Transferable Visual Models From Natural Language Supervision, arXiv:2103.00020;
DINOv2: Learning Robust Visual Features without Supervision, arXiv:2304.07193; Extract Free Dense
Labels from CLIP (MaskCLIP), arXiv:2112.01071
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from sds3d.errors import InputError

from .teacher import FeatureTeacher

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MODEL_TYPES = ("clip", "dinov2")


class TransformersTeacher(FeatureTeacher):
    """A frozen CLIP (`model_type` "clip") or DINOv2 ("dinov2") model on the CPU."""

    def __init__(self, model, model_type: str, image_size: int, patch_size: int, mean, std, tokenizer=None,
                 name: str = ""):
        self.model = model.eval().requires_grad_(False)
        self.model_type = model_type
        self.image_size, self.patch_size = int(image_size), int(patch_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1)
        self.tokenizer = tokenizer
        self.name = name or model_type
        self.dim = int(model.config.projection_dim if model_type == "clip" else model.config.hidden_size)

    @classmethod
    def load(cls, folder: str | Path) -> "TransformersTeacher":
        """Load from a transformers folder (config.json + weights [+ tokenizer for CLIP]); InputError
        naming the folder if the type is unsupported or the files do not load."""
        folder = Path(folder)
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"feature teacher {folder}: unreadable config.json ({type(exc).__name__})") from None
        model_type = config.get("model_type")
        if model_type not in MODEL_TYPES:
            raise InputError(f"feature teacher {folder}: model_type {model_type!r} is not supported "
                             f"(one of {', '.join(MODEL_TYPES)})")
        preprocessor = {}
        if (folder / "preprocessor_config.json").exists():
            try:
                preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                raise InputError(f"feature teacher {folder}: preprocessor_config.json is not valid JSON") from None
        try:
            if model_type == "clip":
                from transformers import AutoTokenizer, CLIPModel

                model = CLIPModel.from_pretrained(str(folder), local_files_only=True)
                tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                vision = model.config.vision_config
                mean, std = CLIP_MEAN, CLIP_STD
            else:
                from transformers import Dinov2Model

                model = Dinov2Model.from_pretrained(str(folder), local_files_only=True)
                tokenizer, vision = None, model.config
                mean, std = IMAGENET_MEAN, IMAGENET_STD
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"feature teacher {folder}: the {model_type} model does not load: {reason[:160]}") from None
        mean = preprocessor.get("image_mean", mean)
        std = preprocessor.get("image_std", std)
        return cls(model, model_type, vision.image_size, vision.patch_size, mean, std, tokenizer,
                   name=f"{model_type}:{folder.name}")

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        x = images.float().cpu().clamp(0, 1)
        size = (self.image_size, self.image_size)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> [B, D, g, g] unit features, g = image_size // patch_size."""
        pixels = self._pixels(images)
        grid = self.image_size // self.patch_size
        if self.model_type == "clip":
            vision = self.model.vision_model
            tokens = vision(pixel_values=pixels).last_hidden_state[:, 1:]  # drop the class token
            features = self.model.visual_projection(vision.post_layernorm(tokens))
        else:
            tokens = self.model(pixel_values=pixels).last_hidden_state  # already layer-normed
            features = tokens[:, tokens.shape[1] - grid * grid:]  # drop the class (and register) tokens
        B = features.shape[0]
        return F.normalize(features.reshape(B, grid, grid, -1).permute(0, 3, 1, 2).float(), dim=1)

    @torch.no_grad()
    def text_features(self, phrases: list[str]) -> torch.Tensor:
        """phrases (N) -> [N, D] unit CLIP text embeddings; DINOv2 raises InputError."""
        if self.model_type != "clip":
            raise InputError(f"feature teacher {self.name} ({self.model_type}) has no text space: text queries "
                             "need a CLIP teacher or the shipped part teacher")
        if isinstance(phrases, str):
            phrases = [phrases]
        max_length = int(self.model.config.text_config.max_position_embeddings)
        tokens = self.tokenizer(list(phrases), padding=True, truncation=True, max_length=max_length,
                                return_tensors="pt")
        pooled = self.model.text_model(input_ids=tokens["input_ids"],
                                       attention_mask=tokens["attention_mask"]).pooler_output
        return F.normalize(self.model.text_projection(pooled).float(), dim=-1)
