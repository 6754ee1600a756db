"""Prompt processing: view-dependent prompts from camera angles, negative prompts, cached embeddings.

For each view the conditional prompt is "<prompt>, <view> view" (DreamFusion's view words, which the
embedded prior's captions use too) and the unconditional one is the negative prompt ("" when none,
the usual classifier-free guidance). Embeddings are computed once per distinct text by the prior.
A camera-conditioned prior (`prior.camera_conditioned`, embedded prior v2) is told each view's camera
instead: its prompts carry no view words, and every embedding (conditional, unconditional, bare)
carries the view's camera features, except the unconditional one of a prior that knows "no camera"
(`DiffusionPrior.unconditional_camera`: all-zero features).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .cameras import Cameras, cameras_features
from .views import VIEW_WORDS, view_bins

if TYPE_CHECKING:
    from sds3d.guidance.priors.prior import TextEmbedding


@dataclass
class PromptBatch:
    cond: "TextEmbedding"  # [B] one per view (view-dependent text)
    uncond: "TextEmbedding"  # [B] negative prompt, "" by default
    texts: list[str]
    views: list[str]
    prompt: str = ""  # the bare prompt, without view words
    base_cond: "TextEmbedding | None" = None  # [B] the bare prompt, for view-independent scores (VSD)


@dataclass
class PromptConfig:
    prompt: str
    negative_prompt: str = ""
    view_dependent: bool = True
    front_half_angle: float = 45.0
    back_half_angle: float = 45.0
    overhead_elevation: float = 60.0


def slug(text: str, empty: str = "run") -> str:
    """A folder name from a prompt: lower-case words joined by "_", at most 60 characters."""
    return "_".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())[:60] or empty


def validate_prompt(prompt: str, max_length: int = 300) -> str:
    text = " ".join(str(prompt).split())
    if not text:
        raise ValueError("the prompt is empty")
    if len(text) > max_length:
        raise ValueError(f"the prompt is {len(text)} characters long; the limit is {max_length}")
    return text


class PromptProcessor:
    def __init__(self, prior, config: PromptConfig):
        self.prior = prior
        self.config = config
        self.prompt = validate_prompt(config.prompt)

    def view_text(self, view: str) -> str:
        return f"{self.prompt}, {VIEW_WORDS[view]}" if self.config.view_dependent else self.prompt

    def __call__(self, cameras: Cameras) -> PromptBatch:
        c = self.config
        if c.view_dependent and cameras.elevation is None:
            raise ValueError("view-dependent prompts need cameras with elevation/azimuth (use orbit cameras)")
        views = (view_bins(cameras.elevation, cameras.azimuth, c.front_half_angle, c.back_half_angle,
                           c.overhead_elevation) if c.view_dependent else ["any"] * len(cameras))
        camera = cameras_features(cameras) if getattr(self.prior, "camera_conditioned", False) else None
        words = c.view_dependent and camera is None
        texts = [self.view_text(v) if words else self.prompt for v in views]
        cond = self.prior.encode_prompts(texts).with_camera(camera)
        uncond = self.prior.encode_prompts([c.negative_prompt] * len(texts)).with_camera(
            self.prior.unconditional_camera(camera))
        base_cond = self.prior.encode_prompts([self.prompt] * len(texts)).with_camera(camera)
        return PromptBatch(cond=cond, uncond=uncond, texts=texts, views=views, prompt=self.prompt, base_cond=base_cond)
