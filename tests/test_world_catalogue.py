"""The micro-world catalogue: object geometry and colours, caption grammar and prompt parsing."""

import itertools
import random

import numpy as np
import pytest
import trimesh

from sds3d.views import VIEW_BINS, VIEW_WORDS
from sds3d.world import (COLORS, KINDS, VIEW_PHRASES, canonical_caption, fronted_kinds, make_object,
                         parse_problem, parse_prompt, sample_caption, shaded_distance,
                         strip_view_phrases)
from sds3d.world.captions import _OBJECT_TEMPLATES, _WRAPPERS, _article, _tokens
from sds3d.world.colors import PART_CONTRAST, rgba8

PRIMITIVES = ("cube", "sphere", "cylinder", "cone", "torus", "pyramid", "capsule", "octahedron", "star")
COMPOSITES = ("snowman", "mushroom", "table", "chair", "house", "mug", "tree", "lamp", "rocket")
VIEWS = (None, *VIEW_BINS)


@pytest.fixture(scope="module")
def objects():
    return {(kind, color): make_object(kind, color) for kind in KINDS for color in COLORS}


def test_catalogue_size():
    assert len(KINDS) >= 24
    assert len(COLORS) >= 10
    assert len(fronted_kinds()) >= max(6, len(KINDS) // 4)
    assert set(PRIMITIVES + COMPOSITES) <= set(KINDS)
    assert fronted_kinds() == [name for name, spec in KINDS.items() if spec.has_front]


def test_colors_survive_shading():
    for spec in COLORS.values():
        assert all(0.0 <= c <= 1.0 for c in spec.rgb)
    for a, b in itertools.combinations(COLORS.values(), 2):
        assert shaded_distance(a.rgb, b.rgb) >= 0.1, (a.name, b.name)


def test_kind_specs_match_builders():
    for spec in KINDS.values():
        assert set(spec.builder()) == set(spec.parts), spec.name
        assert spec.body_parts, spec.name
        assert bool(spec.front) == spec.has_front, spec.name


def test_objects_are_canonical(objects):
    for (kind, color), obj in objects.items():
        mesh = obj.mesh
        assert (obj.kind, obj.color, obj.has_front) == (kind, color, KINDS[kind].has_front)
        assert mesh.extents.max() == pytest.approx(1.0, abs=1e-6), kind
        np.testing.assert_allclose(mesh.bounds.mean(axis=0), 0.0, atol=1e-6)
        assert mesh.is_winding_consistent, kind


def test_parts_are_outward_watertight_solids(objects):
    for kind in KINDS:
        mesh = objects[kind, "red"].mesh
        for component in mesh.split(only_watertight=False):
            assert component.is_watertight, kind
            assert component.volume > 0, kind


def test_primitives_are_single_watertight_meshes(objects):
    for kind in PRIMITIVES:
        mesh = objects[kind, "blue"].mesh
        assert mesh.is_watertight and mesh.volume > 0, kind


def test_named_colour_covers_most_of_the_surface(objects):
    for (kind, color), obj in objects.items():
        face_colors = obj.mesh.visual.face_colors
        assert face_colors.dtype == np.uint8 and face_colors.shape == (len(obj.mesh.faces), 4)
        body = np.all(face_colors == rgba8(COLORS[color].rgb), axis=1)
        assert obj.mesh.area_faces[body].sum() > 0.5 * obj.mesh.area, (kind, color)
        # every other part stands out from the named colour
        others = np.unique(face_colors[~body, :3], axis=0) / 255.0
        distances = np.linalg.norm(others - COLORS[color].rgb, axis=1)
        assert np.all(distances >= PART_CONTRAST - 0.01), (kind, color)


def test_objects_are_deterministic():
    a, b = make_object("snowman", "blue").mesh, make_object("snowman", "blue").mesh
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_array_equal(a.visual.face_colors, b.visual.face_colors)


def _albedo_view(points, colors, sign, res=32):
    """Unshaded orthographic res x res image seen from +x (sign=1) or -x (sign=-1), indexed by world
    (y, z) so that a mirror-symmetric object gives the same image from both sides; NaN = background."""
    u = np.clip(((points[:, 1] + 0.5) * res).astype(int), 0, res - 1)
    v = np.clip(((points[:, 2] + 0.5) * res).astype(int), 0, res - 1)
    pixel = v * res + u
    order = np.lexsort((-sign * points[:, 0], pixel))
    pixels, nearest = np.unique(pixel[order], return_index=True)
    image = np.full((res * res, 3), np.nan)
    image[pixels] = colors[order[nearest]]
    return image


def test_fronts_are_visible_at_32px(objects):
    """At 32x32 the front (+x) of a fronted kind differs from its back; other kinds look the same."""
    for i, kind in enumerate(KINDS):
        mesh = objects[kind, list(COLORS)[i % len(COLORS)]].mesh
        points, faces = trimesh.sample.sample_surface(mesh, 30000, seed=0)
        colors = mesh.visual.face_colors[faces, :3] / 255.0
        front, back = _albedo_view(points, colors, 1), _albedo_view(points, colors, -1)
        covered = ~np.isnan(front[:, 0]) | ~np.isnan(back[:, 0])
        differs = np.nan_to_num(np.abs(front - back).max(axis=1), nan=1.0) > 0.25
        fraction = differs[covered].mean()
        if KINDS[kind].has_front:
            assert fraction > 0.08, (kind, fraction)
        else:
            assert fraction < 0.01, (kind, fraction)


def test_kinds_differ_in_silhouette(objects):
    """Seen from the front and from the side at 32x32, no two kinds have nearly the same outline."""
    def silhouette(mesh, axis, res=32):
        points, _ = trimesh.sample.sample_surface(mesh, 20000, seed=0)
        u, v = (np.clip(((points[:, i] + 0.5) * res).astype(int), 0, res - 1) for i in (1 - axis, 2))
        image = np.zeros((res, res), bool)
        image[v, u] = True
        return image

    outlines = {kind: [silhouette(objects[kind, "red"].mesh, axis) for axis in (0, 1)] for kind in KINDS}
    for a, b in itertools.combinations(KINDS, 2):
        iou = np.mean([(sa & sb).sum() / (sa | sb).sum() for sa, sb in zip(outlines[a], outlines[b])])
        assert iou < 0.9, (a, b, iou)


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="valid kinds: cube, sphere"):
        make_object("astronaut", "red")
    with pytest.raises(ValueError, match="valid colors: red, orange"):
        make_object("cube", "gray")
    with pytest.raises(ValueError, match="valid views"):
        canonical_caption("cube", "red", "below")


def test_canonical_captions():
    assert canonical_caption("cube", "red") == "a red cube"
    assert canonical_caption("cube", "orange", "front") == "an orange cube, front view"
    assert canonical_caption("hourglass", "red") == "a red hourglass"
    for kind, color, view in itertools.product(KINDS, COLORS, VIEWS):
        caption = canonical_caption(kind, color, view)
        assert parse_prompt(caption) == (kind, color, view), caption
        if view is not None:
            assert caption.endswith(VIEW_WORDS[view])


def test_view_phrases_extend_view_words():
    assert tuple(VIEW_PHRASES) == VIEW_BINS
    for view in VIEW_BINS:
        assert VIEW_PHRASES[view][0] == VIEW_WORDS[view]


def test_every_phrase_of_the_grammar_parses_back():
    """Each noun synonym x template x wrapper, each colour word, each view phrase in each position."""
    for kind, spec in KINDS.items():
        for noun, template, wrapper in itertools.product(spec.synonyms, _OBJECT_TEMPLATES, _WRAPPERS):
            phrase = template.format(color="scarlet", noun=noun)
            caption = wrapper.format(object=_article(phrase), bare=phrase)
            assert parse_prompt(caption) == (kind, "red", None), caption
    for color, spec in COLORS.items():
        for word, template in itertools.product((color, *spec.synonyms), _OBJECT_TEMPLATES):
            caption = _article(template.format(color=word, noun="tv set"))
            assert parse_prompt(caption) == ("tv", color, None), caption
    for view, phrases in VIEW_PHRASES.items():
        for phrase in phrases:
            assert parse_prompt(f"an ivory alarm clock, {phrase}") == ("clock", "white", view), phrase
            assert parse_prompt(f"{phrase} of a pine tree in lime") == ("pine_tree", "green", view), phrase


def test_sampled_captions_parse_back():
    python_rng, numpy_rng = random.Random(0), np.random.default_rng(0)
    for kind, color, view in itertools.product(KINDS, COLORS, VIEWS):
        for rng in (python_rng, numpy_rng, python_rng):
            caption = sample_caption(kind, color, view, rng)
            assert parse_prompt(caption) == (kind, color, view), caption
            assert parse_prompt(caption.upper() + "!") == (kind, color, view), caption


def test_strip_view_phrases_keeps_kind_and_colour():
    rng = random.Random(1)
    for kind, color, view in itertools.product(KINDS, COLORS, VIEWS):
        caption = sample_caption(kind, color, view, rng)
        stripped = strip_view_phrases(caption)
        assert parse_prompt(stripped) == (kind, color, None), (caption, stripped)
        assert (stripped == caption) == (view is None)
    assert strip_view_phrases("a red cube, front view") == "a red cube"
    assert strip_view_phrases("Rear view of a red cube, on grass.") == "a red cube, on grass."
    assert strip_view_phrases("a red cube seen from above, on grass") == "a red cube, on grass"


def test_sampling_is_seeded_and_varied():
    def draw(seed):
        rng = random.Random(seed)
        return [sample_caption("cube", "red", "side", rng) for _ in range(3)]

    assert draw(1) == draw(1)
    captions = {sample_caption("cube", "red", "side", np.random.default_rng(seed)) for seed in range(50)}
    assert len(captions) > 30
    rng = random.Random(2)
    text = " | ".join(sample_caption("cube", "red", "side", rng) for _ in range(500))
    words = (*KINDS["cube"].synonyms, "red", *COLORS["red"].synonyms, *VIEW_PHRASES["side"], "a 3d model of")
    for word in words:
        assert word in text, word


@pytest.mark.parametrize("text, expected", [
    ("a crimson box, side view", ("cube", "red", "side")),
    ("A red mug", ("mug", "red", None)),
    ("a red table lamp", ("lamp", "red", None)),
    ("an orange christmas tree seen from above", ("pine_tree", "orange", "overhead")),
    ("a 3d model of a red cube", ("cube", "red", None)),
    ("A RED-COLORED CAR, REAR VIEW.", ("car", "red", "back")),
    ("a photo of an astronaut", None),
    ("an astronaut riding a horse", None),
    ("", None),
    ("a cube", None),
    ("a red cube next to a blue sphere", None),
    ("a red and blue cube", None),
    ("a red cube, front view, back view", None),
    ("a gray cube", None),
    ("two red mugs", ("mug", "red", None)),
    ("three white snowmen", ("snowman", "white", None)),
    ("blue houses, side view", ("house", "blue", "side")),
    ("green pine trees", ("pine_tree", "green", None)),
    ("red hourglasses", ("hourglass", "red", None)),
    ("a red glass", None),
    ("two red buses", None),
])
def test_parse_prompt(text, expected):
    assert parse_prompt(text) == expected


@pytest.mark.parametrize("text, problem", [
    ("a dragon", "names no micro-world object"),
    ("a wooden chair", "names no micro-world colour"),
    ("a red mug on a table", "names 2 objects (mug, table), not one"),
    ("a mug that is red and blue", "names 2 colours (blue, red), not one"),
    ("a red cube, front view, back view", "names 2 views (back, front), not one"),
    ("two red mugs, back view", None),
])
def test_parse_problem_says_why_a_prompt_does_not_parse(text, problem):
    assert parse_problem(text) == problem and (parse_prompt(text) is None) == (problem is not None)


def test_phrases_are_unambiguous():
    phrases = [(_tokens(noun), "kind", kind) for kind, spec in KINDS.items() for noun in spec.synonyms]
    phrases += [(_tokens(word), "color", c) for c, spec in COLORS.items() for word in (c, *spec.synonyms)]
    phrases += [(_tokens(p), "view", v) for v, ps in VIEW_PHRASES.items() for p in ps]
    all_tokens = [tokens for tokens, _, _ in phrases]
    assert len(set(all_tokens)) == len(all_tokens), "a phrase is listed twice"

    def contains(outer, inner):
        return any(outer[i:i + len(inner)] == inner for i in range(len(outer) - len(inner) + 1))

    # A phrase may contain a shorter one of its own category ("pine tree" > "tree"): the parser
    # matches the longest phrase, as the round-trip tests check. Across categories it must not.
    for (outer, outer_cat, _), (inner, inner_cat, _) in itertools.permutations(phrases, 2):
        assert outer_cat == inner_cat or not contains(outer, inner), (outer, inner)
