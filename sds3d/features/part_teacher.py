"""The embedded part teacher: per-pixel embeddings of micro-world renders in a space shared with text.

A small UNet maps an R x R image (R: the model's `resolution`, 64 for the shipped teacher) to a D-dimensional unit
vector per pixel of an R/2 x R/2 grid (R x R with the full-resolution level, `full_res_width` > 0,
which thin parts such as a mug's handle need); a phrase's sentence
embedding (all-MiniLM-L6-v2, mean-pooled over tokens and normalised, 384-d) is mapped into the
same space by a learned linear projection and normalised. The relevance of a phrase at a pixel is
LSeg's dot product, turned into a probability by a learned scale and bias:

    p(phrase at pixel) = sigmoid(scale * <f_pixel, t_phrase> + bias)

so any phrase can be queried, including phrasings never seen in training (they land near their
synonyms in the text encoder's space). Weights: `assets/feature_teacher/` (`load_feature_teacher`).

Reference: Language-driven Semantic Segmentation (LSeg), arXiv:2201.03546
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import cached_property
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from sds3d.errors import InputError

from .teacher import FeatureTeacher

TEACHER_NAME = "sds3d-part-teacher"
TEXT_DIM = 384  # all-MiniLM-L6-v2 sentence embeddings
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
DEFAULT_ARCHITECTURE = {"resolution": 64, "widths": [32, 64, 128], "decoder_widths": [64, 32],
                        "head_width": 64, "dim": 64, "full_res_width": 0}


def sentence_embeddings(phrases: list[str], encoder=None) -> torch.Tensor:
    """phrases (N) -> [N, 384] unit-length all-MiniLM-L6-v2 sentence embeddings: the last hidden
    states of `sds3d.guidance.priors.text_encoder`'s model averaged over the attention mask (the
    model's sentence-transformers pooling), then normalised. `encoder`: a `TextEncoder` (default the
    shared one, its results kept on disk by `sentence_cache`)."""
    if encoder is None:
        from sds3d.guidance.priors.text_encoder import get_text_encoder

        from .sentence_cache import cached_embeddings

        return cached_embeddings(list(phrases), lambda: sentence_embeddings(phrases, get_text_encoder()))
    # Padded to the longest phrase, not to the encoder's fixed 32 tokens: padding is masked out of
    # attention and pooling, so the embedding is the same and short phrases cost far less.
    tokens = encoder.tokenizer(list(phrases), padding=True, truncation=True, max_length=encoder.max_length,
                               return_tensors="pt").to(encoder.device)
    with torch.no_grad():
        hidden = encoder.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
    mask = tokens["attention_mask"].to(hidden.dtype)[..., None]
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return F.normalize(pooled.float().cpu(), dim=-1)


class _ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by BatchNorm and ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class PartTeacherModel(nn.Module):
    """UNet image encoder + text projection + logit scale and bias (everything that is trained).

    forward(images [B, 3, R, R] in [0, 1]) -> unit features [B, D, R/2, R/2] (a stride-2 stem, then
    a UNet over three levels with a global-context vector at the coarsest); with `full_res_width` > 0,
    [B, D, R, R]: one more decoder level at the input's resolution, its skip a stride-1 convolution
    of the image; `project_text`
    ([N, 384] sentence embeddings, centred by `text_mean`, projected) -> unit [N, D];
    `logits(features [..., D], text [N, D])`."""

    def __init__(self, resolution: int = 64, widths=(32, 64, 128), decoder_widths=(64, 32),
                 head_width: int = 64, dim: int = 64, full_res_width: int = 0):
        super().__init__()
        if len(decoder_widths) != len(widths) - 1:
            raise ValueError("decoder_widths needs one width per upsampling (len(widths) - 1)")
        self.resolution, self.dim = int(resolution), int(dim)
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 4, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.encoder = nn.ModuleList()
        cin = widths[0]
        for width in widths:
            self.encoder.append(_ConvBlock(cin, width))
            cin = width
        # Global context at the coarsest level: which object this is, seen from every pixel.
        self.context = nn.Linear(widths[-1], widths[-1])
        self.decoder = nn.ModuleList()
        for skip, width in zip(reversed(widths[:-1]), decoder_widths):
            self.decoder.append(_ConvBlock(cin + skip, width))
            cin = width
        self.full_res_stem = self.full_res_decoder = None
        if full_res_width:
            self.full_res_stem = nn.Sequential(nn.Conv2d(3, full_res_width, 3, padding=1, bias=False),
                                               nn.BatchNorm2d(full_res_width), nn.ReLU())
            self.full_res_decoder = _ConvBlock(cin + full_res_width, cin)
        self.head = nn.Sequential(nn.Conv2d(cin, head_width, 1), nn.ReLU(), nn.Conv2d(head_width, dim, 1))
        # Sentence embeddings share a large common component; the mean over the training phrases is
        # removed before the projection (set by training, saved with the weights).
        self.register_buffer("text_mean", torch.zeros(TEXT_DIM))
        self.text_projection = nn.Linear(TEXT_DIM, dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(15.0)))
        self.bias = nn.Parameter(torch.tensor(-2.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images * 2 - 1)
        full_res_skip = None if self.full_res_stem is None else self.full_res_stem(images * 2 - 1)
        skips = []
        for level, block in enumerate(self.encoder):
            if level:
                x = F.avg_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = x + self.context(x.mean((2, 3)))[:, :, None, None]
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            x = block(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), skip], 1))
        if full_res_skip is not None:
            x = self.full_res_decoder(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"),
                                                 full_res_skip], 1))
        return F.normalize(self.head(x), dim=1)

    def project_text(self, sentence: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_projection(sentence - self.text_mean), dim=-1)

    def logits(self, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """features [..., D] unit, text [N, D] unit -> [..., N] = scale * cosine + bias."""
        return self.log_scale.exp() * features @ text.T + self.bias


class PartTeacher(FeatureTeacher):
    """The trained `PartTeacherModel` for inference (frozen, eval mode, CPU)."""

    name = TEACHER_NAME

    def __init__(self, model: PartTeacherModel, config: dict | None = None):
        self.model = model.eval().requires_grad_(False)
        self.dim = model.dim
        self.version = weights_version(model)
        self.resolution = model.resolution
        self.config = dict(config or {})

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> [B, D, h, w] unit features (h = w = R/2 for the model's
        input resolution R, or R with the full-resolution level). Images are resized to R x R
        (antialiased bilinear), the network's input; callers resize the features to H, W."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        x = images.float().cpu().clamp(0, 1)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True,
                              align_corners=False)
        return self.model(x)

    @torch.no_grad()
    def text_features(self, phrases: list[str]) -> torch.Tensor:
        """phrases (N) -> [N, D] unit features (sentence embedding through the learned projection)."""
        if isinstance(phrases, str):
            phrases = [phrases]
        return self.model.project_text(sentence_embeddings(list(phrases)))

    @cached_property
    def part_vocabulary(self):
        """Its training concepts (`sds3d.features.vocabulary.PartVocabulary`): how queries are scored in 3D."""
        from .vocabulary import PartVocabulary

        return PartVocabulary(self)

    @torch.no_grad()
    def probabilities(self, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """features [B, D, h, w] (from `image_features`), text [N, D] -> [B, N, h, w]: the trained
        per-phrase probability that a pixel belongs to the phrase (select where > 0.5)."""
        return self.model.logits(features.movedim(1, -1), text).movedim(-1, 1).sigmoid()

    def save(self, folder: str | Path, extra_config: dict | None = None) -> None:
        """Write model.safetensors + config.json into `folder` (each file atomically)."""
        import os

        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"teacher": TEACHER_NAME, "architecture": architecture_of(self.model)}
        config.update(self.config)
        config.update(extra_config or {})
        tmp = folder / f"{WEIGHTS_FILE}.tmp"
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(tmp))
        os.replace(tmp, folder / WEIGHTS_FILE)
        tmp = folder / f"{CONFIG_FILE}.tmp"
        tmp.write_text(json.dumps(config, indent=1) + "\n")
        os.replace(tmp, folder / CONFIG_FILE)
        self.config = config

    @classmethod
    def load(cls, folder: str | Path) -> "PartTeacher":
        """A saved teacher; InputError (one line naming the folder) if a file is missing or damaged."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            config = json.loads((folder / CONFIG_FILE).read_text())
            model = PartTeacherModel(**{**DEFAULT_ARCHITECTURE, **config.get("architecture", {})})
            model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        except FileNotFoundError as exc:
            raise InputError(f"feature teacher {folder}: missing {Path(exc.filename).name}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, RuntimeError, TypeError,
                ValueError, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"feature teacher {folder} is damaged or not a {TEACHER_NAME} export: "
                             f"{reason[:160]}") from None
        return cls(model, config)


def weights_version(model: nn.Module) -> str:
    """12 hex digits of the SHA-256 of the model's tensors (names, shapes and values, in order)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


def architecture_of(model: PartTeacherModel) -> dict:
    """The constructor arguments of `model` (what config.json records)."""
    return {"resolution": model.resolution, "widths": [block[0].out_channels for block in model.encoder],
            "decoder_widths": [block[0].out_channels for block in model.decoder],
            "head_width": model.head[0].out_channels, "dim": model.dim,
            "full_res_width": 0 if model.full_res_stem is None else model.full_res_stem[0].out_channels}


def resize_features(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, D, h, w] unit features -> [B, D, *size], bilinear then renormalised per pixel."""
    if tuple(features.shape[-2:]) == tuple(size):
        return features
    return F.normalize(F.interpolate(features, size=size, mode="bilinear", align_corners=False), dim=1)
