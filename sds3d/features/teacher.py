"""The 2D feature teacher interface: per-pixel features in a space shared with text.

A teacher maps images to per-pixel embeddings and phrases to embeddings of the same width, so that
the relevancy of a phrase at a pixel is a dot product (LSeg, arXiv:2201.03546; LERF,
arXiv:2303.09553). Feature fields are distilled from a teacher's image features; queries use its
text features. A teacher without a text space (DINOv2) raises `InputError` from `text_features`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

# Phrases a query competes against (LERF's canonical negatives): a pixel is relevant to a query when
# the query beats every one of them in a pairwise softmax.
CANONICAL_NEGATIVES = ("object", "things", "stuff", "texture")


class FeatureTeacher(ABC):
    """A frozen 2D teacher. `dim` is the feature width D; `name` identifies it in run records."""

    name: str
    dim: int
    version: str = ""  # identifies the weights ("" = unknown): a field is queried only with its own version

    @abstractmethod
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> features [B, D, h, w], unit length per pixel
        (h, w may be smaller than H, W; callers resize)."""

    @abstractmethod
    def text_features(self, phrases: list[str]) -> torch.Tensor:
        """phrases (N) -> [N, D] unit-length embeddings in the image features' space."""
