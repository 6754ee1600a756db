"""Labelled renders of micro-world objects converted to Gaussians (`sds3d.world.splat_part_dataset`)."""

import numpy as np
import pytest
import torch

from sds3d.cameras import orbit_cameras
from sds3d.features.part_oracle import part_gaussians
from sds3d.world import KINDS
from sds3d.world.part_dataset import PartDataset, part_label, render_part_dataset, render_part_views
from sds3d.world.splat_part_dataset import render_splat_part_dataset, splat_part_views


def test_gaussian_labels_agree_with_the_mesh_labels_at_the_same_cameras():
    """20k Gaussians sampled on the mug's surface, each labelled by the face it was drawn on, seen
    from the mesh renders' cameras: pixel labels agree with the mesh rasterizer's face labels almost
    everywhere both see the object, and the handle is found where the mesh shows it."""
    views = dict(elevation=np.array([0.0, 20.0, 10.0]), azimuth=np.array([180.0, 150.0, 30.0]),
                 radius=np.array([2.5, 2.3, 2.4]), fovy=np.array([40.0, 40.0, 40.0]))
    mesh = render_part_views("mug", "red", **views, light_cam=np.array([[0.0, 0.5, 1.0]] * 3))
    gaussians, parts = part_gaussians("mug", "red", 20000)
    labels = torch.tensor([part_label("mug", part) for part in KINDS["mug"].parts])
    cameras = orbit_cameras(views["elevation"], views["azimuth"], views["radius"], views["fovy"], 128)
    splat = splat_part_views(gaussians, parts, labels, cameras, 64)
    both = (mesh["labels"] > 0) & (splat["labels"] > 0)
    assert both.sum() > 1500
    # 0.96 measured; a shuffled label table gives 0.09
    assert (mesh["labels"][both] == splat["labels"][both]).float().mean() > 0.93
    handle = part_label("mug", "handle")
    a, b = mesh["labels"] == handle, splat["labels"] == handle
    assert (a & b).sum() / (a | b).sum() > 0.6  # 0.71 measured
    # coverage: background exactly where the splats cover less than half a pixel
    alpha = splat["alpha"][:, 0]
    assert bool((splat["labels"][alpha < 0.5] == 0).all()) and bool((splat["labels"][alpha >= 0.5] > 0).all())
    silhouette = (mesh["labels"] > 0) == (splat["labels"] > 0)
    assert silhouette.float().mean() > 0.97


def test_the_dataset_is_deterministic_and_labels_only_the_objects_own_parts():
    first = render_splat_part_dataset(6, 3, resolution=32)
    second = render_splat_part_dataset(6, 3, resolution=32)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.images.shape == (6, 3, 32, 32) and first.labels.shape == (6, 32, 32)
    for i in range(6):
        kind = first.kinds[int(first.kind[i])]
        own = {0} | {part_label(kind, part) for part in KINDS[kind].parts}
        assert set(first.labels[i].unique().tolist()) <= own
        assert (first.labels[i] > 0).float().mean() > 0.05  # the object is in view
    # stored over white: where nothing covers a pixel, it is white
    empty = first.alpha[:, 0] == 0
    assert bool((first.images.permute(0, 2, 3, 1)[empty] == 255).all())


def test_part_datasets_concatenate_and_refuse_other_catalogues():
    mesh = render_part_dataset(2, 11, kinds=["house"], colors=["blue"])
    splat = render_splat_part_dataset(3, 4)
    both = mesh.concatenated(splat)
    assert isinstance(both, PartDataset) and len(both) == 5
    assert torch.equal(both.labels[:2], mesh.labels) and torch.equal(both.labels[2:], splat.labels)
    assert torch.equal(both.kind[2:], splat.kind) and both.seed == mesh.seed
    other = PartDataset(**{**{f: getattr(splat, f) for f in splat.state() if f != "version"}, "parts": ["x"]})
    with pytest.raises(ValueError, match="catalogues"):
        mesh.concatenated(other)
