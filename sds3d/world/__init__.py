"""The micro-world: a procedural catalogue of coloured 3D objects with captions.

Objects are built from trimesh primitives in the canonical frame (+z up, front facing +x, centred,
largest extent 1). They supply training renders for the embedded prior and ground truth for
evaluating text-to-3D results.
"""

from ..views import VIEW_BINS, VIEW_WORDS
from .captions import (VIEW_PHRASES, canonical_caption, find_mentions, parse_problem, parse_prompt,
                       sample_caption, strip_view_phrases)
from .colors import COLORS, PART_PAINTS, ColorSpec, shaded_distance
from .kinds import KINDS, KindSpec, fronted_kinds
from .objects import WorldObject, make_object

__all__ = [
    "COLORS", "ColorSpec", "KINDS", "KindSpec", "PART_PAINTS", "VIEW_BINS", "VIEW_PHRASES", "VIEW_WORDS",
    "WorldObject", "canonical_caption", "find_mentions", "fronted_kinds", "make_object", "parse_problem",
    "parse_prompt", "sample_caption", "shaded_distance", "strip_view_phrases",
]
