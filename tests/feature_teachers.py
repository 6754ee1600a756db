"""Teachers built in tests for feature distillation: a colour teacher that reads images (each
pixel's colour as a unit vector, colour names as text) for the image path, and helpers around the
ground-truth part oracle."""

import torch
import torch.nn.functional as F

from sds3d.features.teacher import CANONICAL_NEGATIVES, FeatureTeacher
from sds3d.world import COLORS


class ColourTeacher(FeatureTeacher):
    """pixel rgb -> normalize([r, g, b, 0.5]); "the <colour>" -> that colour's vector; the canonical
    negatives -> a mid grey's. A red pixel scores 0.96 for "red" against every negative, a blue one 0.01."""

    name = "colour-teacher"
    dim = 4

    def image_features(self, images):
        x = torch.cat([images, torch.full_like(images[:, :1], 0.5)], 1)
        return F.normalize(x, dim=1)

    def text_features(self, phrases):
        rows = []
        for phrase in phrases:
            word = phrase.lower().removeprefix("the ").strip()
            rgb = COLORS[word].rgb if word in COLORS else (0.5, 0.5, 0.5)
            if word not in COLORS and word not in CANONICAL_NEGATIVES:
                rgb = (0.0, 0.0, 0.0)  # unknown: only the 4th axis
            rows.append(F.normalize(torch.tensor([*rgb, 0.5]), dim=0))
        return torch.stack(rows)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)
