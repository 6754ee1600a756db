"""Hash-grid NeRF: the volume-rendering quadrature against closed forms, empty-space skipping,
the blob's projected silhouette, analytic normals against finite differences, shading and
regularisers, a short fit, and persistence."""

import math

import pytest
import torch

from sds3d.cameras import orbit_cameras
from sds3d.representations.nerf import NeRF, NeRFConfig
from sds3d.representations.occupancy_grid import OccupancyGrid
from sds3d.representations.volume_rendering import camera_rays, ray_box, render_weights, stratified_samples

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(levels=4, max_resolution=64, log2_table_size=12, occupancy_resolution=32, samples_per_ray=48)


def blob_only(config: NeRFConfig) -> NeRF:
    """A NeRF whose density is exactly softplus(blob): the density MLP's output layer is zeroed."""
    nerf = NeRF(config, torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        nerf.density_mlp.layers[-1].weight.zero_()
        nerf.density_mlp.layers[-1].bias.zero_()
    nerf.occupancy.update(nerf.density, reset=True, jitter=False)
    return nerf


def test_weights_match_analytic_transmittance_for_constant_density():
    sigma, length, S = 1.7, 1.3, 200
    t, deltas = stratified_samples(torch.zeros(3), torch.full((3,), length), S, jitter=False)
    weights, transmittance = render_weights(torch.full((3, S), sigma), deltas)
    start = t - deltas / 2  # the bins start at i * delta
    torch.testing.assert_close(transmittance, torch.exp(-sigma * start), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights.sum(-1), torch.full((3,), 1 - math.exp(-sigma * length)), rtol=1e-5, atol=1e-6)
    random = torch.rand(50, S) * 30
    assert (render_weights(random, deltas[:1].expand(50, -1))[0].sum(-1) <= 1 + 1e-6).all()


def test_rays_and_box():
    cams = orbit_cameras(0.0, 0.0, 2.5, 40.0, 4)  # on +x looking at the origin
    origins, directions, z_per_t = camera_rays(cams)
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(1, 4, 4))
    centre = directions[0, 1:3, 1:3].mean(dim=(0, 1))  # the four rays around the principal point
    assert torch.nn.functional.normalize(centre, dim=0)[0] < -0.999
    assert (z_per_t > 0.9).all() and (z_per_t <= 1).all()
    near, far = ray_box(torch.tensor([[2.5, 0.0, 0.0]]), torch.tensor([[-1.0, 0.0, 0.0]]), 1.0)
    torch.testing.assert_close(torch.stack([near, far]).flatten(), torch.tensor([1.5, 3.5]))
    near, far = ray_box(torch.tensor([[2.5, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]]), 1.0)
    assert near >= far  # misses


def test_empty_occupancy_renders_background():
    nerf = NeRF(NeRFConfig(**SMALL)).eval()
    nerf.occupancy.occupied.zero_()
    cams = orbit_cameras(10.0, [0.0, 90.0], 2.5, 40.0, 16)
    background = torch.tensor([[0.2, 0.4, 0.6], [1.0, 0.0, 0.5]])
    with torch.no_grad():
        out = nerf.render(cams, background)
    assert (out.alpha == 0).all() and (out.depth == 0).all() and out.meta["samples"] == 0
    torch.testing.assert_close(out.rgb, background[:, None, None, :].expand(2, 16, 16, 3))


def test_blob_renders_a_disc_with_the_projected_radius():
    nerf = blob_only(NeRFConfig(samples_per_ray=128))
    d, fovy, size = 2.5, 40.0, 64
    with torch.no_grad():
        out = nerf.render(orbit_cameras(0.0, 0.0, d, fovy, size), normals=True)
    # Closest approach b* of the rays with alpha = 1/2: optical depth ln 2 through softplus(blob).
    s = torch.linspace(-1.5, 1.5, 30001, dtype=torch.float64)

    def optical_depth(b):
        r = torch.sqrt(b * b + s * s)
        return (torch.nn.functional.softplus(10 * (1 - r / 0.5)) * (s[1] - s[0])).sum().item()

    lo, hi = 0.3, 0.8
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if optical_depth(mid) > math.log(2) else (lo, mid)
    focal = 0.5 * size / math.tan(math.radians(fovy / 2))
    radius = focal * math.tan(math.asin(lo / d))  # pixels
    alpha = out.alpha[0, :, :, 0]
    assert abs((alpha > 0.5).sum().item() - math.pi * radius ** 2) < 0.03 * math.pi * radius ** 2
    row = alpha[size // 2]  # pixel centres at x + 0.5, image centre at size / 2
    i = int((row > 0.5).nonzero()[0])
    crossing = i - 0.5 + (0.5 - row[i - 1].item()) / (row[i] - row[i - 1]).item()
    assert abs((size / 2 - crossing) - radius) < 0.3
    assert d - 0.5 < out.depth[0, size // 2, size // 2, 0] < d - 0.2  # expected depth inside the front half
    around_axis = out.normal[0, size // 2 - 1: size // 2 + 1, size // 2 - 1: size // 2 + 1].sum((0, 1))
    normal = torch.nn.functional.normalize(around_axis, dim=0)
    assert normal[0] > 0.999  # the four pixels around the axis face the camera on +x


def test_blob_normals_point_outward():
    nerf = blob_only(NeRFConfig(**SMALL))
    g = torch.Generator().manual_seed(0)
    radius = 0.1 + 0.8 * torch.rand(500, 1, generator=g)
    x = torch.nn.functional.normalize(torch.randn(500, 3, generator=g), dim=-1) * radius
    _, normals, _ = nerf._evaluate(x)
    assert (normals * torch.nn.functional.normalize(x, dim=-1)).sum(-1).min() > 0.999


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_normals_are_the_negative_density_gradient(backend):
    nerf = NeRF(NeRFConfig(**SMALL, backend=backend), torch.Generator().manual_seed(0))
    with torch.no_grad():  # a hash grid that matters: large random tables
        nerf.encoding.tables.uniform_(-1, 1, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(400, 3, generator=g) * 1.2 - 0.6).double()
    eps = 1e-4
    with torch.no_grad():
        sigma = lambda p: nerf.density(p.float()).double()  # noqa: E731
        grad = torch.stack([(sigma(x + eps * e) - sigma(x - eps * e)) / (2 * eps)
                            for e in torch.eye(3, dtype=torch.float64)], dim=-1)
        _, normals, _ = nerf._evaluate(x.float())
    keep = grad.norm(dim=-1) > 1.0  # well-defined directions (the tables make sigma bumpy)
    assert keep.sum() > 100
    cosine = (normals.double()[keep] * -torch.nn.functional.normalize(grad[keep], dim=-1)).sum(-1)
    assert cosine.median() > 0.999 and (cosine > 0.95).float().mean() > 0.97


def test_shading_modes_and_regularizers():
    nerf = NeRF(NeRFConfig(**SMALL, shading_probabilities=(0.0, 0.0, 1.0)), torch.Generator().manual_seed(0))
    cams = orbit_cameras([10.0, 30.0], [0.0, 120.0], 2.5, 40.0, 16)
    out = nerf.render(cams)  # training: textureless for every view
    assert out.meta["shading"] == ["textureless", "textureless"]
    fg = out.alpha[..., 0] > 0.9
    # white albedo: grey shading composited over white stays grey, channels equal
    torch.testing.assert_close(out.rgb[fg][:, 0], out.rgb[fg][:, 2])
    assert (out.rgb[fg] >= 0.1 - 1e-4).all()  # ambient
    regs = out.meta["regularizers"]
    assert set(regs) == {"orientation", "opacity", "entropy"} and all(torch.isfinite(v) for v in regs.values())
    torch.testing.assert_close(regs["opacity"], torch.sqrt(out.alpha ** 2 + 0.01).mean())
    expected = nerf.config.orientation_weight * regs["orientation"]
    torch.testing.assert_close(out.meta["regularizer_loss"], expected)
    # the orientation loss trains the geometry through the analytic normals
    regs["orientation"].backward()
    assert nerf.encoding.tables.grad.abs().sum() > 0 and nerf.density_mlp.layers[0].weight.grad.abs().sum() > 0
    nerf.eval()
    with torch.no_grad():
        plain = nerf.render(cams)
        assert plain.meta["shading"] == ["albedo", "albedo"] and plain.normal is None
        assert nerf.render(cams, normals=True).normal.shape == (2, 16, 16, 3)


def test_chunked_no_grad_render_matches_the_grad_render():
    nerf = NeRF(NeRFConfig(**SMALL, render_chunk=100), torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        nerf.encoding.tables.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(1))
    cams = orbit_cameras(20.0, [45.0, -60.0], 2.5, 40.0, 16)
    with_grad = nerf.render(cams)
    with torch.no_grad():
        chunked = nerf.render(cams, normals=True)
    for a, b in ((with_grad.rgb, chunked.rgb), (with_grad.depth, chunked.depth), (with_grad.normal, chunked.normal)):
        torch.testing.assert_close(a.detach(), b, rtol=1e-5, atol=1e-6)


def test_trunc_exp_density():
    nerf = blob_only(NeRFConfig(**SMALL, density_activation="trunc_exp"))
    x = torch.tensor([[0.0, 0.0, 0.1], [0.0, 0.7, 0.0]])
    torch.testing.assert_close(nerf.density(x), torch.exp(10 * (1 - x.norm(dim=-1) / 0.5)))
    s = torch.tensor([1.0, 20.0], requires_grad=True)
    nerf._activate(s).sum().backward()
    torch.testing.assert_close(s.grad, torch.exp(torch.tensor([1.0, 15.0])))  # gradient clamped at exp(15)


def test_lambertian_darkens_faces_away_from_the_light():
    nerf = blob_only(NeRFConfig(**SMALL))
    with torch.no_grad():  # white albedo
        nerf.albedo_mlp.layers[-1].weight.zero_()
        nerf.albedo_mlp.layers[-1].bias.fill_(10.0)
    cams = orbit_cameras(0.0, 0.0, 2.5, 40.0, 32)
    with torch.no_grad():
        albedo = nerf.render(cams, shading="albedo").rgb
        lit = nerf.render(cams, shading="lambertian").rgb
    assert (lit <= albedo + 1e-5).all() and lit.mean() < albedo.mean()


def test_occupancy_grid_update_and_query():
    grid = OccupancyGrid(resolution=16, bound=1.0, density_threshold=0.5, decay=0.5)
    grid.update(lambda p: (p.norm(dim=-1) < 0.3).float() * 2.0, reset=True, jitter=False)
    inside, far_away = torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[0.9, 0.9, 0.9]])
    assert grid.query(inside).all() and not grid.query(far_away).any()
    assert not grid.query(torch.tensor([[1.5, 0.0, 0.0]])).any()  # outside the box
    grid.update(lambda p: torch.zeros(p.shape[0]), jitter=False)  # decays 2 -> 1 > 0.5: still occupied
    assert grid.query(inside).all()
    grid.update(lambda p: torch.zeros(p.shape[0]), jitter=False)  # 1 -> 0.5: now empty
    assert not grid.query(inside).any()


def test_after_step_refreshes_occupancy():
    nerf = NeRF(NeRFConfig(**SMALL, occupancy_update_every=2))
    with torch.no_grad():  # make everything dense: the next refresh must open up the whole grid
        nerf.density_mlp.layers[-1].bias.fill_(50.0)
    before = nerf.occupancy.occupancy
    nerf.after_step(0, None, {})
    assert nerf.occupancy.occupancy == before and int(nerf.global_step) == 1
    nerf.after_step(1, None, {})
    assert nerf.occupancy.occupancy == 1.0 > before and int(nerf.global_step) == 2


def test_native_and_reference_backends_render_the_same():
    cams = orbit_cameras(20.0, 45.0, 2.5, 40.0, 16)
    outs = []
    for backend in ("native", "reference"):
        nerf = NeRF(NeRFConfig(**SMALL, backend=backend), torch.Generator().manual_seed(0)).eval()
        with torch.no_grad():
            nerf.encoding.tables.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(1))
        torch.manual_seed(0)  # the same random light
        out = nerf.render(cams, shading="lambertian")
        out.rgb.sum().backward()
        outs.append((out.rgb.detach(), out.alpha.detach(), nerf.encoding.tables.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_a_few_steps_fit_a_target_image():
    torch.manual_seed(0)
    nerf = NeRF(NeRFConfig(**SMALL), torch.Generator().manual_seed(0))
    cams = orbit_cameras(15.0, [0.0, 90.0], 2.5, 40.0, 24)
    ys, xs = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    disc = (((xs - 11.5) ** 2 + (ys - 11.5) ** 2) < 49).float()[None, ..., None]
    target = disc * torch.tensor([0.9, 0.1, 0.1]) + (1 - disc)  # a red disc on white
    optimizers = nerf.make_optimizers()
    losses = []
    for step in range(25):
        out = nerf.render(cams, shading="albedo")
        loss = ((out.rgb - target) ** 2).mean()
        nerf.optimise(step, out, loss, optimizers)
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]


def test_state_dict_round_trip():
    config = NeRFConfig(**SMALL)
    nerf = NeRF(config, torch.Generator().manual_seed(0))
    with torch.no_grad():
        nerf.encoding.tables.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    nerf.occupancy.update(nerf.density)
    nerf.after_step(6, None, {})
    copy = NeRF(config, torch.Generator().manual_seed(5))
    copy.load_state_dict(nerf.state_dict())
    assert int(copy.global_step) == 7 and torch.equal(copy.occupancy.occupied, nerf.occupancy.occupied)
    cams = orbit_cameras(20.0, 45.0, 2.5, 40.0, 16)
    nerf.eval(), copy.eval()
    with torch.no_grad():
        assert torch.equal(nerf.render(cams).rgb, copy.render(cams).rgb)


def test_param_groups_cover_every_parameter():
    nerf = NeRF(NeRFConfig(**SMALL, lr_encoding=0.03))
    groups = nerf.param_groups()
    assert [g["name"] for g in groups] == ["encoding", "density_mlp", "albedo_mlp"] and groups[0]["lr"] == 0.03
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in nerf.parameters())
    assert 0 < nerf.stats()["occupancy"] < 1


def test_albedo_field_matches_the_rendered_albedo():
    nerf = blob_only(NeRFConfig(**SMALL))
    with torch.no_grad():
        nerf.albedo_mlp.layers[-1].weight.zero_()
        nerf.albedo_mlp.layers[-1].bias.copy_(torch.tensor([2.0, -1.0, 0.0]))
        colour = torch.sigmoid(torch.tensor([2.0, -1.0, 0.0]))
        torch.testing.assert_close(nerf.albedo(torch.rand(10, 3) - 0.5), colour.expand(10, 3))
        out = nerf.render(orbit_cameras(0.0, 0.0, 2.5, 40.0, 16), torch.zeros(3))
    torch.testing.assert_close(out.rgb, out.alpha * colour)  # over black: albedo times alpha
