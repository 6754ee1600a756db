"""The micro-world evaluator: a small CNN that reads kind, colour and view bin off a 32x32 render.

It turns "does the 3D asset look like the prompt from every side" into numbers (kind / colour
accuracy over views, Janus rate from the view head). Trained by `python -m
sds3d.world.train_evaluator` on renders whose seeds the prior never saw, with augmentations that
mimic generated assets (shifts, scales, blur, brightness, noise); shipped in `assets/evaluator/`
(`model.safetensors` + `config.json` with the label names and the recipe).

    ev = Evaluator.load()
    out = ev.predict(images)          # images [B, 3, 32, 32] in [0, 1] (larger ones are area-averaged)
    out["kind"], out["color"], out["view"]            # lists of B names
    out["kind_probs"], out["color_probs"], out["view_probs"]   # [B, classes] tensors
    ev.features(images)               # [B, 256] penultimate embedding (for diversity metrics)

The view head is trained only where the view is visible in the image: kinds with a distinct front
(any view) and every kind seen from overhead. Its answer on a symmetric kind's side view is noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from sds3d.assets import ASSETS_DIR

EVALUATOR_DIR = ASSETS_DIR / "evaluator"
RESOLUTION = 32


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class EvaluatorNet(nn.Module):
    """3 conv stages (32 -> 16 -> 8 -> 4 pixels) -> flatten -> 256-d features -> three linear heads."""

    def __init__(self, n_kinds: int, n_colors: int, n_views: int, width: int = 24, feature_dim: int = 256,
                 dropout: float = 0.2):
        super().__init__()
        w = width
        self.stages = nn.Sequential(_block(3, w), _block(w, 2 * w), _block(2 * w, 4 * w))
        self.embed = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * w * 4 * 4, feature_dim),
                                   nn.ReLU(inplace=True))
        self.kind_head = nn.Linear(feature_dim, n_kinds)
        self.color_head = nn.Linear(feature_dim, n_colors)
        self.view_head = nn.Linear(feature_dim, n_views)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, 32, 32] in [-1, 1] -> [B, feature_dim]."""
        return self.embed(self.stages(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {"kind": self.kind_head(f), "color": self.color_head(f), "view": self.view_head(f), "features": f}


def prepare(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] (or [B, H, W, 3]) in [0, 1] -> [B, 3, 32, 32] in [-1, 1], area-averaged."""
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    if images.ndim == 3:
        images = images[None]
    if images.shape[1] != 3 and images.shape[-1] == 3:
        images = images.permute(0, 3, 1, 2)
    images = images.float()
    if images.shape[-2:] != (RESOLUTION, RESOLUTION):
        mode = "area" if images.shape[-1] > RESOLUTION else "bilinear"
        images = F.interpolate(images, size=(RESOLUTION, RESOLUTION), mode=mode)
    return images.clamp(0, 1) * 2.0 - 1.0


class Evaluator:
    """A trained `EvaluatorNet` with its label names (inference only, eval mode, no gradients)."""

    def __init__(self, net: EvaluatorNet, config: dict, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.net = net.to(self.device).eval().requires_grad_(False)
        self.config = config
        self.kinds: list[str] = list(config["kinds"])
        self.colors: list[str] = list(config["colors"])
        self.views: list[str] = list(config["views"])
        self.fronted_kinds: list[str] = list(config.get("fronted_kinds", []))

    @staticmethod
    def build(config: dict) -> EvaluatorNet:
        arch = config.get("architecture", {})
        return EvaluatorNet(len(config["kinds"]), len(config["colors"]), len(config["views"]),
                            width=arch.get("width", 24), feature_dim=arch.get("feature_dim", 256),
                            dropout=arch.get("dropout", 0.2))

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> "Evaluator":
        from safetensors.torch import load_file

        path = Path(path) if path is not None else EVALUATOR_DIR
        weights, config_file = path / "model.safetensors", path / "config.json"
        if not weights.exists() or not config_file.exists():
            raise FileNotFoundError(f"no evaluator under {path} (model.safetensors + config.json); train one with "
                                    "`python -m sds3d.world.train_evaluator` (see assets/evaluator/README.md)")
        config = json.loads(config_file.read_text())
        net = cls.build(config)
        net.load_state_dict(load_file(str(weights)))
        return cls(net, config, device)

    @torch.no_grad()
    def logits(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        x = prepare(images)
        outs = [self.net(x[i:i + batch_size].to(self.device)) for i in range(0, x.shape[0], batch_size)]
        return {k: torch.cat([o[k] for o in outs]).cpu() for k in outs[0]}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict:
        """images [B, 3, H, W] in [0, 1] -> {"kind", "color", "view": B names each,
        "kind_probs", "color_probs", "view_probs": [B, classes] softmax probabilities}."""
        out = self.logits(images)
        result = {}
        for head, names in (("kind", self.kinds), ("color", self.colors), ("view", self.views)):
            probs = out[head].softmax(-1)
            result[head] = [names[i] for i in probs.argmax(-1).tolist()]
            result[f"{head}_probs"] = probs
        return result

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, feature_dim] penultimate embedding."""
        return self.logits(images)["features"]

    def view_is_meaningful(self, kind: str, view: str) -> bool:
        """Whether the view head was trained on such images (fronted kind, or overhead)."""
        return kind in self.fronted_kinds or view == "overhead"


def score(evaluator: Evaluator, images: torch.Tensor, kinds: list[str], colors: list[str], views: list[str]) -> dict:
    """Accuracies against names: kind_acc, color_acc, view_acc (fronted kinds only, all views),
    view_acc_overhead (overhead views of any kind), and counts."""
    pred = evaluator.predict(images)
    n = len(kinds)
    kind_ok = [p == t for p, t in zip(pred["kind"], kinds)]
    color_ok = [p == t for p, t in zip(pred["color"], colors)]
    fronted = [i for i in range(n) if kinds[i] in evaluator.fronted_kinds]
    overhead = [i for i in range(n) if views[i] == "overhead"]
    view_ok = [pred["view"][i] == views[i] for i in fronted]
    overhead_ok = [pred["view"][i] == "overhead" for i in overhead]
    mean = lambda xs: float(sum(xs) / len(xs)) if xs else float("nan")  # noqa: E731
    return {"kind_acc": mean(kind_ok), "color_acc": mean(color_ok), "view_acc": mean(view_ok),
            "view_acc_overhead": mean(overhead_ok), "n": n, "n_view": len(fronted), "n_overhead": len(overhead)}
