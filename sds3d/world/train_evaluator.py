"""Train the micro-world evaluator and save it to `assets/evaluator/`.

    python -m sds3d.world.train_evaluator                     # defaults: a few minutes on 2 cores
    python -m sds3d.world.train_evaluator --out /tmp/evaluator --epochs 4

Data: `render_dataset` with the seeds SEEDS["evaluator_train"] and SEEDS["evaluator_val"] (the prior
is trained on SEEDS["prior"]; the benchmark uses SEEDS["benchmark"]). Augmentations mimic how
score-distilled assets differ from clean renders: small shifts and scales, slight blur, brightness
and per-channel gain jitter, pixel noise. Losses: cross-entropy on kind and colour for every image;
on the view bin only for kinds with a distinct front and for overhead views (elsewhere the bin is
not visible in the image). The epoch with the best validation score is saved.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

DEFAULTS = dict(n_train=20000, n_val=2000, epochs=10, batch=128, lr=2e-3, weight_decay=5e-4,
                label_smoothing=0.05, width=24, feature_dim=256, dropout=0.2, seed=0, threads=1,
                max_shift=2.0, scale_range=(0.88, 1.12), blur_prob=0.5, blur_sigma=(0.3, 0.9),
                brightness=(0.88, 1.12), channel_gain=0.04, noise_std=0.04)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image isotropic Gaussian blur, 5x5 kernel, replicate padding. x [B, C, H, W], sigma [B]."""
    B, C, H, W = x.shape
    r = torch.arange(-2, 3, dtype=x.dtype)
    k1 = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    k1 = k1 / k1.sum(-1, keepdim=True)  # [B, 5]
    k2 = k1[:, :, None] * k1[:, None, :]  # [B, 5, 5]
    weight = k2[:, None].repeat_interleave(C, 0)  # [B*C, 1, 5, 5]
    padded = F.pad(x.reshape(1, B * C, H, W), (2, 2, 2, 2), mode="replicate")
    return F.conv2d(padded, weight, groups=B * C).reshape(B, C, H, W)


def augment(x: torch.Tensor, gen: torch.Generator, cfg: dict) -> torch.Tensor:
    """x [B, 3, 32, 32] in [0, 1] (white background) -> augmented, same shape and range."""
    B, _, H, W = x.shape
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(B, generator=gen)  # noqa: E731
    scale = u(*cfg["scale_range"])
    shift = (torch.rand(B, 2, generator=gen) * 2 - 1) * cfg["max_shift"] * 2 / W  # pixels -> [-1, 1] units
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale  # sample the source at 1/scale: object grows by `scale`
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # White outside the frame: warp (x - 1) with zero padding, then add 1 back.
    x = F.grid_sample(x - 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1.0
    blur = torch.rand(B, generator=gen) < cfg["blur_prob"]
    if blur.any():
        sigma = u(*cfg["blur_sigma"])
        x = torch.where(blur[:, None, None, None], gaussian_blur(x, sigma), x)
    gain = u(*cfg["brightness"])[:, None] * (1 + (torch.rand(B, 3, generator=gen) * 2 - 1) * cfg["channel_gain"])
    x = x * gain[:, :, None, None]
    x = x + torch.randn(x.shape, generator=gen) * u(0.0, cfg["noise_std"])[:, None, None, None]
    return x.clamp(0, 1)


def view_mask(kind: torch.Tensor, view: torch.Tensor, fronted_idx: torch.Tensor, overhead_idx: int) -> torch.Tensor:
    return torch.isin(kind, fronted_idx) | (view == overhead_idx)


@torch.no_grad()
def evaluate(net, data, fronted_idx, overhead_idx, batch: int = 512) -> dict:
    net.eval()
    kind_ok = color_ok = view_ok = view_n = 0
    for i in range(0, len(data), batch):
        sl = slice(i, i + batch)
        out = net(data.float_images(sl) * 2 - 1)
        kind_ok += int((out["kind"].argmax(-1) == data.kind[sl]).sum())
        color_ok += int((out["color"].argmax(-1) == data.color[sl]).sum())
        fronted = torch.isin(data.kind[sl], fronted_idx)
        view_ok += int(((out["view"].argmax(-1) == data.view[sl]) & fronted).sum())
        view_n += int(fronted.sum())
    n = len(data)
    return {"kind_acc": kind_ok / n, "color_acc": color_ok / n, "view_acc": view_ok / max(1, view_n)}


def train(cfg: dict, out: Path, data_dir: Path | None = None) -> dict:
    from safetensors.torch import save_file

    from . import fronted_kinds
    from .dataset import SEEDS, load_or_render
    from .evaluator import Evaluator

    torch.manual_seed(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    t_start = time.time()
    train_data = load_or_render("evaluator_train", cfg["n_train"], SEEDS["evaluator_train"], data_dir)
    val_data = load_or_render("evaluator_val", cfg["n_val"], SEEDS["evaluator_val"], data_dir)
    t_data = time.time() - t_start
    kinds, colors, views = train_data.kinds, train_data.colors, train_data.views
    fronted = fronted_kinds()
    fronted_idx = torch.tensor([kinds.index(k) for k in fronted])
    overhead_idx = views.index("overhead")
    config = {"kinds": kinds, "colors": colors, "views": views, "fronted_kinds": fronted,
              "architecture": {"name": "EvaluatorNet", "width": cfg["width"], "feature_dim": cfg["feature_dim"],
                               "dropout": cfg["dropout"], "input": "[B, 3, 32, 32] in [-1, 1] (images*2-1)"}}
    net = Evaluator.build(config)
    params = sum(p.numel() for p in net.parameters())
    steps_per_epoch = math.ceil(len(train_data) / cfg["batch"])
    total = steps_per_epoch * cfg["epochs"]
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=total, pct_start=0.15)
    ce = lambda logits, y: F.cross_entropy(logits, y, label_smoothing=cfg["label_smoothing"])  # noqa: E731
    best, best_state, history = -1.0, None, []
    print(f"evaluator: {params / 1e6:.2f} M parameters, {len(train_data)} train / {len(val_data)} val images, "
          f"{cfg['epochs']} epochs x {steps_per_epoch} steps", flush=True)
    t_train = time.time()
    for epoch in range(cfg["epochs"]):
        net.train()
        order = torch.randperm(len(train_data), generator=gen)
        total_loss = 0.0
        for s in range(steps_per_epoch):
            idx = order[s * cfg["batch"]:(s + 1) * cfg["batch"]]
            x = augment(train_data.float_images(idx), gen, cfg) * 2 - 1
            k, c, v = train_data.kind[idx], train_data.color[idx], train_data.view[idx]
            out_ = net(x)
            loss = ce(out_["kind"], k) + ce(out_["color"], c)
            mask = view_mask(k, v, fronted_idx, overhead_idx)
            if mask.any():
                loss = loss + ce(out_["view"][mask], v[mask])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(loss.detach())
        metrics = evaluate(net, val_data, fronted_idx, overhead_idx)
        metrics.update(epoch=epoch + 1, loss=total_loss / steps_per_epoch, seconds=round(time.time() - t_train, 1))
        history.append(metrics)
        print(json.dumps(metrics), flush=True)
        combined = metrics["kind_acc"] + metrics["color_acc"] + metrics["view_acc"]
        if combined >= best:
            best, best_state = combined, {k: v.detach().clone() for k, v in net.state_dict().items()}
    train_seconds = time.time() - t_train
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.safetensors.tmp"
    save_file(best_state, str(tmp))
    os.replace(tmp, out / "model.safetensors")
    best_epoch = max(history, key=lambda m: m["kind_acc"] + m["color_acc"] + m["view_acc"])
    recipe = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    config["training"] = {
        "parameters": params, "train_seed": SEEDS["evaluator_train"], "val_seed": SEEDS["evaluator_val"],
        "recipe": recipe, "data_seconds": round(t_data, 1), "train_seconds": round(train_seconds, 1),
        "best_epoch": best_epoch, "command": " ".join(["python -m sds3d.world.train_evaluator", *sys.argv[1:]]),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "README.md").write_text(readme(config))
    print(f"saved evaluator to {out} (best epoch {best_epoch['epoch']}, training {train_seconds:.0f} s)", flush=True)
    return config


def readme(config: dict) -> str:
    tr = config["training"]
    r = tr["recipe"]
    b = tr["best_epoch"]
    return f"""# Micro-world evaluator

A small CNN (`sds3d.world.evaluator.EvaluatorNet`, {tr['parameters'] / 1e6:.2f} M parameters) that predicts
an object's kind ({len(config['kinds'])}), colour ({len(config['colors'])}) and view bin
({', '.join(config['views'])}) from a 32x32 render. Load with `sds3d.world.evaluator.Evaluator.load()`.

- Files: `model.safetensors` (weights), `config.json` (label names, architecture, this recipe).
- Input: [B, 3, 32, 32] in [0, 1] (`predict` area-averages larger images), white background.
- Architecture: three conv stages (2 x conv3x3-BN-ReLU + max-pool each; width {r['width']}, {2 * r['width']},
  {4 * r['width']}), flatten, dropout {r['dropout']}, linear to {r['feature_dim']}-d features (`features()`),
  three linear heads.
- Training data: {r['n_train']} renders of `sds3d.world.dataset.render_dataset` with seed {tr['train_seed']}
  (validation: {r['n_val']} with seed {tr['val_seed']}); the prior was trained on another seed.
- Augmentation: shift up to {r['max_shift']} px, scale {r['scale_range']}, Gaussian blur (p {r['blur_prob']},
  sigma {r['blur_sigma']}), brightness {r['brightness']}, per-channel gain +-{r['channel_gain']}, pixel
  noise sigma up to {r['noise_std']}; white fill outside the frame.
- Losses: cross-entropy (label smoothing {r['label_smoothing']}) on kind + colour; on the view bin only
  for kinds with a front ({', '.join(config['fronted_kinds'])}) and for overhead views.
- Optimisation: AdamW (lr {r['lr']}, one-cycle, weight decay {r['weight_decay']}), batch {r['batch']},
  {r['epochs']} epochs, seed {r['seed']}, {r['threads']} torch threads; kept epoch {b['epoch']}
  (validation kind {b['kind_acc']:.3f}, colour {b['color_acc']:.3f}, view on fronted kinds {b['view_acc']:.3f}).
- Wall time on a shared 2-core CPU: {tr['data_seconds']:.0f} s rendering (or cache), {tr['train_seconds']:.0f} s training.
- Command: `{tr['command']}`

Held-out accuracy on fresh renders (a seed used for nothing else): `python benchmarks/evaluator.py`.
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the package's assets/evaluator)")
    p.add_argument("--data-dir", type=Path, default=None, help="render cache (default: $SDS3D_DATA_DIR)")
    for key in ("n_train", "n_val", "epochs", "batch", "width", "feature_dim", "seed", "threads"):
        p.add_argument("--" + key.replace("_", "-"), type=int, default=DEFAULTS[key])
    for key in ("lr", "weight_decay", "label_smoothing", "dropout", "max_shift", "blur_prob", "channel_gain",
                "noise_std"):
        p.add_argument("--" + key.replace("_", "-"), type=float, default=DEFAULTS[key])
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = dict(DEFAULTS)
    cfg.update({k: getattr(args, k) for k in DEFAULTS if hasattr(args, k)})
    from sds3d.assets import ASSETS_DIR

    train(cfg, args.out or (ASSETS_DIR / "evaluator"), args.data_dir)


if __name__ == "__main__":
    main()
