"""`sds3d.scene.load.load_asset`: foreign 3DGS PLYs (any SH degree, ASCII / binary, either byte
order), meshes (GLB, OBJ, PLY with faces) converted with their colours, sds3d run folders; bad files
fail in one line naming the file and the field."""

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from sds3d.cameras import turntable_cameras
from sds3d.errors import InputError
from sds3d.representations import Gaussians, GaussiansConfig
from sds3d.representations.mesh import Mesh
from sds3d.representations.spherical_harmonics import C0
from sds3d.scene.load import load_asset, ply_kind

# the vertex properties of a 3DGS PLY as the original code, gsplat and splatfacto write them
BASE = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
TAIL = ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def splat_ply(path, n=16, degree=0, text=False, byte_order="<", drop=(), bad=None, rest=None):
    """A foreign 3DGS PLY with known values; `drop` removes properties, `bad` = (name, value) sets one
    entry, `rest` overrides the number of f_rest properties."""
    k = 3 * ((degree + 1) ** 2 - 1) if rest is None else rest
    names = [name for name in BASE + [f"f_rest_{i}" for i in range(k)] + TAIL if name not in drop]
    data = np.zeros(n, dtype=[(name, "f4") for name in names])
    rng = np.random.default_rng(1)
    for name in names:
        data[name] = rng.normal(size=n)
    if bad is not None:
        data[bad[0]][n // 2] = bad[1]
    PlyData([PlyElement.describe(data, "vertex")], text=text, byte_order=byte_order).write(str(path))
    return data


@pytest.mark.parametrize("degree,text,byte_order", [(0, False, "<"), (1, True, "="), (2, False, ">"), (3, False, "<")])
def test_foreign_3dgs_plys_load_as_gaussians(tmp_path, degree, text, byte_order):
    path = tmp_path / "scene.ply"
    data = splat_ply(path, degree=degree, text=text, byte_order=byte_order)
    assert ply_kind(path) == "gaussians"
    asset = load_asset(path, up="+z")
    assert isinstance(asset, Gaussians) and asset.config.sh_degree == degree and len(asset) == 16
    torch.testing.assert_close(asset.means.detach(), torch.from_numpy(np.stack([data[a] for a in "xyz"], 1)))
    torch.testing.assert_close(asset.params["opacities"].detach(), torch.from_numpy(data["opacity"]))
    out = asset.render(turntable_cameras(1, width=16))
    assert torch.isfinite(out.rgb).all() and out.alpha.max() > 0


@pytest.mark.parametrize("drop", ["x", "z", "opacity", "scale_2", "rot_0", "rot_3", "f_dc_0", "f_dc_2"])
def test_a_missing_required_property_is_one_line_naming_it(tmp_path, drop):
    path = tmp_path / "missing.ply"
    splat_ply(path, degree=1, drop=(drop,))
    with pytest.raises(InputError) as error:
        load_asset(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and repr(drop) in message


@pytest.mark.parametrize("name,value", [("x", np.nan), ("opacity", np.inf), ("scale_1", -np.inf), ("rot_2", np.nan),
                                        ("f_dc_1", np.nan), ("f_rest_4", np.nan)])
def test_nan_or_infinite_values_are_one_line_naming_the_property(tmp_path, name, value):
    path = tmp_path / "nan.ply"
    splat_ply(path, degree=1, bad=(name, value))
    with pytest.raises(InputError) as error:
        load_asset(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and repr(name) in message and "NaN or infinite" in message


@pytest.mark.parametrize("rest,field", [(5, "f_rest"), (12, "f_rest"), (44, "f_rest")])
def test_a_wrong_sh_rest_count_is_refused(tmp_path, rest, field):
    path = tmp_path / "rest.ply"
    splat_ply(path, rest=rest)
    with pytest.raises(InputError, match=f"{rest} {field} properties") as error:
        load_asset(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_f_rest_numbered_with_a_gap_names_the_missing_one(tmp_path):
    path = tmp_path / "gap.ply"
    names = BASE + [f"f_rest_{i}" for i in range(10) if i != 3] + TAIL
    PlyData([PlyElement.describe(np.zeros(4, dtype=[(n, "f4") for n in names]), "vertex")]).write(str(path))
    with pytest.raises(InputError, match="'f_rest_3' is missing"):
        load_asset(path)


def test_zero_gaussians_and_non_plys_are_refused(tmp_path):
    empty = tmp_path / "empty.ply"
    splat_ply(empty, n=0)
    with pytest.raises(InputError, match="zero Gaussians") as error:
        load_asset(empty)
    assert str(empty) in str(error.value)
    text = tmp_path / "notes.ply"
    text.write_text("hello\n")
    with pytest.raises(InputError, match="not a PLY file"):
        load_asset(text)
    points = tmp_path / "points.ply"  # a point cloud: no faces, no 3DGS properties
    PlyData([PlyElement.describe(np.zeros(5, dtype=[(a, "f4") for a in "xyz"]), "vertex")]).write(str(points))
    with pytest.raises(InputError, match="'f_dc_0'"):
        load_asset(points)
    with pytest.raises(InputError, match="unsupported file type '.txt'"):
        (tmp_path / "a.txt").write_text("x")
        load_asset(tmp_path / "a.txt")
    with pytest.raises(InputError, match="no such run directory or asset file"):
        load_asset(tmp_path / "absent.ply")


def on_surface_distance(points: np.ndarray, mesh) -> np.ndarray:
    """[P] distance of each point to the plane of the nearest face whose triangle holds its projection."""
    corners = np.asarray(mesh.vertices)[np.asarray(mesh.faces)]  # [F, 3, 3]
    a, e1, e2 = corners[:, 0], corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    normal = np.cross(e1, e2)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    best = np.full(len(points), np.inf)
    for start in range(0, len(points), 256):
        d = points[start:start + 256, None] - a[None]  # [P, F, 3]
        height = (d * normal).sum(-1)
        flat = d - height[..., None] * normal
        g11, g12, g22 = (e1 * e1).sum(-1), (e1 * e2).sum(-1), (e2 * e2).sum(-1)
        b1, b2 = (flat * e1).sum(-1), (flat * e2).sum(-1)
        det = g11 * g22 - g12 ** 2
        u, v = (g22 * b1 - g12 * b2) / det, (g11 * b2 - g12 * b1) / det
        inside = (u >= -1e-6) & (v >= -1e-6) & (u + v <= 1 + 1e-6)
        best[start:start + 256] = np.where(inside, np.abs(height), np.inf).min(1)
    return best


@pytest.fixture(scope="module")
def red_mug():
    from sds3d.world import make_object

    return make_object("mug", "red").mesh


@pytest.mark.parametrize("suffix", [".ply", ".glb", ".obj"])
def test_meshes_become_gaussians_on_their_surface_with_their_colours(tmp_path, red_mug, suffix):
    path = tmp_path / f"mug{suffix}"
    Mesh.from_trimesh(red_mug).save(path)
    if suffix == ".ply":
        assert ply_kind(path) == "mesh"
    asset = load_asset(path, num_points=1500, generator=torch.Generator().manual_seed(0))
    assert isinstance(asset, Gaussians) and len(asset) == 1500
    means = asset.means.detach().double().numpy()
    # in the world frame (GLB / OBJ were written +Y up and are read back), on the surface
    assert on_surface_distance(means, red_mug).max() < 1e-5
    # every Gaussian carries the colour of a face of the mesh (the mug's red body or its label)
    rgb = (asset.params["sh0"][:, 0].detach() * C0 + 0.5).numpy()
    palette = np.unique(np.asarray(red_mug.visual.face_colors)[:, :3], axis=0) / 255.0
    nearest = np.abs(rgb[:, None, :] - palette[None]).max(-1).min(1)
    assert nearest.max() < 2 / 255
    body = np.asarray(red_mug.visual.face_colors)[0, :3] / 255.0
    assert (np.abs(rgb - body).max(1) < 2 / 255).mean() > 0.5  # mostly red


def test_a_scene_of_textured_and_plain_coloured_parts_keeps_every_colour(tmp_path):
    """A GLB of three boxes: one textured blue, one coloured by its material's baseColorFactor only
    (red), one by vertex colours (green). Each part's Gaussians carry its colour (trimesh alone
    merges such parts into grey or black)."""
    import trimesh
    from PIL import Image
    from trimesh.visual import TextureVisuals
    from trimesh.visual.material import PBRMaterial

    def box(x):
        return trimesh.creation.box(transform=trimesh.transformations.translation_matrix([x, 0, 0]))

    textured, plain, coloured = box(-3), box(0), box(3)
    textured.visual = TextureVisuals(uv=np.full((8, 2), 0.5),
                                     material=PBRMaterial(baseColorTexture=Image.new("RGB", (4, 4), (0, 0, 255))))
    plain.visual = TextureVisuals(material=PBRMaterial(baseColorFactor=[255, 0, 0, 255]))
    coloured.visual.vertex_colors = [0, 255, 0, 255]
    path = tmp_path / "parts.glb"
    trimesh.Scene([textured, plain, coloured]).export(path)
    asset = load_asset(path, num_points=3000, generator=torch.Generator().manual_seed(0))
    rgb = (asset.params["sh0"][:, 0].detach() * C0 + 0.5).numpy()
    position = asset.means[:, 1].detach().numpy()  # the file's +x is the world's +y (+Y up)
    for low, high, colour in ((-4, -2, (0, 0, 1)), (-1, 1, (1, 0, 0)), (2, 4, (0, 1, 0))):
        part = (position > low) & (position < high)
        assert part.sum() > 500 and np.abs(rgb[part] - colour).max() < 2 / 255


def test_a_mesh_whose_triangles_have_no_area_is_one_line(tmp_path):
    path = tmp_path / "flat.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    with pytest.raises(InputError, match="no area") as error:
        load_asset(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_edit_and_feature_commands_read_what_load_asset_reads(tmp_path, red_mug):
    """`sds3d edit` starts from a mesh file as Gaussians on its surface; it, distill-features and
    select refuse a PLY of zero Gaussians in one line naming it; a PLY with faces is a mesh to them."""
    from sds3d.edit import load_source
    from sds3d.scene.load import read_asset as load_representation

    glb = tmp_path / "mug.glb"
    Mesh.from_trimesh(red_mug).save(glb)
    config, asset = load_source(glb)
    assert config is None and isinstance(asset, Gaussians) and len(asset) == 20000
    assert on_surface_distance(asset.means[:500].detach().double().numpy(), red_mug).max() < 1e-5
    empty = tmp_path / "empty.ply"
    splat_ply(empty, n=0)
    for read in (load_source, load_representation):
        with pytest.raises(InputError, match="zero Gaussians") as error:
            read(empty)
        assert str(empty) in str(error.value)
    mesh_ply = tmp_path / "mug.ply"
    Mesh.from_trimesh(red_mug).save(mesh_ply)
    assert isinstance(load_representation(mesh_ply), Mesh)


def test_a_run_folder_loads_its_representation(tmp_path):
    from sds3d.config import save_json
    from sds3d.generate import GenerateConfig

    config = GenerateConfig(representation="gaussians", gaussians=GaussiansConfig(num_points=30, sh_degree=1))
    gaussians = Gaussians.random_in_sphere(config.gaussians, torch.Generator().manual_seed(3))
    save_json(config, tmp_path / "config.json")
    torch.save({"representation": gaussians.state_dict()}, tmp_path / "checkpoint.pt")
    asset = load_asset(tmp_path)
    assert isinstance(asset, Gaussians)
    for name, value in gaussians.params.items():
        torch.testing.assert_close(asset.params[name], value)
    with pytest.raises(InputError, match="not a run directory"):
        load_asset(tmp_path / "..")
