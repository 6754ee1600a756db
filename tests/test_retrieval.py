"""Retrieval for a prompt: caption candidates, re-ranking by images of the prior, front alignment,
and a library with nothing close."""

import json

import numpy as np
import pytest
import torch

from sds3d.errors import InputError
from sds3d.export import save_trimesh
from sds3d.retrieval.index import LibraryIndex, build_index
from sds3d.retrieval.library import load_asset, render_views
from sds3d.retrieval.retrieve import PriorSamples, Retrieved, front_azimuth, retrieve, sample_prior
from sds3d.world.variants import make_variant

pytestmark = pytest.mark.usefixtures("one_thread")


def turned(mesh, degrees):
    """A copy of a trimesh turned about +z (counter-clockwise seen from above)."""
    mesh = mesh.copy()
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    mesh.vertices = np.asarray(mesh.vertices) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T
    return mesh


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A red mug and a red chair under one caption, a blue car stored facing +x and one stored turned
    so its front is seen from azimuth 90, and a green house turned by -120."""
    folder = tmp_path_factory.mktemp("retrieval") / "lib"
    folder.mkdir()
    assets = {"mug.glb": (make_variant("mug", "red", 1).mesh, "a red thing"),
              "chair.glb": (make_variant("chair", "red", 1).mesh, "a red thing"),
              "car.glb": (make_variant("car", "blue", 1).mesh, "a blue car"),
              "car_turned.glb": (turned(make_variant("car", "blue", 2).mesh, 90), "a blue car"),
              "house_turned.glb": (turned(make_variant("house", "green", 1).mesh, -120), "a green house")}
    lines = []
    for file, (mesh, caption) in assets.items():
        save_trimesh(mesh, folder / file)
        lines.append(json.dumps({"file": file, "caption": caption}))
    (folder / "library.jsonl").write_text("\n".join(lines) + "\n")
    build_index(folder, progress=False)
    return LibraryIndex.load(folder)


def samples_of(mesh_file, seed=0):
    """Stand-ins for the prior's samples: renders of another asset (front views and a ring)."""
    asset = load_asset(mesh_file)
    return PriorSamples(front=render_views(asset, azimuths=(0.0, 10.0, -10.0)),
                        any=render_views(asset, azimuths=(45.0, 135.0, -90.0, 180.0)))


def test_images_rerank_candidates_with_equal_captions(library, tmp_path):
    save_trimesh(make_variant("mug", "red", 7).mesh, tmp_path / "other_mug.glb")
    save_trimesh(make_variant("chair", "red", 7).mesh, tmp_path / "other_chair.glb")
    mug_first = retrieve("a red thing", library, k=2, samples=samples_of(tmp_path / "other_mug.glb"))
    chair_first = retrieve("a red thing", library, k=2, samples=samples_of(tmp_path / "other_chair.glb"))
    assert [r.path.name for r in mug_first] == ["mug.glb", "chair.glb"]
    assert [r.path.name for r in chair_first] == ["chair.glb", "mug.glb"]
    assert mug_first[0].text_score == pytest.approx(mug_first[1].text_score)  # only the images told them apart
    assert mug_first[0].image_score > mug_first[1].image_score


def test_results_are_sorted_deterministic_and_k_long(library, tmp_path):
    save_trimesh(make_variant("car", "blue", 9).mesh, tmp_path / "car.glb")
    samples = samples_of(tmp_path / "car.glb")
    first = retrieve("a blue car", library, k=3, samples=samples, min_text_score=0.0)
    again = retrieve("a blue car", library, k=3, samples=samples, min_text_score=0.0)
    assert first == again and len(first) == 3 and all(isinstance(r, Retrieved) for r in first)
    assert [r.image_score for r in first] == sorted((r.image_score for r in first), reverse=True)
    assert {r.path.name for r in first[:2]} == {"car.glb", "car_turned.glb"}


def test_front_alignment_turns_each_asset_to_face_x(library, tmp_path):
    save_trimesh(make_variant("car", "blue", 9).mesh, tmp_path / "car.glb")
    hits = {r.path.name: r for r in retrieve("a blue car", library, k=2, samples=samples_of(tmp_path / "car.glb"))}
    def off(yaw, expected):  # circular difference in degrees
        return abs((yaw - expected + 180.0) % 360.0 - 180.0)

    # the views are 30 degrees apart, and a three-quarter view also reads as a front: within one step
    assert off(hits["car.glb"].yaw_degrees, 0.0) <= 30.0
    assert off(hits["car_turned.glb"].yaw_degrees, -90.0) <= 30.0  # its front is seen from azimuth 90
    save_trimesh(make_variant("house", "green", 9).mesh, tmp_path / "house.glb")
    house = retrieve("a green house", library, k=1, samples=samples_of(tmp_path / "house.glb"))[0]
    assert off(house.yaw_degrees, 120.0) <= 30.0
    # turned by its yaw, the asset's renders from the front look like a front to the evaluator
    from sds3d.world.evaluator import Evaluator

    views = render_views(load_asset(house.path, house.yaw_degrees), azimuths=(0.0, 180.0))
    assert Evaluator.load().predict(views)["view"] == ["front", "back"]


def test_front_azimuth_finds_the_centre_of_the_front_arc():
    azimuths = tuple(float(a) for a in range(0, 360, 30))
    probability = torch.zeros(12)
    probability[[2, 3, 4]] = torch.tensor([0.9, 0.8, 0.9])  # 60..120 look frontal; 90 least of them
    assert front_azimuth(probability, azimuths) == 90.0
    probability = torch.zeros(12)
    probability[[11, 0]] = 1.0  # 330 and 0: the arc's centre is among them, reported in (-180, 180]
    assert front_azimuth(probability, azimuths) in (-30.0, 0.0)


def test_nothing_close_says_so_with_the_best_score(library):
    with pytest.raises(InputError, match=r"nothing in the library is close to 'a purple octahedron'.*similarity 0\.\d\d"):
        retrieve("a purple octahedron", library, samples=PriorSamples(torch.ones(1, 3, 32, 32), torch.ones(1, 3, 32, 32)))
    assert retrieve("a purple octahedron", library, optional=True) == []


def test_a_stale_index_is_refused(library, tmp_path):
    import shutil

    folder = tmp_path / "lib"
    shutil.copytree(library.folder, folder)
    manifest_path = folder / "library_index" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["image_embedder"] = "another evaluator"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="image embedder.*sds3d library build"):
        retrieve("a blue car", folder, optional=True)


def test_prior_samples_come_in_front_and_any_view_sets():
    samples = sample_prior("a red mug", n=2, steps=2, seed=0)
    assert samples.front.shape == samples.any.shape == (2, 3, 32, 32)
    assert 0 <= float(samples.front.min()) and float(samples.front.max()) <= 1
    assert not torch.allclose(samples.front, samples.any)
