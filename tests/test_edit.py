"""The edit loop (sds3d.edit) and region restriction (guidance.edit.region) on a small Gaussian mug with
the exact-denoiser toy prior: the folder it writes, exact resume, regions that leave unselected Gaussians
bit-identical, and one-line errors for bad input."""

import copy
import json

import pytest
import torch
from toy_priors import GaussianToyPrior

from sds3d.cameras import orbit_cameras
from sds3d.edit import EditConfig, edit
from sds3d.errors import InputError
from sds3d.generate import load_run
from sds3d.guidance.edit.base import EDIT_SCORES, build_edit_score
from sds3d.guidance.edit.region import (freeze_unselected, preservation_loss, render_point_mask,
                                        restrict_to_region)
from sds3d.prompts import PromptBatch
from sds3d.representations.convert import mesh_to_gaussians
from sds3d.run_folder import ReplacedRunWarning
from sds3d.world import make_object

pytestmark = pytest.mark.usefixtures("one_thread")
MEANS = {"a red mug": 0.2, "a blue mug": 0.8, "": 0.0}


@pytest.fixture(scope="module")
def mug():
    return mesh_to_gaussians(make_object("mug", "red").mesh, 300, generator=torch.Generator().manual_seed(0))


def handle_mask(gaussians):
    """The Gaussians on the mug's handle side (its largest x), about a fifth of them."""
    x = gaussians.means[:, 0].detach()
    return x > torch.quantile(x, 0.8)


def small(out, **overrides):
    return EditConfig(out=str(out), resolution=16, views_per_step=2, view_dependent=False, checkpoint_every=2,
                      turntable_frames=4, turntable_resolution=32, device="cpu", **overrides)


def run_edit(source, out, **kwargs):
    kwargs.setdefault("guidance", "dds")
    return edit(source, "a blue mug", source_prompt=kwargs.pop("source_prompt", "a red mug"),
                config=kwargs.pop("config", None) or small(out, steps=kwargs.pop("steps", 4)),
                prior=GaussianToyPrior(MEANS, resolution=16), progress=False, evaluate=False, **kwargs)


def cameras(n=3, size=16):
    return orbit_cameras(torch.full((n,), 20.0), torch.linspace(-150, 150, n), 2.5, 40.0, size)


# ----- region restriction --------------------------------------------------------------------------

def test_dff_trick_passes_s_times_the_gradient():
    rgb = torch.rand(2, 4, 4, 3, requires_grad=True)
    soft = torch.rand(2, 4, 4, 1)
    upstream = torch.randn(2, 4, 4, 3)
    restricted = restrict_to_region(rgb, soft)
    torch.testing.assert_close(restricted, rgb.detach())
    (restricted * upstream).sum().backward()
    torch.testing.assert_close(rgb.grad, soft * upstream)


def test_preservation_loss_acts_only_outside_the_mask():
    rgb = torch.rand(2, 4, 4, 3, requires_grad=True)
    source, soft = torch.rand(2, 4, 4, 3), (torch.rand(2, 4, 4, 1) > 0.5).float()
    preservation_loss(rgb, source, soft, weight=3.0).backward()
    torch.testing.assert_close(rgb.grad, 3.0 * (1 - soft) * 2 * (rgb.detach() - source) / 2)


@pytest.mark.parametrize("name", sorted(EDIT_SCORES))
def test_an_empty_region_moves_no_parameter(mug, name):
    gaussians = copy.deepcopy(mug)
    prior = GaussianToyPrior(MEANS, resolution=16)
    cams = cameras()
    empty = torch.zeros(len(gaussians), dtype=torch.bool)
    with torch.no_grad():
        source = gaussians.render(cams)
    output = gaussians.render(cams)
    soft = render_point_mask(gaussians, cams, empty)
    assert torch.equal(soft, torch.zeros_like(soft))
    n = len(cams)

    def batch(text):
        return PromptBatch(cond=prior.encode_prompts([text] * n), uncond=prior.encode_prompts([""] * n),
                           texts=[text] * n, views=["any"] * n)

    guided = build_edit_score(name, prior)(
        type(output)(rgb=restrict_to_region(output.rgb, soft), alpha=output.alpha, depth=output.depth), source,
        batch("a blue mug"), batch("a red mug"), 0, torch.Generator().manual_seed(0))
    (guided.loss + preservation_loss(output.rgb, source.rgb, soft, 1.0)).backward()
    for key, param in gaussians.params.items():
        assert param.grad is None or torch.equal(param.grad, torch.zeros_like(param.grad)), key


def test_gradients_reach_only_selected_gaussians(mug):
    gaussians = copy.deepcopy(mug)
    mask = handle_mask(gaussians)
    handles = freeze_unselected(gaussians, mask)
    cams = cameras()
    soft = render_point_mask(gaussians, cams, mask)
    assert 0 < soft.mean() < 0.5 and soft.max() > 0.9
    rgb = gaussians.render(cams).rgb
    (restrict_to_region(rgb, soft) ** 2).sum().backward()
    for key in ("means", "sh0", "opacities", "scales"):
        grad = gaussians.params[key].grad
        assert torch.equal(grad[~mask], torch.zeros_like(grad[~mask])), key
        assert grad[mask].abs().sum() > 0, key
    for handle in handles:
        handle.remove()


# ----- the loop --------------------------------------------------------------------------------------

def test_edit_writes_a_run_folder_that_loads_back(mug, tmp_path):
    result = run_edit(mug, tmp_path / "edit")
    out = tmp_path / "edit"
    for name in ("asset.ply", "config.json", "edit.json", "checkpoint.pt", "metrics.json", "metrics.csv",
                 "turntable.gif", "preview.png", "before_after.gif", "before_after.png"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["guidance"] == "dds" and metrics["source_prompt"] == "a red mug"
    assert 0 < metrics["chamfer_to_source"] < 0.05
    config, loaded = load_run(out)
    assert config.prompt == "a blue mug"
    for key, value in result.representation.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not torch.equal(result.representation.params["sh0"], mug.params["sh0"])  # it did edit
    assert torch.equal(result.source.params["sh0"], mug.params["sh0"])  # and left the source alone


def test_resume_is_bit_identical_to_an_uninterrupted_edit(mug, tmp_path):
    mask = handle_mask(mug)
    whole = run_edit(mug, tmp_path / "whole", guidance="pds", region_mask=mask,
                     config=small(tmp_path / "whole", steps=5))
    stops = iter([False, False, True])
    run_edit(mug, tmp_path / "part", guidance="pds", region_mask=mask, config=small(tmp_path / "part", steps=5),
             should_stop=lambda: next(stops))
    assert torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["step"] == 3
    resumed = run_edit(mug, tmp_path / "part", guidance="pds", config=small(tmp_path / "part", steps=5), resume=True)
    for key, value in whole.representation.state_dict().items():
        assert torch.equal(resumed.representation.state_dict()[key], value), key
    assert torch.equal(resumed.point_mask, mask)


def test_a_region_keeps_unselected_gaussians_bit_identical(mug, tmp_path):
    mask = handle_mask(mug)
    result = run_edit(mug, tmp_path / "region", guidance="sds", region_mask=mask, steps=4)
    changed = torch.zeros(len(mug), dtype=torch.bool)
    for key, value in result.representation.params.items():
        if value.numel():
            assert torch.equal(value[~mask], mug.params[key][~mask]), key
            changed |= (value != mug.params[key]).reshape(len(mug), -1).any(dim=1)
    assert changed[mask].float().mean() > 0.5 and not changed[~mask].any()
    assert result.metrics["selected_gaussians"] == int(mask.sum()) and result.metrics["outside_psnr_db"] > 30


def test_bad_library_input_is_one_line_and_writes_nothing(mug, tmp_path):
    out = tmp_path / "bad"
    cases = [
        (dict(region_mask=torch.zeros(5, dtype=torch.bool)), "one entry per Gaussian"),
        (dict(region_mask=torch.zeros(len(mug), dtype=torch.bool)), "selects no Gaussian"),
        (dict(source_prompt=""), "give --source-prompt"),
        (dict(guidance="magic"), "unknown editing guidance 'magic'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InputError, match=message) as error:
            run_edit(mug, out, **kwargs)
        assert "\n" not in str(error.value)
    assert not out.exists()
    run_edit(mug, out, steps=2)
    with pytest.raises(InputError, match="differs from its edit.json in guidance"):
        run_edit(mug, out, guidance="ssd", config=small(out, steps=4), resume=True)
    with pytest.warns(ReplacedRunWarning, match="held a finished run of 'a blue mug': replaced"):
        run_edit(mug, out, guidance="ssd", steps=2)  # a fresh edit, not a resume: the earlier one goes


@pytest.mark.parametrize("args, message", [
    (["edit", "{tmp}/missing", "--prompt", "a blue mug"], "no such run directory"),
    (["edit", "{tmp}", "--prompt", "a blue mug", "--guidance", "magic"], "invalid choice: 'magic'"),
    (["edit", "{tmp}", "--prompt", "   "], "the edit prompt is empty"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    from sds3d.cli import main

    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and len(captured.err.strip().splitlines()) == 1 and not captured.out


def test_cli_guidance_choices_are_the_registry():
    from sds3d.commands.edit import GUIDANCES

    assert set(GUIDANCES) == set(EDIT_SCORES)


def test_a_run_folder_is_edited_from_its_own_prompt(mug, tmp_path):
    run_edit(mug, tmp_path / "first", steps=2)  # a run folder whose prompt is "a blue mug"
    again = edit(tmp_path / "first", "a red mug", config=small(tmp_path / "second", steps=2),
                 prior=GaussianToyPrior(MEANS, resolution=16), progress=False, evaluate=False)
    assert again.metrics["source_prompt"] == "a blue mug" and again.metrics["prompt"] == "a red mug"
    with pytest.raises(InputError, match="is the source run itself"):
        edit(tmp_path / "first", "a red mug", config=small(tmp_path / "first", steps=2), prior=GaussianToyPrior(MEANS))
    assert json.loads((tmp_path / "second" / "edit.json").read_text())["source_prompt"] == "a blue mug"


@pytest.mark.slow
def test_a_nerf_is_edited_globally_and_loads_back(tmp_path):
    from sds3d.representations import NeRF, NeRFConfig

    nerf = NeRF(NeRFConfig(), torch.Generator().manual_seed(0))
    result = run_edit(nerf, tmp_path / "nerf", guidance="pds", steps=2)
    config, loaded = load_run(tmp_path / "nerf")
    assert isinstance(loaded, NeRF) and (tmp_path / "nerf" / "asset.glb").is_file()
    for key, value in result.representation.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(InputError, match="region edits need 3D Gaussians"):
        run_edit(nerf, tmp_path / "nerf_region", region_mask=torch.ones(3, dtype=torch.bool))


def test_geometry_lr_scale_zero_edits_colour_only(mug, tmp_path):
    result = run_edit(mug, tmp_path / "colour", config=small(tmp_path / "colour", steps=3, geometry_lr_scale=0.0))
    for key in ("means", "scales", "quats", "opacities"):
        assert torch.equal(result.representation.params[key], mug.params[key]), key
    assert not torch.equal(result.representation.params["sh0"], mug.params["sh0"])


def test_a_text_region_on_a_mesh_file_queries_the_mesh_field_at_the_gaussians(tmp_path, monkeypatch):
    """A mesh file is edited as Gaussians on its surface while its feature field was distilled on the
    mesh: a text region selects the Gaussians where that surface field answers the query."""
    import numpy as np
    import trimesh
    from feature_teachers import ColourTeacher

    from sds3d.cli import main
    from sds3d.edit import load_source
    from sds3d.errors import load_checkpoint
    from sds3d.representations import Mesh

    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0)).subdivide().subdivide()
    blue_side = box.triangles_center[:, 0] > 0
    box.visual.face_colors = np.where(blue_side[:, None], [30, 70, 235, 255], [235, 30, 30, 255]).astype(np.uint8)
    source = tmp_path / "box.glb"
    Mesh.from_trimesh(box).save(source)
    monkeypatch.setattr("sds3d.features.load.load_feature_teacher", lambda path=None: ColourTeacher())
    assert main(["distill-features", str(source), "--steps", "30", "--dim", "4", "--views", "6",
                 "--resolution", "32", "--quiet"]) == 0
    import sds3d.features.select as select_module

    contexts, select_points = [], select_module.select_points
    monkeypatch.setattr(select_module, "select_points",
                        lambda *args, **kwargs: contexts.append(kwargs.get("context")) or select_points(*args, **kwargs))
    run_edit(source, tmp_path / "edit", region="the blue", steps=1)
    assert contexts == ["a red mug"]  # the source prompt tells the selection what the object is
    mask = load_checkpoint(tmp_path / "edit" / "checkpoint.pt")["point_mask"]
    truth = load_source(source)[1].means[:, 0].detach() > 0  # the same Gaussians (sampled with seed 0)
    assert mask.shape == truth.shape and float((mask & truth).sum() / (mask | truth).sum()) > 0.8  # 0.89 measured
