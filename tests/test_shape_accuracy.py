import math

import numpy as np
import torch
import trimesh

from sds3d.cuda.mesh_rasterizer import render_trimesh
from sds3d.representations.convert import mesh_to_gaussians
from sds3d.shape_accuracy import (BOUND, GRID, best_yaw, largest_component, normalise, shape_cameras, shape_points, shape_scores,
                                  surface_points, visual_hull, yaw_chamfer)
from sds3d.world import make_object


def test_visual_hull_of_a_sphere_contains_it_and_little_more():
    radius = 0.4
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    cameras = shape_cameras()
    occupancy = visual_hull(render_trimesh(sphere, cameras).alpha, cameras)
    axis = (torch.arange(GRID) + 0.5) / GRID * 2 * BOUND - BOUND
    r = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).norm(dim=-1)
    assert occupancy[r < 0.9 * radius].all()  # silhouettes never carve the object itself
    assert not occupancy[r > 1.25 * radius].any()  # 33 views bound it tightly
    points = surface_points(occupancy)
    assert np.abs(np.linalg.norm(points, axis=1) - radius).max() < 0.1


def test_visual_hull_matches_a_voxel_by_voxel_projection():
    """The batched carving against the definition: each voxel centre projected through each camera."""
    cameras = shape_cameras(resolution=24)
    alpha = render_trimesh(make_object("mug", "red").mesh, cameras).alpha
    occupancy = visual_hull(alpha, cameras, grid=12)
    masks = alpha.reshape(len(cameras), 24, 24) > 0.5
    axis = (torch.arange(12, dtype=torch.float32) + 0.5) / 12 * 2 * BOUND - BOUND
    expected = torch.zeros(12, 12, 12, dtype=torch.bool)
    for i, j, k in np.ndindex(12, 12, 12):
        carved = False
        for b in range(len(cameras)):
            x, y, z, _ = (cameras.viewmats[b] @ torch.tensor([axis[i], axis[j], axis[k], 1.0])).tolist()
            u = math.floor(cameras.Ks[b, 0, 0] * x / z + cameras.Ks[b, 0, 2])
            v = math.floor(cameras.Ks[b, 1, 1] * y / z + cameras.Ks[b, 1, 2])
            if z > 0 and 0 <= u < 24 and 0 <= v < 24 and not masks[b, v, u]:
                carved = True
                break
        expected[i, j, k] = not carved
    assert 0 < int(expected.sum()) < expected.numel()
    assert torch.equal(occupancy, expected)


def test_normalisation_removes_position_and_scale_only():
    points = np.random.default_rng(0).normal(size=(300, 3)) * [1.0, 2.0, 0.5]
    a, b = normalise(points), normalise(3.0 * points + [1.0, -2.0, 0.5])
    np.testing.assert_allclose(a, b, atol=1e-9)
    np.testing.assert_allclose(a.mean(axis=0), 0, atol=1e-12)
    assert math.isclose(np.sqrt((a**2).sum(axis=1).mean()), 1.0)


def test_yaw_search_finds_a_rotated_copy_but_not_a_tilted_one():
    points = normalise(np.random.default_rng(1).uniform(-1, 1, size=(400, 3)) * [1.0, 0.3, 0.6])
    yaw = math.radians(75)  # a multiple of the 15 degree search step
    rz = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
    assert yaw_chamfer(points @ rz.T, points) < 1e-6
    tilt = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=float)  # lying on its side: not a yaw
    assert yaw_chamfer(points @ tilt.T, points) > 0.05


def _yaw(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _best_yaw_per_angle(points, reference, angles, brute_force):
    """`best_yaw` the plain way, one angle at a time: a cKDTree query per angle and direction, or (brute
    force) all pairwise distances to the points rotated forward, for both directions."""
    from scipy.spatial import cKDTree

    best = (math.nan, math.inf)
    for angle in angles:
        if brute_force:
            distances = np.linalg.norm((points @ _yaw(angle).T)[:, None] - reference[None], axis=-1)
            chamfer = 0.5 * (distances.min(axis=1).mean() + distances.min(axis=0).mean())
        else:
            chamfer = 0.5 * (cKDTree(reference).query(points @ _yaw(angle).T)[0].mean()
                             + cKDTree(points).query(reference @ _yaw(angle))[0].mean())
        if chamfer < best[1]:
            best = (float(angle), float(chamfer))
    return best


def test_the_batched_yaw_search_equals_a_search_one_angle_at_a_time():
    rng = np.random.default_rng(2)
    reference = normalise(rng.uniform(-1, 1, size=(300, 3)) * [1.0, 0.4, 0.7]).astype(np.float32)
    yaw = 0.4321  # not on the 15 degree grid
    points = normalise(reference[:250] @ _yaw(yaw) + rng.normal(0, 0.02, size=(250, 3)))  # rotated by -yaw
    window = np.radians(np.arange(-30, 30.1, 2.5)) + yaw  # as benchmarks/generated_parts.py, around the true yaw
    grid = [2 * math.pi * k / 24 for k in range(24)]
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):  # the result does not depend on the number of query threads
            torch.set_num_threads(count)
            for angles in (window, grid, [1.0, yaw, 2.0]):
                found = best_yaw(points, reference, angles)
                assert found == _best_yaw_per_angle(points, reference, angles, brute_force=False)  # bit for bit
                angle, distance = _best_yaw_per_angle(points, reference, angles, brute_force=True)
                assert found[0] == angle and math.isclose(found[1], distance, rel_tol=1e-12)
            assert found[0] == yaw  # found off the grid
            assert yaw_chamfer(points, reference) == _best_yaw_per_angle(points, reference, grid, brute_force=False)[1]
    finally:
        torch.set_num_threads(threads)


def test_the_yaw_search_of_empty_sets_and_ties():
    points = np.random.default_rng(3).normal(size=(20, 3))
    for found in (best_yaw(points[:0], points, [0.0, 1.0]), best_yaw(points, points[:0], [0.0]), best_yaw(points, points, [])):
        assert math.isnan(found[0]) and found[1] == math.inf
    assert yaw_chamfer(points[:0], points) == math.inf
    on_axis = np.zeros((20, 3))  # points on the z axis are the same at every yaw: an exact tie, the first angle wins
    on_axis[:, 2] = np.linspace(-1.0, 1.0, 20)
    shifted, angles = on_axis[::2] + [0.0, 0.0, 0.05], [0.7, 0.2, 1.5]
    [distance] = {_best_yaw_per_angle(on_axis, shifted, [angle], brute_force=False)[1] for angle in angles}
    assert distance > 0 and best_yaw(on_axis, shifted, angles) == (0.7, distance)


def test_ground_truth_gaussians_rank_their_own_kind_first_and_a_blob_is_not_a_mug():
    generator = torch.Generator().manual_seed(0)
    mug = make_object("mug", "red").mesh.copy()
    mug.apply_transform(trimesh.transformations.rotation_matrix(math.radians(100), [0, 0, 1]))
    mug.apply_scale(1.3)
    scores = shape_scores(shape_points(mesh_to_gaussians(mug, 8000, generator=generator)), "mug")
    assert scores["shape_acc"] == 1.0 and scores["shape_rank"] == 1 and scores["shape_margin"] > 0
    blob = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    scores = shape_scores(shape_points(mesh_to_gaussians(blob, 8000, generator=generator)), "mug")
    assert scores["shape_acc"] == 0.0 and scores["shape_nearest"] == "sphere" and scores["shape_margin"] < 0


def test_the_web_ui_score_table_shows_shape_accuracy_and_the_nearest_shape():
    from sds3d.app.ui import scores_text

    text = scores_text({"kind": "mug", "color": "red", "kind_acc": 1.0, "color_acc": 1.0, "janus_rate": 0.0,
                        "chamfer": 0.05, "shape_acc": 0.0, "shape_rank": 3, "shape_nearest": "pine_tree",
                        "shape_margin": -0.01})
    assert "| shape accuracy (3D, classifier-free) | 0.000 |" in text
    assert "Nearest 3D shape: **pine tree** (rank of the prompted kind: 3 of 28)" in text


def test_far_floaters_are_dropped_and_parts_across_a_small_gap_kept():
    occupancy = torch.zeros(24, 24, 24, dtype=torch.bool)
    occupancy[2:7, 2:7, 2:7] = True  # the body, 125 voxels
    occupancy[9, 4, 4] = True  # a leg across a 2-voxel gap: part of the body
    occupancy[18:20, 18:20, 18:20] = True  # a floater 11 voxels away, 8 voxels
    kept = largest_component(occupancy, bridge=3)
    assert int(kept.sum()) == 126 and kept[9, 4, 4] and not kept[18:20, 18:20, 18:20].any()
    assert int(largest_component(occupancy, bridge=0).sum()) == 125  # without bridging the leg goes too


def test_reference_shapes_are_kept_on_disk_keyed_by_the_meshes_and_carved_again_when_unreadable(tmp_path, monkeypatch):
    """The cache's behaviour, with a cheap stand-in for the carving (tested above on its own)."""
    from sds3d import shape_accuracy
    from sds3d.world import COLORS, KINDS

    carvings = []

    def carve(mesh):  # deterministic per mesh, so a re-carve equals the first
        carvings.append(mesh)
        return np.asarray(mesh.vertices[:64], dtype=np.float32)

    monkeypatch.setattr(shape_accuracy, "mesh_shape_points", carve)
    monkeypatch.setenv("SDS3D_CACHE_DIR", str(tmp_path))
    shape_accuracy.reference_shapes.cache_clear()
    try:
        carved = shape_accuracy.reference_shapes()
        assert len(carvings) == len(KINDS)
        [stored] = list((tmp_path / "reference_shapes").iterdir())
        shape_accuracy.reference_shapes.cache_clear()
        loaded = shape_accuracy.reference_shapes()  # from the file, nothing carved
        assert len(carvings) == len(KINDS)
        assert set(loaded) == set(KINDS) and all(np.array_equal(loaded[k], carved[k]) for k in KINDS)
        meshes = {kind: make_object(kind, next(iter(COLORS))).mesh for kind in KINDS}
        assert stored.stem == shape_accuracy._reference_key(meshes)
        moved = dict(meshes, cube=meshes["cube"].copy().apply_translation([0.0, 0.0, 0.01]))
        assert shape_accuracy._reference_key(moved) != stored.stem
        stored.write_bytes(b"not an npz")
        shape_accuracy.reference_shapes.cache_clear()
        again = shape_accuracy.reference_shapes()
        assert len(carvings) == 2 * len(KINDS)
        assert all(np.array_equal(again[k], carved[k]) for k in KINDS) and stored.stat().st_size > 1000
    finally:
        shape_accuracy.reference_shapes.cache_clear()
