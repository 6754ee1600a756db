"""3DGS PLY interop: what we write loads in the original 3DGS loader at SH degree 3, and foreign PLYs
(ASCII, big-endian, any SH degree, extra properties) load here; bad files fail in one line naming
the property. Also `.splat` and the compressed PLY."""

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from sds3d.axes import world_to_file
from sds3d.representations import Gaussians, GaussiansConfig
from sds3d.representations.spherical_harmonics import C0, evaluate_sh


def original_3dgs_load_ply(path, max_sh_degree: int) -> dict[str, np.ndarray]:
    """The original 3DGS `GaussianModel.load_ply` (graphdeco-inria/gaussian-splatting), reimplemented
    without its CUDA parameters: its asserts, and its arrays in its shapes."""
    plydata = PlyData.read(path)
    element = plydata.elements[0]
    xyz = np.stack((np.asarray(element["x"]), np.asarray(element["y"]), np.asarray(element["z"])), axis=1)
    opacities = np.asarray(element["opacity"])[..., np.newaxis]
    features_dc = np.zeros((xyz.shape[0], 3, 1))
    for i in range(3):
        features_dc[:, i, 0] = np.asarray(element[f"f_dc_{i}"])
    extra_f_names = [p.name for p in element.properties if p.name.startswith("f_rest_")]
    extra_f_names = sorted(extra_f_names, key=lambda x: int(x.split("_")[-1]))
    assert len(extra_f_names) == 3 * (max_sh_degree + 1) ** 2 - 3
    features_extra = np.zeros((xyz.shape[0], len(extra_f_names)))
    for idx, attr_name in enumerate(extra_f_names):
        features_extra[:, idx] = np.asarray(element[attr_name])
    features_extra = features_extra.reshape((features_extra.shape[0], 3, (max_sh_degree + 1) ** 2 - 1))
    scale_names = sorted([p.name for p in element.properties if p.name.startswith("scale_")],
                         key=lambda x: int(x.split("_")[-1]))
    scales = np.zeros((xyz.shape[0], len(scale_names)))
    for idx, attr_name in enumerate(scale_names):
        scales[:, idx] = np.asarray(element[attr_name])
    rot_names = sorted([p.name for p in element.properties if p.name.startswith("rot")],
                       key=lambda x: int(x.split("_")[-1]))
    rots = np.zeros((xyz.shape[0], len(rot_names)))
    for idx, attr_name in enumerate(rot_names):
        rots[:, idx] = np.asarray(element[attr_name])
    # the model keeps them as [N, K, 3] (transpose(1, 2) of the [N, 3, K] above)
    return {"xyz": xyz, "features_dc": features_dc.transpose(0, 2, 1), "features_rest": features_extra.transpose(0, 2, 1),
            "opacity": opacities, "scaling": scales, "rotation": rots}


def _random_gaussians(n: int, degree: int, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    gaussians = Gaussians.random_in_sphere(GaussiansConfig(num_points=n, sh_degree=degree), g)
    with torch.no_grad():
        for p in gaussians.params.values():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return gaussians


@pytest.mark.parametrize("degree", [0, 1])
def test_sh_degree_3_layout_loads_in_the_original_3dgs_loader(tmp_path, degree):
    """Written at SH degree 3 from a degree-0 or degree-1 asset: 45 f_rest properties (the missing
    bands zero) that the original loader reads into the same colours, in the file's frame."""
    gaussians = _random_gaussians(50, degree)
    path = gaussians.save_ply(tmp_path / "asset.ply", sh_degree=3)
    model = original_3dgs_load_ply(str(path), max_sh_degree=3)
    R = world_to_file("-y").float()
    np.testing.assert_allclose(model["xyz"], (gaussians.means.detach() @ R.T).numpy(), atol=1e-6)
    np.testing.assert_allclose(model["opacity"][:, 0], gaussians.params["opacities"].detach().numpy())
    np.testing.assert_allclose(model["scaling"], gaussians.params["scales"].detach().numpy())
    assert model["features_rest"].shape == (50, 15, 3)
    assert not model["features_rest"][:, (degree + 1) ** 2 - 1:].any()
    sh = torch.from_numpy(np.concatenate([model["features_dc"], model["features_rest"]], 1)).float()
    dirs = torch.randn(50, 3, generator=torch.Generator().manual_seed(5))
    ours = evaluate_sh(degree, gaussians.sh_coeffs.detach(), dirs)
    torch.testing.assert_close(evaluate_sh(3, sh, dirs @ R.T), ours, atol=1e-5, rtol=1e-5)
    # and it reads back here as the same asset (at degree 3, with zero extra bands)
    back = Gaussians.load_ply(path)
    assert back.config.sh_degree == 3
    torch.testing.assert_close(evaluate_sh(3, back.sh_coeffs.detach(), dirs), ours, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back.means, gaussians.means, atol=1e-6, rtol=0)


def _foreign_ply(path, n: int, degree: int, text: bool, byte_order: str, drop: str = "", nan: str = ""):
    """A 3DGS PLY as other tools write it (+ an unknown `filter_3D` and uchar colours), values known."""
    rng = np.random.default_rng(degree)
    names = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
             + [f"f_rest_{i}" for i in range(3 * ((degree + 1) ** 2 - 1))]
             + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "filter_3D"])
    names = [name for name in names if name != drop]
    dtype = [(name, "f4") for name in names] + [("red", "u1")]
    data = np.zeros(n, dtype=dtype)
    for name in names:
        data[name] = rng.normal(size=n).astype(np.float32)
    if nan:
        data[nan][n // 2] = np.nan
    PlyData([PlyElement.describe(data, "vertex")], text=text, byte_order=byte_order).write(str(path))
    return data


@pytest.mark.parametrize("degree,text,byte_order", [(0, True, "="), (1, False, ">"), (2, False, "<"), (3, True, "=")])
def test_foreign_plys_load_in_any_format_and_sh_degree(tmp_path, degree, text, byte_order):
    path = tmp_path / "foreign.ply"
    data = _foreign_ply(path, 20, degree, text, byte_order)
    gaussians = Gaussians.load_ply(path, up="+z")  # taken as they are
    assert gaussians.config.sh_degree == degree and gaussians.config.feature_dim == 0
    column = lambda *names: torch.from_numpy(np.stack([data[n] for n in names], 1) if names else np.zeros((20, 0), np.float32))  # noqa: E731
    torch.testing.assert_close(gaussians.means, column("x", "y", "z"))
    torch.testing.assert_close(gaussians.params["quats"], column("rot_0", "rot_1", "rot_2", "rot_3"))
    torch.testing.assert_close(gaussians.params["sh0"][:, 0], column("f_dc_0", "f_dc_1", "f_dc_2"))
    k = (degree + 1) ** 2 - 1
    rest = column(*[f"f_rest_{i}" for i in range(3 * k)]).reshape(20, 3, k).transpose(1, 2)
    torch.testing.assert_close(gaussians.params["shN"], rest)
    # without a recorded convention, a file is -y up (COLMAP scenes)
    default = Gaussians.load_ply(path)
    torch.testing.assert_close(default.means @ world_to_file("-y").float().T, column("x", "y", "z"))


def _splatfacto_ply(path, n: int, rgb: bool) -> dict[str, np.ndarray]:
    """A PLY as nerfstudio's `ns-export gaussian-splat` writes it: its header comments (the world +z
    up), zero normals, f_dc_* or (`--ply-color-mode rgb`) uchar red/green/blue, values known."""
    rng = np.random.default_rng(3)
    columns = {a: rng.normal(size=n).astype(np.float32) for a in "xyz"}
    columns.update({a: np.zeros(n, np.float32) for a in ("nx", "ny", "nz")})
    colours = ("red", "green", "blue") if rgb else ("f_dc_0", "f_dc_1", "f_dc_2")
    columns.update({c: rng.integers(0, 256, n).astype(np.uint8) if rgb else rng.normal(size=n).astype(np.float32)
                    for c in colours})
    columns.update({name: rng.normal(size=n).astype(np.float32) for name in
                    ("opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")})
    header = ["ply", "format binary_little_endian 1.0", "comment Generated by Nerstudio 1.1.5",
              "comment Vertical Axis: z", f"element vertex {n}"]
    header += [f"property {'uchar' if c.dtype == np.uint8 else 'float'} {name}" for name, c in columns.items()]
    rows = np.zeros(n, dtype=[(name, c.dtype) for name, c in columns.items()])
    for name, c in columns.items():
        rows[name] = c
    path.write_bytes(("\n".join(header + ["end_header"]) + "\n").encode() + rows.tobytes())
    return columns


@pytest.mark.parametrize("rgb", [False, True])
def test_nerfstudio_exports_load_z_up_with_their_colours(tmp_path, rgb):
    """splatfacto's world is +z up, as its header says: positions and rotations come in unturned;
    `--ply-color-mode rgb` colours become the DC term that renders them."""
    path = tmp_path / "splat.ply"
    columns = _splatfacto_ply(path, 12, rgb)
    gaussians = Gaussians.load_ply(path)
    column = lambda *names: torch.from_numpy(np.stack([columns[n] for n in names], 1))  # noqa: E731
    torch.testing.assert_close(gaussians.means, column("x", "y", "z"))
    torch.testing.assert_close(gaussians.params["quats"], column("rot_0", "rot_1", "rot_2", "rot_3"))
    rgb_seen = gaussians.params["sh0"][:, 0] * C0 + 0.5
    expected = column("red", "green", "blue").float() / 255 if rgb else column("f_dc_0", "f_dc_1", "f_dc_2") * C0 + 0.5
    torch.testing.assert_close(rgb_seen, expected)
    assert gaussians.config.sh_degree == 0


@pytest.mark.parametrize("drop,nan", [("scale_1", ""), ("rot_3", ""), ("", "opacity"), ("", "y")])
def test_a_missing_or_nan_property_is_a_one_line_error_naming_it(tmp_path, drop, nan):
    path = tmp_path / "bad.ply"
    _foreign_ply(path, 10, 1, False, "<", drop=drop, nan=nan)
    with pytest.raises(ValueError) as error:
        Gaussians.load_ply(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and repr(drop or nan) in message


def test_incomplete_sh_bands_and_non_ply_files_are_rejected(tmp_path):
    path = tmp_path / "odd.ply"
    data = np.zeros(3, dtype=[(n, "f4") for n in ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "f_rest_0", "opacity",
                                                  "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")])
    PlyData([PlyElement.describe(data, "vertex")]).write(str(path))
    with pytest.raises(ValueError, match="1 f_rest properties"):
        Gaussians.load_ply(path)
    (tmp_path / "text.ply").write_text("hello\n")
    with pytest.raises(ValueError, match="text.ply"):
        Gaussians.load_ply(tmp_path / "text.ply")


def test_splat_file_holds_32_bytes_per_splat_in_the_file_frame(tmp_path):
    gaussians = _random_gaussians(40, 0)
    path = gaussians.save_splat(tmp_path / "asset.splat")
    raw = np.frombuffer(path.read_bytes(), dtype=[("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4),
                                                   ("rotation", "u1", 4)])
    assert len(raw) == 40
    order = np.lexsort(raw["position"].T)  # the exporter sorts the splats; compare as sets
    expected = (gaussians.means.detach() @ world_to_file("-y").float().T).numpy()
    expected_order = np.lexsort(expected.T)
    np.testing.assert_allclose(raw["position"][order], expected[expected_order], atol=1e-6)
    np.testing.assert_allclose(raw["scale"][order], gaussians.scales.detach().numpy()[expected_order], rtol=1e-5)
    rgb = (gaussians.params["sh0"][:, 0].detach() * C0 + 0.5).clamp(0, 1).numpy()[expected_order]
    np.testing.assert_allclose(raw["rgba"][order, :3] / 255, rgb, atol=1 / 255 + 1e-6)
    alpha = gaussians.opacities.detach().numpy()[expected_order]
    np.testing.assert_allclose(raw["rgba"][order, 3] / 255, alpha, atol=1 / 255 + 1e-6)


def test_compressed_ply_is_a_playcanvas_chunked_ply(tmp_path):
    gaussians = _random_gaussians(300, 1)
    path = gaussians.save_splat(tmp_path / "asset.compressed.ply")
    ply = PlyData.read(str(path))
    assert ply["vertex"].count == 300 and ply["chunk"].count == 2  # 256 splats a chunk
    assert [p.name for p in ply["vertex"].properties] == ["packed_position", "packed_rotation", "packed_scale",
                                                          "packed_color"]
    low = np.stack([ply["chunk"][f"min_{a}"] for a in "xyz"], 1).min(0)
    high = np.stack([ply["chunk"][f"max_{a}"] for a in "xyz"], 1).max(0)
    means = (gaussians.means.detach() @ world_to_file("-y").float().T).numpy()
    np.testing.assert_allclose(low, means.min(0), atol=1e-6)
    np.testing.assert_allclose(high, means.max(0), atol=1e-6)
    with pytest.raises(ValueError, match=".splat or .compressed.ply"):
        gaussians.save_splat(tmp_path / "asset.ply")
