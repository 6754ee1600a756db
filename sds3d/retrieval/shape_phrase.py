"""The words of a caption that name a shape: what retrieval compares captions and prompts by.

Retrieval looks for geometry: the prompt's colour reaches the asset through the prior, whatever
colour the retrieved asset has. Sentence embeddings weigh colour words heavily, though: with
all-MiniLM-L6-v2, "a white pine tree" is nearer "a white tree" (0.84) than "a cyan pine tree"
(0.70). So both sides drop what does not name a shape before they are embedded:

- colour words in adjective position, with a shade ("dark blue") and "-colored"; a colour after
  "in" / "painted" / a comma at the end ("a mug in red", "a cube, crimson");
- view phrases (`sds3d.world.strip_view_phrases`), render boilerplate at the start ("a 3D model of",
  "a DSLR photo of", "a render of", ...) and articles.

"a 3D render of a crimson-colored mug, front view" -> "mug". A colour word that is the last word
is the noun ("an orange" keeps "orange"), and text with nothing else left comes back as it was
(lower-cased, trimmed).
"""

from __future__ import annotations

import re

# Common English colour names; the micro-world's colours and their synonyms are added below.
_COLOUR_WORDS = (
    "red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "white", "black", "gray", "grey",
    "brown", "magenta", "violet", "indigo", "beige", "tan", "maroon", "navy", "olive", "silver", "gold",
    "golden", "crimson", "scarlet", "teal", "turquoise", "aqua", "lavender", "lilac", "peach", "khaki",
    "cream", "bronze", "copper", "charcoal", "ivory", "multicolored", "multicoloured", "rainbow",
)
_SHADES = r"(?:(?:light|dark|bright|pale|deep|pastel|neon|vivid)[\s-]+)?"
_BOILERPLATE = re.compile(
    r"^\s*(?:an?\s+)?(?:(?:zoomed[\s-]out|high[\s-]quality|detailed)\s+)*"
    r"(?:dslr\s+photo(?:graph)?|photo(?:graph)?|3d\s+model|3d\s+render(?:ing)?|render(?:ing)?|image|picture|"
    r"illustration|drawing)\s+of\s+", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b", re.IGNORECASE)


def _colour_pattern() -> re.Pattern:
    from sds3d.world import COLORS

    words = set(_COLOUR_WORDS) | {word for name, spec in COLORS.items() for word in (name, *spec.synonyms)}
    colour = _SHADES + "(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + ")"
    adjective = rf"\b{colour}(?:[\s-]colou?red)?\b(?=[\s,]*[a-z0-9])"  # another word follows: not the noun
    trailing = rf"(?:\b(?:in|painted)\s+|,\s*){colour}\b"
    return re.compile(f"{trailing}|{adjective}", re.IGNORECASE)


_COLOURS = _colour_pattern()


def shape_phrase(text: str) -> str:
    """`text` without colour words, view phrases, render boilerplate and articles, lower-cased (see
    the module docstring)."""
    from sds3d.world import strip_view_phrases

    plain = text.strip().lower()
    shape = _BOILERPLATE.sub("", strip_view_phrases(plain))
    shape = _ARTICLES.sub(" ", _COLOURS.sub(" ", shape))
    shape = re.sub(r"\s+", " ", re.sub(r"\s+([,;.])", r"\1", shape)).strip(" ,;.")
    return shape or plain


__all__ = ["shape_phrase"]
