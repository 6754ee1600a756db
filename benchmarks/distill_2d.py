"""Score distillation on one image, no 3D: does a guidance variant's update, applied straight to a
32x32 front view, end at the prompt? Seconds to minutes per prompt. Without the multi-view averaging of
a 3D run it is stricter than 3D: ISM and TSM texture one image and still pass in 3D
(docs/notes/2026-12-05-guidance-probes.md#sdi-on-one-image-and-the-dsd-row), so a failure here is a lead, not a verdict.

    python benchmarks/distill_2d.py [--guidance sds,sdi] [--kinds chair,cube] [--steps 300] [--lr 0.05]
                                    [--set key=value ...] [--label NAME] [--out runs/distill_2d] [--threads 1]

The image is sigmoid(logits) [1, 32, 32, 3], logits ~ N(0, 0.5^2) per pixel (seed 0): per-pixel colour
noise, as a fresh cloud of random-coloured Gaussians renders. Each step calls the variant as the
generation loop does (its own schedules over `--steps`, view-dependent prompts for azimuth 0 and
elevation 15, alpha 1), and Adam steps the logits; the loop's alpha and colour regularisers do not
apply. The evaluator then names the final image's kind and colour, and `roughness` measures texture
the prompt does not ask for: the rms difference between the image and its 3x3 box blur (per channel,
values in [0, 1]; the 28 true objects' front views give 0.02-0.09, mean 0.06).

Writes `<out>/<label>_<guidance>.png` (the prompts' final images side by side, 4x nearest) and prints one
JSON line per prompt, then {"rows": [{label, guidance, prompt, kind, color, kind_ok, color_ok, roughness}]}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sds3d.cameras import orbit_cameras
from sds3d.config import apply_override
from sds3d.generate import GenerateConfig, make_guidance
from sds3d.guidance.registry import load_prior
from sds3d.prompts import PromptConfig, PromptProcessor
from sds3d.turntable import save_png
from sds3d.types import RenderOutput
from sds3d.world import parse_prompt
from sds3d.world.evaluator import Evaluator

from text_to_3d import suite

# CFD attaches its noise to the rendered surface (depth), which one flat image does not have.
NEEDS_A_SURFACE = {"cfd"}


def roughness(images: torch.Tensor) -> float:
    """rms of images [B, 3, H, W] in [0, 1] minus their 3x3 box blur (edges replicated)."""
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (images - blurred).pow(2).mean().sqrt().item()


def distill(config: GenerateConfig, prior, lr: float) -> torch.Tensor:
    """The image [1, 3, 32, 32] in [0, 1] after `config.steps` Adam steps on the variant's loss."""
    guidance = make_guidance(config, prior)
    processor = PromptProcessor(prior, PromptConfig(config.prompt, config.negative_prompt, config.view_dependent))
    cameras = orbit_cameras(torch.tensor([15.0]), torch.tensor([0.0]), 2.5, 40.0, prior.resolution)
    prompts = processor(cameras)  # one camera throughout: its view-dependent embeddings once
    generator = torch.Generator().manual_seed(config.seed)
    size = prior.resolution
    logits = (0.5 * torch.randn(1, size, size, 3, generator=generator)).requires_grad_()
    optimizer = torch.optim.Adam([logits], lr=lr)
    for step in range(config.steps):
        rgb = torch.sigmoid(logits)
        alpha = torch.ones_like(rgb[..., :1])
        render = RenderOutput(rgb=rgb, alpha=alpha, depth=torch.zeros_like(alpha))
        loss = guidance(render, prompts, cameras, step, generator).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.sigmoid(logits).detach().permute(0, 3, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guidance", default="sds,sdi")
    parser.add_argument("--kinds", default="chair,cube")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--label", default="defaults", help="names the pictures and the rows")
    parser.add_argument("--out", default="runs/distill_2d")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    names = [n.strip() for n in args.guidance.split(",") if n.strip()]
    if NEEDS_A_SURFACE & set(names):
        parser.error(f"{', '.join(sorted(NEEDS_A_SURFACE & set(names)))}: its noise lives on a 3D surface; "
                     "no image-only form")
    torch.set_num_threads(args.threads)
    prior, evaluator = load_prior("embedded"), Evaluator.load()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        pictures = []
        for prompt in suite(args.kinds):
            config = GenerateConfig(prompt=prompt, guidance=name, prior="embedded", steps=args.steps)
            for assignment in args.set:
                config = apply_override(config, assignment)
            image = distill(config, prior, args.lr)
            kind, color, _ = parse_prompt(prompt)
            predicted = evaluator.predict(image)
            row = {"label": args.label, "guidance": name, "prompt": prompt,
                   "kind": predicted["kind"][0], "color": predicted["color"][0],
                   "kind_ok": predicted["kind"][0] == kind, "color_ok": predicted["color"][0] == color,
                   "roughness": roughness(image)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            pictures.append((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        strip = np.concatenate(pictures, axis=1).repeat(4, axis=0).repeat(4, axis=1)
        save_png(strip, out / f"{args.label}_{name}.png")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
