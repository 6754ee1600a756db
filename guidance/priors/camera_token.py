"""Camera conditioning of the embedded prior (v2) through the text tokens it cross-attends to.

`CameraToken` maps a view's camera features (`sds3d.cameras.camera_features`: elevation, azimuth,
distance, field of view) [B, D] through a linear layer to the text width C and adds the result to
the last of the L text tokens [B, L, C] (a padding token for the short prompts of the micro-world),
so the camera reaches the UNet where view words act, through cross-attention, as Zero123 conditions
on the camera. The layer starts at zero, so a v1 prior fine-tuned with it starts as v1 exactly.

Why not the timestep embedding (MVDream's `class_embed_type="projection"`): fine-tuned from the v1
prior for 1,767 steps that path left the epsilon loss at true and at 180-degree-turned cameras equal
to four digits (the model ignored it); this token made them differ by 1-3% within 1,000 steps.

A linear map of (sin, cos) of the azimuth turns the token smoothly with the view, so a front and a
three-quarter camera differ little. `mlp_hidden` > 0 adds a second branch, a 2-layer MLP (as MVDream
embeds its camera) over the features and their harmonics 2..`HARMONICS` (sin k*a, cos k*a of azimuth and
elevation, from powers of the unit complex number cos a + i sin a, so all-zero "no camera" features
stay zero). Its last layer starts at zero, so a token fine-tuned with it starts as the linear one.

A prior trained with camera dropout (`null_camera`: some training samples had all-zero features)
also knows "no camera": classifier-free guidance can then drop text and camera together,
eps(T, c) against eps(empty, none), so the guidance scale amplifies the view as well as the text.

`attach_camera_token(unet, token)` registers the token as `unet.camera_token` and makes
`unet(x, t, encoder_hidden_states=h, camera=features)` add it: callers pass `camera=` [B, D].
Exported priors keep it in `camera_token/` beside `unet/` (`save_camera_token` / `load_camera_token`).

Reference: Liu et al. 2023, "Zero-1-to-3: Zero-shot One Image to 3D Object", arXiv:2303.11328;
Shi et al. 2023, "MVDream: Multi-view Diffusion for 3D Generation", arXiv:2308.16512.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from torch import nn

from sds3d.cameras import CAMERA_FEATURES

CAMERA_TOKEN_DIR = "camera_token"
HARMONICS = 4
WEIGHTS_FILE = "model.safetensors"


def angle_harmonics(camera: torch.Tensor, harmonics: int = HARMONICS) -> torch.Tensor:
    """camera features [B, 6] (`sds3d.cameras.camera_features`) -> [B, 6 + 4 (harmonics - 1)]: the
    features, then (sin k*a, cos k*a, sin k*e, cos k*e) for k = 2..harmonics (a azimuth, e elevation)."""
    elevation = torch.complex(camera[:, 1], camera[:, 0])
    azimuth = torch.complex(camera[:, 3], camera[:, 2])
    parts = [camera]
    for k in range(2, harmonics + 1):
        a, e = azimuth ** k, elevation ** k
        parts.append(torch.stack([a.imag, a.real, e.imag, e.real], dim=-1))
    return torch.cat(parts, dim=-1)


class CameraToken(nn.Module):
    """hidden [B, L, C], camera [B, D] -> hidden with W camera + b (+ MLP(harmonics) when `mlp_hidden`)
    added to token L - 1; W, b and the MLP's last layer start at 0.
    `null_camera`: trained with all-zero features as "no camera" (camera dropout)."""

    def __init__(self, width: int, features: int = CAMERA_FEATURES, null_camera: bool = False,
                 mlp_hidden: int = 0):
        super().__init__()
        self.null_camera = null_camera
        self.mlp_hidden = mlp_hidden
        self.proj = nn.Linear(features, width)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.mlp = None
        if mlp_hidden:
            self.mlp = nn.Sequential(nn.Linear(features + 4 * (HARMONICS - 1), mlp_hidden), nn.SiLU(),
                                     nn.Linear(mlp_hidden, width))
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)

    def embed(self, camera: torch.Tensor) -> torch.Tensor:
        """camera features [B, D] -> [B, C]."""
        camera = camera.to(self.proj.weight.dtype)
        out = self.proj(camera)
        return out if self.mlp is None else out + self.mlp(angle_harmonics(camera))

    def forward(self, hidden: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        if camera.shape != (hidden.shape[0], self.proj.in_features):
            raise ValueError(f"camera features must be [{hidden.shape[0]}, {self.proj.in_features}], "
                             f"got {list(camera.shape)}")
        token = hidden[:, -1] + self.embed(camera).to(hidden.dtype)
        return torch.cat([hidden[:, :-1], token[:, None]], dim=1)


def _add_camera_token(unet, args, kwargs):
    camera = kwargs.pop("camera", None)
    if camera is None:
        raise ValueError("this prior UNet is camera-conditioned (v2): call it with camera=[B, "
                         f"{unet.camera_token.proj.in_features}] features (sds3d.cameras.cameras_features)")
    if "encoder_hidden_states" in kwargs:
        kwargs["encoder_hidden_states"] = unet.camera_token(kwargs["encoder_hidden_states"], camera)
    else:  # positional: (sample, timestep, encoder_hidden_states, ...)
        args = (*args[:2], unet.camera_token(args[2], camera), *args[3:])
    return args, kwargs


def attach_camera_token(unet, token: CameraToken | None = None):
    """Give `unet` a camera token (a new zero one by default); returns the UNet."""
    token = token or CameraToken(int(unet.config.cross_attention_dim))
    unet.add_module("camera_token", token.to(device=unet.device, dtype=unet.dtype))
    unet.register_forward_pre_hook(_add_camera_token, with_kwargs=True)
    return unet


def has_camera_token(unet) -> bool:
    return isinstance(getattr(unet, "camera_token", None), CameraToken)


@contextlib.contextmanager
def camera_token_removed(unet):
    """Within the block `unet` has no `camera_token` submodule (so `save_pretrained` writes the plain
    UNet); the hook stays and the token returns afterwards."""
    token = unet._modules.pop("camera_token", None)
    try:
        yield token
    finally:
        if token is not None:
            unet._modules["camera_token"] = token


def save_camera_token(token: CameraToken, folder: Path) -> None:
    """`folder/camera_token/` = weights (safetensors, fp32) and config.json."""
    from safetensors.torch import save_file

    out = Path(folder) / CAMERA_TOKEN_DIR
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in token.state_dict().items()}, out / WEIGHTS_FILE)
    config = {"features": "sds3d.cameras.camera_features", "in_features": token.proj.in_features,
              "out_features": token.proj.out_features, "added_to": "the last text token",
              "null_camera": token.null_camera, "mlp_hidden": token.mlp_hidden, "harmonics": HARMONICS}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_camera_token(folder: Path) -> CameraToken | None:
    """The token saved under `folder/camera_token/`, or None when the prior has none (v1)."""
    from safetensors.torch import load_file

    path = Path(folder) / CAMERA_TOKEN_DIR
    if not (path / "config.json").exists():
        return None
    config = json.loads((path / "config.json").read_text())
    if config.get("in_features") != CAMERA_FEATURES:
        raise ValueError(f"the prior's camera token in {path} takes {config.get('in_features')} camera features; "
                         f"sds3d's cameras give {CAMERA_FEATURES}")
    if config.get("mlp_hidden") and config.get("harmonics") != HARMONICS:
        raise ValueError(f"the prior's camera token in {path} uses {config.get('harmonics')} harmonics; "
                         f"this sds3d computes {HARMONICS}")
    token = CameraToken(int(config["out_features"]), CAMERA_FEATURES, bool(config.get("null_camera", False)),
                        int(config.get("mlp_hidden", 0)))
    token.load_state_dict(load_file(path / WEIGHTS_FILE))
    return token
