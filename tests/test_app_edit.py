"""The web UI's Edit tab without a browser (`sds3d.app.edit_tab.EditWorkspace`): the page's finished
runs offered by label, uploads, text selection with a feature field distilled on first use, an edit
that runs to the end and offers its downloads, Stop, and one-line errors. A small two-colour mug,
a colour teacher and the exact-denoiser toy prior keep it fast."""

import json
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from feature_teachers import ColourTeacher, iou
from toy_priors import GaussianToyPrior

from sds3d.app.edit_tab import EditSession, EditWorkspace, progress_text, result_text
from sds3d.app.limits import Limits
from sds3d.app.runner import Run
from sds3d.edit import EditConfig
from sds3d.errors import InputError
from sds3d.features.distill import DistillConfig
from sds3d.features.select import HIGHLIGHT
from sds3d.generate import GenerateConfig, generate
from sds3d.representations import Gaussians
from sds3d.representations.convert import mesh_to_gaussians
from sds3d.representations.spherical_harmonics import C0
from sds3d.world import COLORS, make_object

pytestmark = pytest.mark.usefixtures("one_thread")
MEANS = {"a red mug": 0.2, "a blue mug": 0.8, "a mug with a blue handle": 0.6, "": 0.0}
RED, BLUE = COLORS["red"].rgb, COLORS["blue"].rgb


def toy_prior():
    return GaussianToyPrior(MEANS, resolution=16)


@pytest.fixture
def workspace(tmp_path):
    """A workspace on what it uses of a `Runner` (runs folder, limits, one slot, output settings), with
    the toy prior: a real Runner would load the embedded prior."""
    runner = SimpleNamespace(runs_dir=tmp_path / "runs", limits=Limits(max_steps=50),
                             slots=threading.BoundedSemaphore(1), device="cpu", turntable_frames=4,
                             turntable_resolution=32)
    runner.runs_dir.mkdir()
    base = EditConfig(resolution=16, views_per_step=2, view_dependent=False, turntable_frames=4,
                      turntable_resolution=32, device="cpu")
    return EditWorkspace(runner, teacher=ColourTeacher(), distill=DistillConfig(steps=5, views=6, resolution=32),
                         base=base, priors={"toy": toy_prior()}, evaluate=False, mesh_points=2000)


@pytest.fixture(scope="module")
def two_colour_mug():
    """(Gaussians, blue [N] bool): a red mug whose handle side (the smallest fifth of x) is blue."""
    mug = mesh_to_gaussians(make_object("mug", "red").mesh, 400, generator=torch.Generator().manual_seed(0))
    x = mug.means[:, 0].detach()
    blue = x < torch.quantile(x, 0.2)  # the handle is at -x
    with torch.no_grad():
        colours = torch.where(blue[:, None], torch.tensor(BLUE), torch.tensor(RED))
        mug.params["sh0"][:, 0] = (colours - 0.5) / C0
        mug.params["shN"].zero_()
    return mug, blue


@pytest.fixture
def uploaded(workspace, two_colour_mug, tmp_path):
    """(session, label, blue mask) of the mug uploaded as a 3DGS PLY."""
    path = two_colour_mug[0].save_ply(tmp_path / "two_colour_mug.ply")
    session = EditSession()
    asset = workspace.import_upload(session, path)
    return session, asset.label, two_colour_mug[1]


def near(image: np.ndarray, rgb, tolerance: int = 30) -> int:
    """Pixels of a uint8 image within `tolerance` of the colour rgb in [0, 1]."""
    target = np.round(np.asarray(rgb) * 255)
    return int((np.abs(image.astype(float) - target).max(-1) <= tolerance).sum())


def tinted(rgb):
    """The colour `render_highlight` gives a selected point of colour rgb."""
    return 0.35 * np.asarray(rgb) + 0.65 * np.asarray(HIGHLIGHT)


def test_finished_runs_of_the_page_are_offered_with_their_prompt(workspace):
    session = EditSession()
    run_dir = workspace.runner.runs_dir / "20261206-031500-0123456789abcdef0123456789abcdef"
    config = GenerateConfig(prompt="a red mug", steps=1, resolution=16, out=str(run_dir), turntable_frames=4,
                            turntable_resolution=32)
    run = Run(dir=run_dir, config=config, prior=toy_prior())  # as the Generate tab's Runner makes it
    workspace.remember_run(session, run)
    workspace.remember_run(session, run)  # the state fires again: noted once
    assert workspace.choices(session) == []  # not finished yet
    generate(config, prior=run.prior, progress=False)
    run.finished.set()
    (label,) = workspace.choices(session)
    assert label == "a red mug · generated 03:15:00"
    asset = workspace.asset(session, label)
    assert asset.source == run.dir and asset.source_prompt == "a red mug"
    assert workspace.choices(session) == [label]  # listed once
    for wrong in (None, "", str(run.dir)):  # a page sends labels, never paths
        with pytest.raises(InputError, match="Pick an asset|Unknown asset"):
            workspace.asset(session, wrong)


def test_an_upload_is_stored_under_a_server_name(workspace, uploaded, two_colour_mug):
    session, label, _ = uploaded
    asset = session.assets[label]
    assert label.startswith("two_colour_mug.ply · uploaded ") and asset.source_prompt == ""
    assert asset.source.name == "asset.ply" and asset.source.parent.parent == workspace.runner.runs_dir
    assert len(asset.source.parent.name) == 15 + 1 + 32
    torch.testing.assert_close(Gaussians.load_ply(asset.source).means, two_colour_mug[0].means)


def test_a_glb_upload_is_sampled_as_gaussians(workspace, tmp_path):
    path = tmp_path / "mug.glb"
    make_object("mug", "blue").mesh.export(path)
    session = EditSession()
    asset = workspace.import_upload(session, path)
    gaussians = Gaussians.load_ply(asset.source)
    assert asset.label.startswith("mug.glb · uploaded ") and len(gaussians) == 2000
    colour = (gaussians.params["sh0"][:, 0] * C0 + 0.5).median(0).values
    torch.testing.assert_close(colour, torch.tensor(BLUE), atol=0.05, rtol=0)  # the mesh's colour kept


def test_selection_distils_a_field_once_and_highlights_the_query(workspace, uploaded):
    session, label, blue = uploaded
    assert not workspace.has_features(session, label)
    mask, image = workspace.select(session, label, "the blue")
    assert (session.assets[label].source.parent / "asset_features" / "colour-teacher-d4.safetensors").is_file()
    assert iou(mask, blue) > 0.7  # measured 0.76 (all Gaussians, hidden ones included)
    assert image.dtype == np.uint8 and image.shape == (192, 4 * 192, 3)
    assert near(image, tinted(BLUE)) > 200 and near(image, tinted(RED)) == 0  # the blue handle, tinted

    session.loaded = None  # a new page would load the saved field rather than distil again
    assert workspace.has_features(session, label)
    red_mask, red_image = workspace.select(session, label, "the red")
    assert iou(red_mask, ~blue) > 0.7 and near(red_image, tinted(RED)) > near(red_image, tinted(BLUE))
    with pytest.raises(InputError, match="Type what to select"):
        workspace.select(session, label, "   ")


def test_a_field_of_another_teacher_version_is_distilled_again(workspace, uploaded):
    """After the server's teacher changes (another version of the same teacher), the saved field is
    not used: its features live in the old teacher's space. The page distils and saves a new one."""
    session, label, blue = uploaded
    workspace.select(session, label, "the blue")
    newer = ColourTeacher()
    newer.version = "newer"
    upgraded = EditWorkspace(workspace.runner, teacher=newer, distill=workspace.distill, base=workspace.base,
                             priors=workspace.priors, evaluate=False)
    session = EditSession(assets=session.assets)  # a new page
    assert not upgraded.has_features(session, label)
    mask, _ = upgraded.select(session, label, "the blue")
    assert iou(mask, blue) > 0.7
    session.loaded = None
    assert upgraded.has_features(session, label)  # saved again, with the new version


def test_an_edit_finishes_and_offers_the_edited_asset(workspace, uploaded):
    session, label, blue = uploaded
    mask, _ = workspace.select(session, label, "the blue")
    config = workspace.edit_config(session, label, "a red mug", "a mug with a blue handle", "dds", 3, 0, "toy")
    assert config.out.startswith(str(workspace.runner.runs_dir))
    job = workspace.start(session, label, config, workspace.region_mask(session, label, "the blue"), owner="page")
    assert progress_text(job).startswith("Editing") or "/3" in progress_text(job)
    assert job.finished.wait(120) and job.error is None, job.error
    assert job.step == 3
    assert [path.name for path in job.files()] == ["asset.ply", "before_after.gif", "before_after.png",
                                                   "turntable.gif", "preview.png", "metrics.json"]
    metrics = json.loads((job.dir / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["selected_gaussians"] == int(mask.sum())
    before, after = Gaussians.load_ply(session.assets[label].source), Gaussians.load_ply(job.dir / "asset.ply")
    assert torch.equal(after.params["sh0"][~mask], before.params["sh0"][~mask])  # outside the region: untouched
    assert not torch.equal(after.params["sh0"][mask], before.params["sh0"][mask])
    text = result_text(job)
    assert text.startswith("**Done: 3 steps**") and "PSNR outside the region" in text and "\n" not in text

    edited = workspace.finish(session, job)  # offered for a further edit, from its own prompt
    assert edited.label in workspace.choices(session) and edited.source == job.dir
    assert edited.source_prompt == "a mug with a blue handle"


def test_an_operators_prior_is_recorded_by_its_folder_and_runs(workspace, uploaded, tmp_path):
    session, label, _ = uploaded
    folder = tmp_path / "my_prior"
    folder.mkdir()
    workspace.runner.priors = {"toy": str(folder)}  # the allow-list: name on the page -> what was loaded
    workspace.priors["toy"].loaded_from = str(folder)
    config = workspace.edit_config(session, label, "a red mug", "a blue mug", "dds", 2, 0, "toy")
    assert config.prior == str(folder)  # config.json says which prior made the edit, as a run's does
    job = workspace.start(session, label, config, None, owner="page")
    assert job.finished.wait(120) and job.error is None, job.error


def test_stop_ends_the_edit_with_a_partial_result(workspace, uploaded):
    session, label, _ = uploaded
    config = workspace.edit_config(session, label, "a red mug", "a blue mug", "sds", 50, 0, "toy")
    job = workspace.start(session, label, config, None, owner="page")
    deadline = time.monotonic() + 60
    while job.step < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert workspace.stop("page") and not workspace.stop("another page")
    assert job.finished.wait(120) and job.error is None
    steps = job.metrics["steps"]
    assert 1 <= steps < 50 and result_text(job).startswith(f"**Stopped at step {steps}/50**")
    assert (job.dir / "asset.ply").is_file()
    assert not workspace.stop("page")  # nothing running any more


@pytest.mark.parametrize("content,name,message", [
    (b"not a ply at all", "scene.ply", "scene.ply: not a PLY file"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n", "broken.ply", "broken.ply: "),
    (b"glTF garbage", "model.glb", "model.glb"),
    (b"x", "notes.txt", "notes.txt: upload a 3DGS .ply or a .glb mesh"),
])
def test_a_bad_upload_is_one_line_naming_the_file(workspace, tmp_path, content, name, message):
    path = tmp_path / "upload_cache" / name
    path.parent.mkdir()
    path.write_bytes(content)
    session = EditSession()
    with pytest.raises(InputError) as error:
        workspace.import_upload(session, path)
    text = str(error.value)
    assert text.startswith(message) and "\n" not in text and str(tmp_path) not in text
    assert list(workspace.runner.runs_dir.iterdir()) == [] and session.assets == {}


@pytest.mark.parametrize("changes,message", [
    (dict(prompt="  "), "Type the edit prompt"),
    (dict(source_prompt=""), "Type the source prompt: what the asset shows now"),
    (dict(prompt="x" * 301), "The edit prompt is 301 characters long; the limit is 300."),
    (dict(steps=0), "Steps must be between 1 and 50, got 0."),
    (dict(steps=2.5), "Steps must be a whole number, got 2.5."),
    (dict(seed=-1), "Seed must be between 0 and 2147483647, got -1."),
    (dict(guidance="vsd"), "Unknown guidance 'vsd'; choose one of pds, dds, ssd, sds."),
    (dict(prior="/etc"), "Unknown prior '/etc'; this server offers toy."),
    (dict(label="/etc/passwd"), "Unknown asset '/etc/passwd'; pick one from the list."),
])
def test_edit_requests_outside_the_limits_are_one_line(workspace, uploaded, changes, message):
    session, label, _ = uploaded
    request = dict(label=label, source_prompt="a red mug", prompt="a blue mug", guidance="pds", steps=5, seed=0,
                   prior="toy") | changes
    with pytest.raises(InputError) as error:
        workspace.edit_config(session, **request)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert [path.name for path in workspace.runner.runs_dir.iterdir()] == [session.assets[label].source.parent.name]


def test_a_region_that_matches_nothing_names_the_best_phrases(workspace, uploaded):
    session, label, _ = uploaded
    with pytest.raises(InputError) as error:
        workspace.region_mask(session, label, "the green")
    assert str(error.value).startswith("no point matches \"the green\"") and "\n" not in str(error.value)
    assert workspace.region_mask(session, label, "  ") is None  # empty: the whole asset


def test_an_edit_waits_for_a_free_slot(workspace, uploaded):
    session, label, _ = uploaded
    config = workspace.edit_config(session, label, "a red mug", "a blue mug", "sds", 1, 0, "toy")
    with workspace.runner.slots:  # a Generate run holds the only slot
        job = workspace.start(session, label, config, None, owner="page")
        assert not job.finished.wait(1.0) and job.step == 0
    assert job.finished.wait(120) and job.error is None and job.step == 1
    with workspace.runner.slots:  # stopped while it waits: it never starts
        waiting = workspace.start(session, label, workspace.edit_config(session, label, "a red mug", "a blue mug",
                                                                         "sds", 1, 0, "toy"), None, owner="page")
        workspace.stop("page")
    assert waiting.finished.wait(60) and waiting.error == "Stopped before it started." and not waiting.dir.exists()
