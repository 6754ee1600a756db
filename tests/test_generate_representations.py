"""The generation loop with NeRF and DMTet meshes: assets, exact resume, coarse -> fine stages, export."""

import json
from functools import partial

import pytest
import torch
from test_generate import prior, tiny_config
from toy_priors import GaussianToyPrior

from sds3d.cli import main
from sds3d.evaluate import chamfer_distance
from sds3d.generate import generate, load_run
from sds3d.representations import DMTet, DMTetConfig, Gaussians, NeRF, NeRFConfig
from sds3d.representations.convert import initialise_from


@pytest.fixture(autouse=True)
def small_textures(monkeypatch):
    """A run's asset export bakes a 64-texel texture instead of 1024: the same unwrap, bake and write
    (tests/test_mesh_export.py checks the baked colours at larger sizes) for ~1/250 of the texels,
    which otherwise were most of a 4-step DMTet run's time (3.5 of 4.3 s)."""
    from sds3d import export

    monkeypatch.setattr(export, "export_textured", partial(export.export_textured, texture_size=64))


def small(out, representation, **changes):
    return tiny_config(out, representation=representation, steps=4, checkpoint_every=2, preview_every=0,
                       nerf=NeRFConfig(levels=4, log2_table_size=12, max_resolution=64, samples_per_ray=24,
                                       occupancy_resolution=16),
                       dmtet=DMTetConfig(resolution=12), **changes)


def state(representation):
    return {k: v.detach().clone() for k, v in representation.state_dict().items() if torch.is_tensor(v)}


@pytest.mark.parametrize("name, cls", [pytest.param("nerf", NeRF, marks=pytest.mark.slow), ("dmtet", DMTet)])  # nerf: 6 s
def test_representation_runs_and_writes_a_textured_glb(tmp_path, name, cls):
    import trimesh

    result = generate(small(tmp_path, name), prior=prior(), progress=False)
    assert isinstance(result.representation, cls) and result.metrics["asset"] == "asset.glb"
    assert torch.isfinite(torch.tensor(result.metrics["final_loss"]))
    mesh = trimesh.load(tmp_path / "asset.glb", force="mesh")
    assert len(mesh.faces) > 0 and mesh.visual.uv is not None and mesh.visual.material.baseColorTexture is not None
    for picture in ("turntable.gif", "preview.png"):
        assert (tmp_path / picture).exists()
    config, restored = load_run(tmp_path)
    assert config.representation == name and torch.equal(
        next(iter(state(restored).values())), next(iter(state(result.representation).values())))


@pytest.mark.parametrize("name", [pytest.param("nerf", marks=pytest.mark.slow), "dmtet"])  # nerf: 11 s
def test_crash_and_resume_equals_uninterrupted(tmp_path, name):
    reference = state(generate(small(tmp_path / "ref", name), prior=prior(), progress=False).representation)

    def crash(step, logs, output):
        if step == 3:  # after the checkpoint at 2 steps
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(small(tmp_path / "run", name), prior=prior(), progress=False, callback=crash)
    resumed = state(generate(small(tmp_path / "run", name), prior=prior(), progress=False, resume=True).representation)
    assert reference.keys() == resumed.keys()
    for key in reference:
        assert torch.equal(reference[key], resumed[key]), key


def test_coarse_gaussians_initialise_a_dmtet_with_the_same_surface(monkeypatch):
    from sds3d.representations import dmtet as dmtet_module
    from sds3d.representations.convert import mesh_to_gaussians
    from sds3d.world import make_object

    # The surface is what is checked here; the colour fit (300 steps by default, most of the time) is
    # checked by tests/test_convert.py::test_mesh_to_dmtet_matches_the_surface_and_its_colours.
    monkeypatch.setattr(dmtet_module, "mesh_to_dmtet", partial(dmtet_module.mesh_to_dmtet, color_steps=10))
    coarse = mesh_to_gaussians(make_object("mug", "red").mesh, num_points=4000,
                               generator=torch.Generator().manual_seed(0))
    dmtet = initialise_from(coarse, "dmtet", DMTetConfig(resolution=24), torch.Generator().manual_seed(0))
    assert isinstance(dmtet, DMTet)
    # The coarse surface, meshed independently of the conversion's own 128^3 meshing on a 64^3 grid
    # (spacing 0.019, 1/5 of the cost): measured 0.028 from the DMTet's (0.020 at 128^3), 0.44 for a cube.
    source = coarse.to_mesh(resolution=64).vertices.detach().numpy()
    converted = dmtet.to_mesh().vertices.detach().numpy()
    assert chamfer_distance(source, converted) < 2 * dmtet.spacing  # within two grid spacings (0.1)
    gaussians = initialise_from(dmtet, "gaussians", coarse.config, torch.Generator().manual_seed(0))
    assert isinstance(gaussians, Gaussians) and len(gaussians) == coarse.config.num_points


def test_a_representation_without_a_surface_is_a_clear_error():
    faint = Gaussians(torch.zeros(1, 3), torch.zeros(1, 3), scales=torch.full((1, 3), 0.05),
                      opacities=torch.full((1,), 0.2))
    with pytest.raises(ValueError, match="no surface"):
        faint.to_mesh()  # its density peaks at 0.2, below the surface level 0.5


@pytest.mark.slow  # 20 s: NeRF then DMTet through the CLI, with textured exports
def test_cli_two_stage_run_and_exports(tmp_path, capsys, monkeypatch):
    import trimesh

    from sds3d.guidance import registry

    monkeypatch.setattr(registry, "load_prior", lambda spec, device="cpu": GaussianToyPrior({}, resolution=16))
    generate(tiny_config(tmp_path / "coarse", steps=2), prior=prior(), progress=False)
    settings = ["--set", "resolution=16", "--set", "views_per_step=1", "--set", "turntable_frames=2",
                "--set", "turntable_resolution=16", "--set", "dmtet.resolution=12", "--quiet"]
    assert main(["generate", "a red mug", "--representation", "dmtet", "--init-from", str(tmp_path / "coarse"),
                 "--steps", "2", "--out", str(tmp_path / "fine"), *settings]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["asset"] == "asset.glb"
    assert json.loads((tmp_path / "fine" / "config.json").read_text())["init_from"] == str(tmp_path / "coarse")
    assert main(["export", str(tmp_path / "coarse"), "--out", str(tmp_path / "coarse.glb")]) == 0
    assert trimesh.load(tmp_path / "coarse.glb", force="mesh").visual.uv is not None
    assert main(["export", str(tmp_path / "fine"), "--out", str(tmp_path / "fine.obj")]) == 0
    assert (tmp_path / "fine.mtl").exists() and (tmp_path / "fine.png").exists()
    capsys.readouterr()
    assert main(["export", str(tmp_path / "fine"), "--out", str(tmp_path / "fine.ply")]) == 2
    assert "not 3D Gaussians" in capsys.readouterr().err
    assert main(["generate", "a red mug", "--init-from", str(tmp_path / "nowhere"), *settings]) == 2


@pytest.mark.slow  # 8 s: compatibility with runs made before the rename
def test_a_run_of_the_old_name_mesh_still_loads_resumes_and_renders(tmp_path, capsys, monkeypatch):
    """Runs made before DMTet got its name hold representation "mesh" and a "mesh" section in
    config.json; they are read as "dmtet" (a resume with the same settings is accepted, its
    config.json is rewritten with the new name) and the CLI's --representation mesh is dmtet."""
    from sds3d.guidance import registry

    monkeypatch.setattr(registry, "load_prior", lambda spec, device="cpu": prior())
    run = tmp_path / "run"
    first = generate(small(run, "dmtet"), prior=prior(), progress=False).representation
    written = json.loads((run / "config.json").read_text())
    written["representation"], written["mesh"] = "mesh", written.pop("dmtet")
    (run / "config.json").write_text(json.dumps(written))
    config, loaded = load_run(run)
    assert (config.representation, config.dmtet.resolution) == ("dmtet", 12) and isinstance(loaded, DMTet)
    assert torch.equal(loaded.sdf, first.sdf)
    assert main(["render", str(run), "--frames", "2", "--resolution", "16", "--out", str(tmp_path / "t.gif")]) == 0
    assert main(["generate", "--out", str(run), "--resume", "--steps", "5", "--quiet"]) == 0
    resumed = json.loads((run / "config.json").read_text())
    assert (resumed["representation"], resumed["steps"], "mesh" in resumed) == ("dmtet", 5, False)
    args = ["generate", "a red mug", "--representation", "mesh", "--set", "mesh.resolution=8", "--steps", "1",
            "--out", str(tmp_path / "new"), "--quiet"]
    assert main([*args, "--set", "resolution=16", "--set", "views_per_step=1", "--set", "turntable_frames=2",
                 "--set", "turntable_resolution=16"]) == 0
    new = json.loads((tmp_path / "new" / "config.json").read_text())
    assert (new["representation"], new["dmtet"]["resolution"]) == ("dmtet", 8)


@pytest.mark.parametrize("name", [pytest.param("nerf", marks=pytest.mark.slow), "dmtet"])  # nerf: 6 s
def test_cds_colour_smoothness_is_a_no_op_for_fields(tmp_path, name):
    """CDS weights `color_smoothness`; NeRF and DMTet colours are fields and have no such term, so the
    run goes ahead without it."""
    config = small(tmp_path, name, guidance="cds")
    assert config.cds.color_smoothness > 0
    result = generate(config, prior=prior(), progress=False)
    assert result.representation.color_smoothness_loss(0) is None
    assert torch.isfinite(torch.tensor(result.metrics["final_loss"]))
