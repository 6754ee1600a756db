"""Does the embedded prior draw what it is asked for? Samples scored by the micro-world evaluator.

    python benchmarks/prior.py [--colors 3] [--samples 4] [--guidance-scale S] [--view-guidance-scale S_V]
                               [--steps 50] [--prior DIR] [--threads 2]

For every kind, `--colors` colours (cycled through the palette) and `--samples` samples each (DDIM,
classifier-free guidance in the diffusers convention; the default S is the library's sampling scale
`SAMPLING_GUIDANCE_SCALE`), the evaluator's kind and colour predictions
are compared with the prompt; for kinds with a front, prompts with a view word ("front view",
"side view", "back view", guided compositionally on the view phrase with `--view-guidance-scale`,
default `SAMPLING_VIEW_GUIDANCE_SCALE`; S_V = S is plain CFG) check the view. A camera-conditioned
prior (v2) is sampled at known orbit cameras instead: every sample gets a random camera, and the
fronted kinds' prompts, without view words, are drawn at cameras clearly inside the front, side or
back bin (20 degrees from its centre at most, elevation 5-30); the evaluator's view head against the
camera's true bin is `view_camera_acc`, and on the true objects rendered at the same cameras
`view_camera_ceiling`. Writes a sample grid (`--grid`) and prints JSON last:
kind_acc, color_acc, view_word_acc (v1) or view_camera_acc (v2) with its 95% Wilson score interval
(`view_interval95`: 60 view samples leave about +-0.1), view_confusion (asked-for view ->
{view read: count}), per-kind accuracies (kind; view for fronted kinds), seconds.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from tqdm import tqdm


def main() -> None:
    from sds3d.cameras import orbit_cameras
    from sds3d.guidance.priors.embedded_prior import (SAMPLING_GUIDANCE_SCALE, SAMPLING_VIEW_GUIDANCE_SCALE,
                                                      default_view_guidance_scale, is_camera_conditioned,
                                                      load_embedded_prior, sample)
    from sds3d.guidance.priors.prior_type import shipped_prior_dir
    from sds3d.guidance.priors.text_encoder import get_text_encoder
    from sds3d.turntable import image_grid, save_png
    from sds3d.world import COLORS, KINDS, canonical_caption, fronted_kinds
    from sds3d.world.evaluator import Evaluator

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--colors", type=int, default=3)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--guidance-scale", type=float, default=SAMPLING_GUIDANCE_SCALE)
    p.add_argument("--view-guidance-scale", type=float, default=None,
                   help=f"default {SAMPLING_VIEW_GUIDANCE_SCALE} on view words, S on cameras (plain CFG)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", default="runs/prior_samples.png")
    p.add_argument("--prior", default=None,
                   help="a shipped prior (embedded, embedded-v2) or a prior folder (default: embedded)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (use 1 beside another job)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    unet, scheduler = load_embedded_prior(None if args.prior is None else shipped_prior_dir(args.prior) or args.prior)
    encoder, evaluator = get_text_encoder(), Evaluator.load()
    palette = list(COLORS)
    start = time.perf_counter()
    prompts, labels = [], []
    for i, kind in enumerate(sorted(KINDS)):
        for j in range(args.colors):
            color = palette[(i + j * 3) % len(palette)]
            prompts.append(canonical_caption(kind, color))
            labels.append((kind, color, None))
    with_camera = is_camera_conditioned(unet)
    for i, kind in enumerate(fronted_kinds()):
        for view in ("front", "side", "back"):
            color = palette[i % len(palette)]
            prompts.append(canonical_caption(kind, color, None if with_camera else view))
            labels.append((kind, color, view))
    orbits = sample_orbits(labels, args.samples, np.random.default_rng(args.seed)) if with_camera else None
    cameras = None if orbits is None else orbit_cameras(*(torch.as_tensor(v, dtype=torch.float32) for v in orbits), 32)
    images = torch.cat([sample(prompts[s:s + 8], n=args.samples, guidance_scale=args.guidance_scale,
                               view_guidance_scale=args.view_guidance_scale, steps=args.steps,
                               seed=args.seed + s, unet=unet, scheduler=scheduler, text_encoder=encoder,
                               cameras=None if cameras is None else cameras[s * args.samples:(s + 8) * args.samples])
                        for s in tqdm(range(0, len(prompts), 8), desc="sampling", unit="batch of 8 prompts")])
    predicted = evaluator.predict(images)
    expanded = [label for label in labels for _ in range(args.samples)]  # sample() repeats each prompt n times
    rows = [(label, predicted["kind"][i], predicted["color"][i], predicted["view"][i])
            for i, label in enumerate(expanded)]
    plain = [r for r in rows if r[0][2] is None]
    viewed = [r for r in rows if r[0][2] is not None]
    per_kind = {kind: float(np.mean([r[1] == kind for r in plain if r[0][0] == kind])) for kind in sorted(KINDS)}
    result = {"kind_acc": float(np.mean([r[1] == r[0][0] for r in plain])),
              "color_acc": float(np.mean([r[2] == r[0][1] for r in plain])),
              ("view_camera_acc" if with_camera else "view_word_acc"): float(np.mean([r[3] == r[0][2] for r in viewed])),
              "view_interval95": wilson_interval(sum(r[3] == r[0][2] for r in viewed), len(viewed)),
              "view_confusion": view_confusion(viewed), "view_per_kind": view_per_kind(viewed), "per_kind": per_kind,
              "samples": len(rows), "guidance_scale": args.guidance_scale,
              "view_guidance_scale": args.view_guidance_scale if args.view_guidance_scale is not None else
              default_view_guidance_scale(with_camera, args.guidance_scale),
              "seconds": round(time.perf_counter() - start, 1)}
    if with_camera:
        result["view_camera_ceiling"] = ground_truth_view_accuracy(evaluator, expanded, orbits)
    n_plain = len(plain)
    grid = image_grid((images[:n_plain].permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8),
                      columns=args.colors * args.samples)
    save_png(np.kron(grid, np.ones((2, 2, 1), dtype=np.uint8)), args.grid)
    print(json.dumps(result))


def wilson_interval(successes: int, n: int, z: float = 1.96) -> list[float]:
    """[low, high] Wilson score interval of a binomial proportion (z = 1.96: 95%), rounded to 3 places."""
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [round(float(centre - half), 3), round(float(centre + half), 3)]


def view_per_kind(viewed) -> dict[str, float]:
    """Fronted kind -> the fraction of its view samples read as the asked-for view."""
    kinds = sorted({r[0][0] for r in viewed})
    return {kind: float(np.mean([r[3] == r[0][2] for r in viewed if r[0][0] == kind])) for kind in kinds}


def view_confusion(viewed) -> dict[str, dict[str, int]]:
    """Asked-for view -> {view the evaluator read: count}, over rows (label, kind, colour, view read)."""
    table: dict[str, dict[str, int]] = {}
    for (_, _, asked), _, _, read in viewed:
        row = table.setdefault(asked, {})
        row[read] = row.get(read, 0) + 1
    return table


def sample_orbits(labels, samples: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """One orbit (elevation, azimuth, radius, fovy; degrees) per sample, labels repeated `samples`
    times as `sample` orders them: random in the training ranges without a view label; inside the
    labelled bin otherwise (either side for "side"), at most 20 degrees from its centre, elevation 5-30."""
    from sds3d.views import VIEW_AZIMUTHS

    elevation, azimuth = [], []
    for _, _, view in (label for label in labels for _ in range(samples)):
        if view is None:
            elevation.append(rng.uniform(-10, 60))
            azimuth.append(rng.uniform(-180, 180))
        else:
            elevation.append(rng.uniform(5, 30))
            centre = VIEW_AZIMUTHS[view] * (rng.choice([-1, 1]) if view == "side" else 1)
            azimuth.append((centre + rng.uniform(-20, 20) + 180) % 360 - 180)
    n = len(elevation)
    return np.array(elevation), np.array(azimuth), rng.uniform(2.2, 2.8, n), rng.uniform(35, 45, n)


def ground_truth_view_accuracy(evaluator, labels, orbits) -> float:
    """The view head's accuracy on the true objects rendered at the viewed samples' cameras: the
    ceiling `view_camera_acc` is read against."""
    from sds3d.world.dataset import render_views

    hits = []
    for i, (kind, color, view) in enumerate(labels):
        if view is not None:
            image = render_views(kind, color, *(v[i:i + 1] for v in orbits))
            hits.append(evaluator.predict(image)["view"][0] == view)
    return float(np.mean(hits))


if __name__ == "__main__":
    main()
