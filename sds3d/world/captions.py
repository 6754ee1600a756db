"""Caption grammar of the micro-world and the parser that maps prompts back to it.

A caption names one kind (any of its synonyms), one colour (its name or a synonym) and optionally a
view bin of `sds3d.views` ("front", "side", "back", "overhead"). The canonical caption is
"a red cube" / "a red cube, front view"; `sample_caption` draws paraphrases such as
"a 3d model of a crimson box, seen from the side". `parse_prompt` reads any caption the grammar
produces, and free prompts that mention exactly one kind and one colour, back to names.
"""

from __future__ import annotations

import random
import re

import numpy as np

from ..views import VIEW_WORDS
from .colors import COLORS
from .kinds import KINDS
from .objects import check_name

# Every phrase for a view bin; the first is `sds3d.views.VIEW_WORDS[bin]`.
VIEW_PHRASES: dict[str, tuple[str, ...]] = {
    "front": (VIEW_WORDS["front"], "seen from the front", "viewed from the front", "from the front"),
    "side": (VIEW_WORDS["side"], "seen from the side", "viewed from the side", "from the side",
             "profile view"),
    "back": (VIEW_WORDS["back"], "seen from behind", "viewed from the back", "from behind", "rear view"),
    "overhead": (VIEW_WORDS["overhead"], "seen from above", "viewed from above", "from above", "top view",
                 "top-down view"),
}

# Noun phrases naming a colour and a kind.
_OBJECT_TEMPLATES = (
    "{color} {noun}",
    "{color} colored {noun}",
    "{color}-colored {noun}",
    "{noun}, {color}",
    "{noun} in {color}",
    "{noun} painted {color}",
)
# {object} is the noun phrase with its article, {bare} without.
_WRAPPERS = ("{object}", "{bare}", "a 3d model of {object}", "a render of {object}",
             "a 3d render of {object}")


def _article(phrase: str) -> str:
    """The phrase with "a" or "an" in front."""
    return ("an " if phrase[0] in "aeiou" or phrase.startswith("hour") else "a ") + phrase


def _check(kind: str, color: str, view: str | None) -> None:
    check_name(kind, KINDS, "kind")
    check_name(color, COLORS, "color")
    if view is not None:
        check_name(view, VIEW_PHRASES, "view")


def canonical_caption(kind: str, color: str, view: str | None = None) -> str:
    """Deterministic caption: "a red cube", or "a red cube, front view" with a view bin."""
    _check(kind, color, view)
    caption = _article(f"{color} {KINDS[kind].synonyms[0]}")
    return caption if view is None else f"{caption}, {VIEW_WORDS[view]}"


def _choice(rng: random.Random | np.random.Generator, options):
    if isinstance(rng, np.random.Generator):
        return options[int(rng.integers(len(options)))]
    return rng.choice(options)


def sample_caption(kind: str, color: str, view: str | None, rng: random.Random | np.random.Generator) -> str:
    """A random paraphrase naming `kind`, `color` and, unless None, the view bin `view`."""
    _check(kind, color, view)
    color_word = _choice(rng, (color, *COLORS[color].synonyms))
    noun = _choice(rng, KINDS[kind].synonyms)
    phrase = _choice(rng, _OBJECT_TEMPLATES).format(color=color_word, noun=noun)
    caption = _choice(rng, _WRAPPERS).format(object=_article(phrase), bare=phrase)
    if view is None:
        return caption
    view_phrase = _choice(rng, VIEW_PHRASES[view])
    if view_phrase.endswith(" view") and _choice(rng, (True, False)):
        return f"{view_phrase} of {caption}"
    return f"{caption}, {view_phrase}"


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[a-z0-9]+", text.lower()))


_KIND_WORDS = {word for spec in KINDS.values() for noun in spec.synonyms for word in _tokens(noun)}


def _singular(word: str) -> str:
    """A plural of a kind's word as that word ("mugs", "boxes", "houses", "snowmen"); any other word as is."""
    if word in _KIND_WORDS:
        return word
    candidates = [word[:-1], word[:-2]] if word.endswith("s") else [word[:-3] + "man"] if word.endswith("men") else []
    return next((candidate for candidate in candidates if candidate in _KIND_WORDS), word)


def _vocabulary() -> dict[str, list[tuple[tuple[str, ...], str, str]]]:
    """First token -> [(phrase tokens, "kind" | "color" | "view", name)], longest phrases first."""
    entries = [(noun, "kind", name) for name, spec in KINDS.items() for noun in spec.synonyms]
    entries += [(word, "color", name) for name, spec in COLORS.items() for word in (name, *spec.synonyms)]
    entries += [(phrase, "view", name) for name, phrases in VIEW_PHRASES.items() for phrase in phrases]
    vocabulary: dict[str, list[tuple[tuple[str, ...], str, str]]] = {}
    for text, category, name in entries:
        tokens = _tokens(text)
        vocabulary.setdefault(tokens[0], []).append((tokens, category, name))
    for options in vocabulary.values():
        options.sort(key=lambda option: -len(option[0]))
    return vocabulary


_VOCABULARY = _vocabulary()


def find_mentions(text: str) -> dict[str, set[str]]:
    """Kinds, colours and view bins named in `text`, matching the longest phrase at each word; a kind may
    be named in the plural ("two red mugs")."""
    tokens = tuple(map(_singular, _tokens(text)))
    found: dict[str, set[str]] = {"kind": set(), "color": set(), "view": set()}
    i = 0
    while i < len(tokens):
        for phrase, category, name in _VOCABULARY.get(tokens[i], ()):
            if tokens[i:i + len(phrase)] == phrase:
                found[category].add(name)
                i += len(phrase)
                break
        else:
            i += 1
    return found


_VIEW_PHRASE_PATTERN = re.compile(
    r"\b(?:" + "|".join(re.escape(phrase) for phrase in sorted(
        (phrase for phrases in VIEW_PHRASES.values() for phrase in phrases), key=len, reverse=True))
    + r")\b(?:\s+of\b)?", re.IGNORECASE)


def strip_view_phrases(text: str) -> str:
    """`text` without its view phrases: "a red cube, front view", "front view of a red cube" and "a red
    cube seen from the front" all give "a red cube"; text without one comes back unchanged."""
    stripped = _VIEW_PHRASE_PATTERN.sub(" ", text)
    if stripped == text:
        return text
    stripped = re.sub(r"\s+", " ", stripped)
    stripped = re.sub(r" ([,;.])", r"\1", stripped)
    stripped = re.sub(r"(?:\s*[,;])+\s*([,;.]|$)", r"\1", stripped)  # drop commas left dangling
    return stripped.strip(" ,;")


def parse_prompt(text: str) -> tuple[str, str, str | None] | None:
    """(kind, color, view or None) if `text` names exactly one kind, one colour and at most one view
    bin of the micro-world, else None (`parse_problem` says why). Case, punctuation and other words are
    ignored."""
    if parse_problem(text):
        return None
    found = find_mentions(text)
    view = next(iter(found["view"])) if found["view"] else None
    return next(iter(found["kind"])), next(iter(found["color"])), view


def parse_problem(text: str) -> str | None:
    """Why `parse_prompt(text)` is None, e.g. "names no micro-world colour"; None when it parses."""
    found = find_mentions(text)
    for category, what in (("kind", "object"), ("color", "colour"), ("view", "view")):
        names = sorted(found[category])
        if not names and category != "view":
            return f"names no micro-world {what}"
        if len(names) > 1:
            return f"names {len(names)} {what}s ({', '.join(names)}), not one"
    return None
