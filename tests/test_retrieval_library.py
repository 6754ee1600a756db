"""Asset libraries: library.jsonl, loading and placing assets, the incremental index, search, the
micro-world variants library and the `sds3d library` command."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from sds3d.errors import InputError
from sds3d.export import save_trimesh
from sds3d.retrieval import index as index_module
from sds3d.retrieval.embedders import TextEmbedder
from sds3d.retrieval.index import LibraryIndex, build_index
from sds3d.retrieval.library import (SkippedAssetWarning, content_hash, is_gaussian_ply, load_asset, read_entries,
                                     yaw_rotation)
from sds3d.retrieval.search import VectorSearch
from sds3d.world import KINDS, make_object
from sds3d.world.variants import MIN_DEPARTURE, make_variant, write_microworld_library

pytestmark = pytest.mark.usefixtures("one_thread")


def write_library(folder, lines):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "library.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """Three micro-world variants (GLB), a 3DGS PLY of one of them, and a corrupt file, indexed."""
    from sds3d.representations.convert import mesh_to_gaussians

    folder = write_microworld_library(tmp_path_factory.mktemp("lib") / "lib", 1, seed=1,
                                      kinds=["mug", "chair", "car"], progress=False)
    lines = [json.loads(line) for line in (folder / "library.jsonl").read_text().splitlines()]
    gaussians = mesh_to_gaussians(load_asset(folder / "mug_0.glb"), 4000, generator=torch.Generator().manual_seed(0))
    (folder / "splats").mkdir()
    gaussians.save_ply(folder / "splats" / "mug.ply")
    (folder / "broken.glb").write_bytes(b"glTF this is not a mesh")
    lines += [{"file": "splats/mug.ply", "caption": "a mug made of splats", "tags": ["gaussians"]},
              {"file": "broken.glb", "caption": "a broken asset"}]
    write_library(folder, lines)
    with pytest.warns(SkippedAssetWarning, match="broken.glb"):
        report = build_index(folder, progress=False)
    return folder, report


# ----- library.jsonl ------------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ('{"file": "a.glb", "caption": "a mug"}\nnot json\n', r"library.jsonl:2: not JSON"),
    ('{"file": "a.glb"}\n', "'caption' of a.glb"),
    ('{"file": "../a.glb", "caption": "x"}\n', "inside the library"),
    ('{"file": "a.txt", "caption": "x"}\n', "not an asset file"),
    ('{"file": "a.glb", "caption": "x"}\n{"file": "a.glb", "caption": "y"}\n', "listed twice"),
])
def test_bad_library_files_are_one_line_errors(tmp_path, content, message):
    (tmp_path / "library.jsonl").write_text(content)
    with pytest.raises(InputError, match=message):
        read_entries(tmp_path)


def test_missing_library(tmp_path):
    with pytest.raises(InputError, match="no such library folder"):
        read_entries(tmp_path / "nowhere")
    with pytest.raises(InputError, match="no library.jsonl"):
        read_entries(tmp_path)


def test_obj_hash_covers_its_material(tmp_path):
    (tmp_path / "a.obj").write_text("mtllib a.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    (tmp_path / "a.mtl").write_text("newmtl m\nKd 1 0 0\n")
    before = content_hash(tmp_path / "a.obj")
    (tmp_path / "a.mtl").write_text("newmtl m\nKd 0 0 1\n")
    assert content_hash(tmp_path / "a.obj") != before


# ----- loading ------------------------------------------------------------------------------------

def test_assets_load_in_the_canonical_frame_and_turn_by_yaw(tmp_path):
    mesh = make_object("car", "blue").mesh.copy()
    mesh.vertices = mesh.vertices * 3.0 + [5.0, -2.0, 1.0]  # anywhere, any size
    save_trimesh(mesh, tmp_path / "car.glb")
    straight, turned = load_asset(tmp_path / "car.glb"), load_asset(tmp_path / "car.glb", 90.0)
    positions = straight.positions.detach().double()
    extent = positions.max(0).values - positions.min(0).values
    assert extent.max().item() == pytest.approx(1.0, abs=1e-5)
    assert (positions.max(0).values + positions.min(0).values).abs().max().item() < 1e-5
    assert torch.allclose(turned.positions.double(), positions @ yaw_rotation(90.0).T, atol=1e-5)
    # the car's grille (front, +x) now faces +y: the turned car is longer along y
    turned_extent = (turned.positions.max(0).values - turned.positions.min(0).values).detach()
    assert turned_extent[1] == pytest.approx(extent[0].item(), abs=1e-5)


def test_gaussian_ply_is_told_from_a_mesh_ply_and_normalised(tmp_path):
    from sds3d.representations import Gaussians
    from sds3d.representations.convert import mesh_to_gaussians

    mesh = make_object("cube", "red").mesh
    mesh.export(tmp_path / "cube_mesh.ply")
    gaussians = mesh_to_gaussians(mesh, 2000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gaussians.params["means"].mul_(4.0)
    gaussians.save_ply(tmp_path / "cube_splats.ply")
    assert not is_gaussian_ply(tmp_path / "cube_mesh.ply") and is_gaussian_ply(tmp_path / "cube_splats.ply")
    loaded = load_asset(tmp_path / "cube_splats.ply", 45.0)
    assert isinstance(loaded, Gaussians)
    radius_xy = loaded.means[:, :2].norm(dim=-1).max().item()  # a unit cube's corner turned 45 degrees
    assert radius_xy == pytest.approx(math.sqrt(0.5), abs=0.02)


# ----- the index ----------------------------------------------------------------------------------

def test_build_indexes_readable_assets_and_skips_a_corrupt_one(library):
    folder, report = library
    assert sorted(report.rendered) == ["car_0.glb", "chair_0.glb", "mug_0.glb", "splats/mug.ply"]
    assert [file for file, _ in report.skipped] == ["broken.glb"]
    index = LibraryIndex.load(folder)
    manifest = index.manifest
    assert manifest["format_version"] == index_module.INDEX_FORMAT_VERSION
    assert manifest["text_encoder"] == "sentence-transformers/all-MiniLM-L6-v2 mean-pooled, of shape phrases"
    assert manifest["image_embedder"].startswith("sds3d-evaluator@")
    assert {a.file: a.sha256 for a in index.assets}["car_0.glb"] == content_hash(folder / "car_0.glb")
    assert {a.file: a.type for a in index.assets}["splats/mug.ply"] == "gaussians"
    assert index.text.shape == (4, 384) and index.image_views.shape == (4, 12, 256)
    assert torch.allclose(index.text.norm(dim=-1), torch.ones(4), atol=1e-5)
    # the index knows what it holds: the chair's caption is nearest "a chair", and the image
    # embeddings of the mug's mesh and of its splats are nearer each other than either to the chair's
    rows = {a.file: i for i, a in enumerate(index.assets)}
    hits = index_module.search_captions(index, TextEmbedder().embed(["a chair"])[0], 1)
    assert index.assets[hits[0][0]].file == "chair_0.glb"
    mug, splats, chair = (index.image[rows[f]] for f in ("mug_0.glb", "splats/mug.ply", "chair_0.glb"))
    assert float(mug @ splats) > max(float(mug @ chair), float(splats @ chair))


def test_rebuild_renders_only_new_or_changed_assets(library, tmp_path, monkeypatch):
    folder = tmp_path / "lib"
    shutil.copytree(library[0], folder)
    rendered = []
    real = index_module.render_views
    monkeypatch.setattr(index_module, "render_views", lambda rep, *a, **k: rendered.append(1) or real(rep, *a, **k))
    with pytest.warns(SkippedAssetWarning):
        report = build_index(folder, progress=False)
    assert rendered == [] and report.rendered == [] and len(report.reused) == 4
    save_trimesh(make_variant("car", "green", seed=99).mesh, folder / "car_0.glb")  # changed
    save_trimesh(make_variant("tree", "green", seed=1).mesh, folder / "tree.glb")  # new
    lines = (folder / "library.jsonl").read_text() + json.dumps({"file": "tree.glb", "caption": "a green tree"}) + "\n"
    (folder / "library.jsonl").write_text(lines)
    with pytest.warns(SkippedAssetWarning):
        report = build_index(folder, progress=False)
    assert sorted(report.rendered) == ["car_0.glb", "tree.glb"] and len(rendered) == 2
    index = LibraryIndex.load(folder)
    assert len(index) == 5 and index.assets[-1].caption == "a green tree"


def test_rebuild_after_a_new_text_encoder_embeds_every_caption_and_renders_nothing(library, tmp_path, monkeypatch):
    folder = tmp_path / "lib"
    shutil.copytree(library[0], folder)
    manifest_path = folder / "library_index" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["text_encoder"] = "an older text encoder"
    manifest_path.write_text(json.dumps(manifest))
    real_render, real_embed = index_module.render_views, TextEmbedder.embed
    rendered, embedded = [], []
    monkeypatch.setattr(index_module, "render_views",
                        lambda rep, *a, **k: rendered.append(1) or real_render(rep, *a, **k))
    monkeypatch.setattr(TextEmbedder, "embed", lambda self, texts: embedded.extend(texts) or real_embed(self, texts))
    with pytest.warns(SkippedAssetWarning):
        report = build_index(folder, progress=False)
    assert rendered == [] and len(report.reused) == 4
    index = LibraryIndex.load(folder)
    assert sorted(embedded) == sorted({asset.caption for asset in index.assets})
    assert torch.allclose(index.text, TextEmbedder().embed([asset.caption for asset in index.assets]), atol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("format_version", 999, "format version 999"),
    ("text_encoder", "openai/clip-vit-base-patch32", "text encoder"),
])
def test_an_index_built_otherwise_must_be_rebuilt(library, tmp_path, field, value, message):
    folder = tmp_path / "lib"
    shutil.copytree(library[0], folder)
    manifest_path = folder / "library_index" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest[field] = value
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=f"{message}.*sds3d library build"):
        LibraryIndex.load(folder)


def test_damaged_embeddings_are_refused(library, tmp_path):
    folder = tmp_path / "lib"
    shutil.copytree(library[0], folder)
    with open(folder / "library_index" / "embeddings.safetensors", "r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00" * 16)
    with pytest.raises(InputError, match="does not match manifest.json"):
        LibraryIndex.load(folder)


def test_a_library_of_unreadable_assets_is_an_error(tmp_path):
    folder = write_library(tmp_path / "lib", [{"file": "a.glb", "caption": "a"}, {"file": "b.ply", "caption": "b"}])
    (folder / "a.glb").write_bytes(b"nonsense")
    with pytest.warns(SkippedAssetWarning), pytest.raises(InputError, match="no asset of the library"):
        build_index(folder, progress=False)


# ----- search -------------------------------------------------------------------------------------

def test_numpy_and_faiss_exact_search_agree():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((500, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.standard_normal((20, 64)).astype(np.float32)
    scores_np, ids_np = VectorSearch(vectors, "numpy").search(queries, 7)
    scores_flat, ids_flat = VectorSearch(vectors, "flat").search(queries, 7)
    assert (ids_np == ids_flat).all()
    np.testing.assert_allclose(scores_np, scores_flat, rtol=1e-5, atol=1e-5)
    brute = np.argsort(-(queries @ vectors.T), axis=1)[:, :7]  # the definition
    assert (ids_np == brute).all()


def test_ivf_finds_the_exact_neighbours_of_library_vectors():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((3000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    _, ids = VectorSearch(vectors, "ivf").search(vectors[:50], 1)
    assert (ids[:, 0] == np.arange(50)).mean() >= 0.95


# ----- micro-world variants -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(KINDS))
def test_no_variant_is_the_canonical_object(kind):
    canonical = np.asarray(make_object(kind, "red").mesh.vertices)
    for seed in range(3):
        variant = make_variant(kind, "red", seed)
        vertices = np.asarray(variant.mesh.vertices)
        assert vertices.shape == canonical.shape  # same parts and triangles, other proportions
        assert np.abs(vertices - canonical).max() >= MIN_DEPARTURE
        extent = vertices.max(0) - vertices.min(0)
        assert extent.max() == pytest.approx(1.0) and np.allclose(vertices.max(0) + vertices.min(0), 0, atol=1e-9)
    assert not np.allclose(make_variant(kind, "red", 0).mesh.vertices, make_variant(kind, "red", 1).mesh.vertices)


def test_microworld_library_captions_tags_and_axes(tmp_path):
    folder = write_microworld_library(tmp_path / "mw", 2, seed=5, kinds=["mug", "house"], progress=False)
    entries = read_entries(folder)
    assert [e.file for e in entries] == ["mug_0.glb", "mug_1.glb", "house_0.glb", "house_1.glb"]
    for entry in entries:
        kind, color = entry.tags["kind"], entry.tags["color"]
        assert entry.caption in (f"a {color} {KINDS[kind].synonyms[0]}", f"an {color} {KINDS[kind].synonyms[0]}")
    # the GLB is +Y up: read back, it is the variant in sds3d's frame (front +x, +z up)
    first = entries[0]
    variant = make_variant("mug", first.tags["color"], seed=5 * 100_003 + 0)
    loaded = load_asset(folder / first.file)
    assert np.allclose(np.sort(loaded.positions.detach().numpy(), 0)[[0, -1]],
                       np.sort(np.unique(np.asarray(variant.mesh.vertices), axis=0), 0)[[0, -1]], atol=1e-5)


# ----- the command --------------------------------------------------------------------------------

def test_cli_build_and_search(library, tmp_path, capsys):
    from sds3d.cli import main

    folder = tmp_path / "lib"
    shutil.copytree(library[0], folder)
    assert main(["library", "build", str(folder), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "sds3d: warning: broken.glb: skipped" in captured.err
    assert "4 unchanged, 1 skipped" in captured.out
    sheet = tmp_path / "sheet.png"
    assert main(["library", "search", str(folder), "a chair", "--k", "2", "--sheet", str(sheet)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "chair_0.glb" in lines[1] and len(lines) == 5  # header, 2 hits, the note, "wrote"
    assert lines[3] == "(1 of 2 below the similarity 0.8 retrieval asks for: `generate --retrieve` would not use it)"
    from PIL import Image

    assert Image.open(sheet).size == (2 * 128, 128 + 30)


@pytest.mark.parametrize("args, message", [
    (["search", "{missing}", "a chair"], "no such library folder"),
    (["build", "{empty}"], "the library is empty"),
    (["search", "{empty}", "a chair", "--k", "0"], "--k must be at least 1"),
    (["make-microworld", "{fresh}", "--variants", "0"], "--variants must be at least 1"),
    (["make-microworld", "{fresh}", "--kinds", "mug,spaceship"], "unknown kind 'spaceship'"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    from sds3d.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "library.jsonl").write_text("\n")
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "fresh": tmp_path / "fresh"}
    assert main(["library", *[a.format(**paths) for a in args]]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_large_libraries_keep_a_trained_ivf_index(library, tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    from sds3d.retrieval import search as search_module

    folder = tmp_path / "lib"
    shutil.copytree(library[0], folder)
    monkeypatch.setattr(search_module, "IVF_MIN_SIZE", 4)  # this library counts as large
    with pytest.warns(SkippedAssetWarning):
        build_index(folder, progress=False)
    assert (folder / "library_index" / "captions.ivf").is_file()
    index = LibraryIndex.load(folder)
    query = TextEmbedder().embed(["a chair"])[0]
    assert index.caption_search("auto").method == "ivf"
    (ivf_rows, ivf_scores), (rows, scores) = (zip(*index_module.search_captions(index, query, 2, method=m))
                                              for m in ("auto", "numpy"))
    assert ivf_rows == rows and ivf_scores == pytest.approx(scores, abs=1e-5)
    monkeypatch.setattr(search_module, "IVF_MIN_SIZE", 30_000)  # small again: exact search, file gone
    with pytest.warns(SkippedAssetWarning):
        build_index(folder, progress=False)
    assert not (folder / "library_index" / "captions.ivf").exists()
    assert LibraryIndex.load(folder).caption_search("auto").method == "flat"


def test_an_asset_without_a_caption_is_skipped_by_name(library, tmp_path):
    folder = tmp_path / "lib"
    shutil.copytree(library[0], folder)
    (folder / "extra").mkdir()
    save_trimesh(make_variant("cone", "blue", 0).mesh, folder / "extra" / "cone.glb")
    with pytest.warns(SkippedAssetWarning) as caught:
        report = build_index(folder, progress=False)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2 and messages[0].startswith("broken.glb: skipped: not a readable mesh file")
    assert messages[1].startswith("extra/cone.glb: skipped: not listed in") and messages[1].endswith(
        "library.jsonl (add a line with its caption)")
    assert ("extra/cone.glb" in dict(report.skipped)) and report.rendered == []
