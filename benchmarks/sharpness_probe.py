"""Does a guidance variant prefer the true object to a blurred or speckled copy of it? A cheap check,
no 3D run.

    python benchmarks/sharpness_probe.py [--guidance sds,sdi] [--kinds chair,airplane] [--set key=value ...]
                                         [--timesteps 300,500,700] [--draws 4] [--perturbation blur|speckle]
                                         [--threads 2]

For each prompt of the suite (`--kinds`), the true object is rendered from 4 azimuths (elevation 15,
32x32, the prior's resolution) and perturbed: `blur` applies a 5x5 binomial filter 2 and 4 times,
`speckle` adds per-pixel colour noise of std 0.1 and 0.2 on the object (what Gaussians with
independent colours drift into). At each fixed timestep t (CDS: its t_n) the variant's gradient on the
render, g = d loss / d rgb through its ordinary call (view-dependent prompts, its own CFG), is averaged
over `--draws` generator seeds, and the probe prints, for the perturbation d = perturbed - truth:
- ratio = rms(g on the perturbed copy) / rms(g on the truth). Above 1 the variant pushes the perturbed
  copy harder than the truth, as a fixed point of its update should be the true object; at or below 1
  a blob is as stable as the object, and runs end in blobs.
- restore = <g(perturbed) - g(truth), d> / <d, d> (mean gradients): a descent step rgb -= lr g removes
  lr * restore of the perturbation. Compare it with `push` = rms of a single call's g on the truth:
  what one step does to an object that is already right (for SDS mostly its noise term; for the
  fixed-noise variants CDS and DSD a pattern tied to the screen). Views are random, so to a surface
  point the push is random; `restore / push` small means colour noise builds up faster than it is
  removed, and Gaussians, whose colours are independent, end speckled.
Last line JSON: {"rows": [{guidance, prompt, perturbation, strength, t, ratio, restore, push}, ...]}.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from sds3d.cameras import orbit_cameras
from sds3d.config import apply_override
from sds3d.generate import GenerateConfig, make_guidance
from sds3d.guidance.registry import GUIDANCE, load_prior
from sds3d.presets import apply_preset
from sds3d.prompts import PromptConfig, PromptProcessor
from sds3d.types import RenderOutput
from sds3d.world import parse_prompt
from sds3d.world.dataset import render_views

from text_to_3d import suite

AZIMUTHS = (0.0, 90.0, 180.0, 270.0)


def blurred(images: torch.Tensor, passes: int) -> torch.Tensor:
    """[B, 3, H, W] -> the same after `passes` 5x5 binomial filters (edges replicated)."""
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    kernel = (taps[:, None] * taps[None]) / 256
    for _ in range(passes):
        images = F.conv2d(F.pad(images, (2, 2, 2, 2), mode="replicate"), kernel.expand(3, 1, 5, 5), groups=3)
    return images


def speckled(images: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    """[B, 3, H, W] on a white background -> the same plus per-pixel colour noise N(0, std^2) on the object."""
    on_object = (images < 0.98).any(1, keepdim=True).float()
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return images + std * noise * on_object


PERTURBATIONS = {"blur": ((2, 4), blurred), "speckle": ((0.1, 0.2), speckled)}


def pinned_schedule(name: str) -> str:
    """The config field of the variant's timestep schedule: CDS draws t from t_n, the others `timesteps`."""
    return "t_n" if name == "cds" else "timesteps"


def render_gradient(guidance, images: torch.Tensor, prompts, cameras, generator: torch.Generator) -> torch.Tensor:
    """d loss / d rgb [B, H, W, 3] of one guidance call on fixed images [B, 3, H, W]."""
    rgb = images.permute(0, 2, 3, 1).clone().requires_grad_()
    alpha = torch.ones_like(rgb[..., :1])
    render = RenderOutput(rgb=rgb, alpha=alpha, depth=torch.zeros_like(alpha))
    guidance(render, prompts(cameras), cameras, 0, generator).loss.backward()
    return rgb.grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guidance", default="sds,sdi")
    parser.add_argument("--kinds", default="chair,airplane")
    parser.add_argument("--timesteps", default="300,500,700")
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--perturbation", choices=sorted(PERTURBATIONS), default="blur")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    names = [n.strip() for n in args.guidance.split(",") if n.strip()]
    pinnable = [n for n in GUIDANCE if hasattr(getattr(GenerateConfig(), n), pinned_schedule(n))]
    if set(names) - set(pinnable):
        parser.error(f"{', '.join(sorted(set(names) - set(pinnable)))}: no timestep schedule to pin to t; "
                     f"choose from {', '.join(pinnable)}")
    strengths, perturb = PERTURBATIONS[args.perturbation]
    torch.set_num_threads(args.threads)
    prior = load_prior("embedded")
    resolution = prior.resolution
    cameras = orbit_cameras(15.0, torch.tensor(AZIMUTHS), 2.5, 40.0, resolution)
    rows = []
    for prompt in suite(args.kinds):
        kind, color, _ = parse_prompt(prompt)
        truth = render_views(kind, color, [15.0] * 4, list(AZIMUTHS), [2.5] * 4, [40.0] * 4, resolution=resolution)
        defaults = GenerateConfig(prompt=prompt)
        prompts = PromptProcessor(prior, PromptConfig(prompt, defaults.negative_prompt, defaults.view_dependent))
        for name in names:
            for t in [int(v) for v in args.timesteps.split(",")]:
                config = apply_preset(GenerateConfig(prompt=prompt, guidance=name), "v1")  # the prior loaded above
                for assignment in args.set:
                    config = apply_override(config, assignment)
                for key, value in (("kind", "random"), ("min_step_percent", t / 1000), ("max_step_percent", t / 1000)):
                    config = apply_override(config, f"{name}.{pinned_schedule(name)}.{key}={json.dumps(value)}")
                guidance = make_guidance(config, prior)

                def gradients(images):  # [draws, B, 3, H, W]
                    grads = [render_gradient(guidance, images, prompts, cameras, torch.Generator().manual_seed(k))
                             for k in range(args.draws)]
                    return torch.stack(grads).permute(0, 1, 4, 2, 3)

                def rms(x):
                    return x.pow(2).mean().sqrt().item()

                draws = gradients(truth)
                reference, push = draws.mean(0), rms(draws)
                for strength in strengths:
                    perturbed = perturb(truth, strength)
                    g, d = gradients(perturbed).mean(0), perturbed - truth
                    row = {"guidance": name, "prompt": prompt, "perturbation": args.perturbation,
                           "strength": strength, "t": t, "ratio": rms(g) / rms(reference),
                           "restore": ((g - reference) * d).sum().item() / d.pow(2).sum().item(), "push": push}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
