"""Retrieval compares captions by the words that name a shape."""

import pytest

from sds3d.retrieval.embedders import TextEmbedder
from sds3d.retrieval.shape_phrase import shape_phrase
from sds3d.world import COLORS, KINDS, canonical_caption, sample_caption


@pytest.mark.parametrize("text, shape", [
    ("a red mug", "mug"),
    ("an orange pyramid", "pyramid"),
    ("a 3D render of a crimson-colored mug, front view", "mug"),
    ("A zoomed out DSLR photo of a dark blue sports car", "sports car"),
    ("a mug in red", "mug"),
    ("a cube, crimson", "cube"),
    ("pine tree painted emerald", "pine tree"),
    ("a snow white house seen from above", "house"),
    ("an orange", "orange"),  # the last word is the noun
    ("a red rose", "rose"),
    ("the red", "red"),  # nothing else left: the text itself
])
def test_shape_phrase_drops_colour_view_boilerplate_and_articles(text, shape):
    assert shape_phrase(text) == shape


def test_every_micro_world_paraphrase_keeps_its_kind_word_and_loses_its_colour():
    import numpy as np

    rng = np.random.default_rng(0)
    for kind, spec in KINDS.items():
        for color in COLORS:
            caption = sample_caption(kind, color, None, rng)
            shape = shape_phrase(caption)
            assert any(noun in shape for noun in spec.synonyms), (caption, shape)
            assert not any(word in shape.split() for word in (color, *COLORS[color].synonyms)), (caption, shape)


def test_captions_of_one_kind_in_other_colours_are_nearer_than_another_kind_in_the_same_colour():
    # the reason for shape phrases: on whole captions "a white pine tree" is nearer "a white tree"
    embedder = TextEmbedder()
    prompt, same_kind, same_colour = embedder.embed(["a white pine tree", "a cyan pine tree", "a white tree"])
    assert float(prompt @ same_kind) > 0.99 > float(prompt @ same_colour)
    kinds = list(KINDS)
    captions = embedder.embed([canonical_caption(kind, "red") for kind in kinds])
    queries = embedder.embed([canonical_caption(kind, "blue") for kind in kinds])
    assert (queries @ captions.T).argmax(dim=1).tolist() == list(range(len(kinds)))
