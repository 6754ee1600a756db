"""The two embeddings a library is searched by: captions (text) and renders (images).

- Text: the shape phrase of a caption or prompt (`shape_phrase`: colour words, view phrases and
  render boilerplate removed, "a crimson mug, front view" -> "mug") through the embedded prior's
  text encoder (all-MiniLM-L6-v2, `sds3d.guidance.priors.text_encoder`), its token states
  mean-pooled over the attention mask and L2-normalised: the sentence embedding the model was
  trained to give, [B, 384].
- Images: the micro-world evaluator's penultimate features (`sds3d.world.evaluator`, 256-d after
  ReLU) of 32x32 renders, L2-normalised, [B, 256]; with them the evaluator's view head, whose
  probability of "front" helps to find an asset's front.

Each embedder has a `name` that the index records; an index made with another name must be rebuilt.
The image embedder's name carries a digest of the evaluator's weights, so retraining the evaluator
invalidates old indexes.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from .shape_phrase import shape_phrase

TEXT_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2 mean-pooled, of shape phrases"


class TextEmbedder:
    """Sentence embeddings of the shape phrases of captions and prompts: `embed(texts)` -> [B, 384]
    unit rows."""

    name = TEXT_ENCODER_NAME

    def __init__(self, text_encoder=None):
        from sds3d.guidance.priors.text_encoder import get_text_encoder

        self.encoder = text_encoder or get_text_encoder()

    @torch.no_grad()
    def embed(self, texts: list[str] | str) -> torch.Tensor:
        texts = [shape_phrase(text) for text in ([texts] if isinstance(texts, str) else texts)]
        hidden, mask = self.encoder.encode(texts)
        weights = mask.to(hidden.dtype)[..., None]
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return F.normalize(pooled.float().cpu(), dim=-1)


def _weights_digest(folder) -> str:
    digest = hashlib.sha256()
    with open(folder / "model.safetensors", "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


class ImageEmbedder:
    """Evaluator features of renders: `embed(images [B, 3, H, W] in [0, 1])` -> [B, 256] unit rows;
    `front_probability(images)` -> [B] the view head's probability of a front view."""

    def __init__(self, evaluator=None, folder=None):
        from sds3d.world.evaluator import EVALUATOR_DIR

        folder = EVALUATOR_DIR if folder is None else Path(folder)
        self.evaluator = evaluator or _shared_evaluator(str(folder))
        self.name = f"sds3d-evaluator@{_weights_digest(folder)} penultimate features"
        self._front = self.evaluator.views.index("front")

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.evaluator.features(images).float(), dim=-1)

    @torch.no_grad()
    def front_probability(self, images: torch.Tensor) -> torch.Tensor:
        return self.evaluator.logits(images)["view"].softmax(-1)[:, self._front].float()


@lru_cache(maxsize=2)
def _shared_evaluator(folder: str):
    from sds3d.world.evaluator import Evaluator

    return Evaluator.load(Path(folder))


__all__ = ["TEXT_ENCODER_NAME", "TextEmbedder", "ImageEmbedder"]
