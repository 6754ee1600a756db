"""How much does a camera-conditioned prior (v2) use its camera? The epsilon loss at the true camera
against the same camera turned in azimuth.

    python benchmarks/prior_camera_use.py [--prior embedded-v2|DIR|RUN/checkpoint.pt] [--renders 128]
                                          [--turn 180] [--threads 1]

`--renders` training renders of the fronted kinds (`sds3d.world.dataset`, the prior's data), captioned
"a <colour> <kind>", are noised at t = 200, 400, 600 and 800 with one fixed noise, and denoised at their
true camera and at the camera turned by `--turn` degrees. A prior that ignores its camera scores the
same with both; the relative rise (l_turned - l_true) / l_true says how much the prediction depends on
it. A run's `checkpoint.pt` is read with its live (not EMA) weights. JSON last: losses and rises per
timestep, and per kind at t = 600.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

TIMESTEPS = (200, 400, 600, 800)


def camera_rise(unet, alphas_cumprod, x0, hidden, features, turned_features, noise, timesteps=TIMESTEPS) -> dict:
    """{t: (per-sample loss [B] at the true camera, at the turned one)}; x0, noise [B, 3, H, W] in [-1, 1],
    hidden [B, L, C], features [B, 6] (`sds3d.cameras.camera_features`)."""
    out = {}
    for t in timesteps:
        a = alphas_cumprod[t]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        steps = torch.full((x0.shape[0],), t)
        with torch.no_grad():
            out[t] = tuple((unet(x_t, steps, encoder_hidden_states=hidden, camera=c).sample - noise).pow(2)
                           .mean(dim=(1, 2, 3)) for c in (features, turned_features))
    return out


def load_unet(spec: str):
    """(unet, alphas_cumprod) of a shipped prior name, an exported folder, or a run's checkpoint.pt."""
    from sds3d.guidance.priors.embedded_prior import is_camera_conditioned, load_embedded_prior
    from sds3d.guidance.priors.prior_type import shipped_prior_dir
    from sds3d.world.train_prior import build_scheduler, unet_from_config

    if spec.endswith(".pt"):
        state = torch.load(spec, weights_only=True)
        unet = unet_from_config(state["config"])
        unet.load_state_dict(state["unet"])
        scheduler = build_scheduler(state["config"]["beta_schedule"], state["config"]["num_train_timesteps"])
    else:
        unet, scheduler = load_embedded_prior(shipped_prior_dir(spec) or spec)
    if not is_camera_conditioned(unet):
        raise SystemExit(f"{spec}: not a camera-conditioned prior (v2)")
    return unet.eval(), scheduler.alphas_cumprod.float()


def main() -> None:
    from sds3d.cameras import camera_features
    from sds3d.guidance.priors.text_encoder import get_text_encoder
    from sds3d.world import fronted_kinds
    from sds3d.world.dataset import load_or_render

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prior", default="embedded-v2")
    p.add_argument("--renders", type=int, default=128)
    p.add_argument("--turn", type=float, default=180.0, help="degrees of azimuth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    unet, alphas_cumprod = load_unet(args.prior)
    data = load_or_render("prior", 60000, 1000)
    fronted_names = set(fronted_kinds())
    fronted = [i for i, kind in enumerate(data.kinds) if kind in fronted_names]
    rng = np.random.default_rng(args.seed)
    idx = torch.as_tensor(rng.choice(np.flatnonzero(np.isin(data.kind.numpy(), fronted)), args.renders, replace=False))
    kinds = [data.kinds[int(k)] for k in data.kind[idx]]
    captions = [f"a {data.colors[int(c)]} {kind}" for kind, c in zip(kinds, data.color[idx])]
    hidden, _ = get_text_encoder()._encode_uncached(captions)
    x0 = data.float_images(idx) * 2 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(args.seed))
    true = camera_features(data.elevation[idx], data.azimuth[idx], data.radius[idx], data.fovy[idx])
    turned = camera_features(data.elevation[idx], data.azimuth[idx] + args.turn, data.radius[idx], data.fovy[idx])
    losses = camera_rise(unet, alphas_cumprod, x0, hidden, true, turned, noise)
    means = {t: (float(a.mean()), float(b.mean())) for t, (a, b) in losses.items()}
    true_600, turned_600 = losses[600]
    per_kind = {}
    for kind in sorted(set(kinds)):
        rows = [i for i, k in enumerate(kinds) if k == kind]
        per_kind[kind] = round(float(turned_600[rows].mean() / true_600[rows].mean() - 1), 3)
    print(json.dumps({"prior": args.prior, "renders": args.renders, "turn": args.turn,
                      "loss_true": {t: round(v[0], 5) for t, v in means.items()},
                      "loss_turned": {t: round(v[1], 5) for t, v in means.items()},
                      "rise": {t: round(v[1] / v[0] - 1, 3) for t, v in means.items()},
                      "rise_per_kind_t600": per_kind}))


if __name__ == "__main__":
    main()
