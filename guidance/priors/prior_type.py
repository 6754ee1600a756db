"""Which kind of prior a `--prior` value names, read from the model folder itself.

    prior_type("embedded")                         -> "embedded"  (the shipped micro-world prior)
    prior_type("embedded-v2")                      -> "embedded"  (the shipped camera-conditioned one)
    prior_type("embedded-v3")                      -> "embedded"  (v2 trained to follow its camera more)
    prior_type("/models/stable-diffusion-2-1-base") -> "sd"
    prior_type("/models/IF-I-XL-v1.0")              -> "if"
    prior_type("runs/prior_export")                 -> "embedded"  (a folder with prior.json)

A folder is read in this order: `prior.json` (an embedded-prior export), `model_index.json`'s
`_class_name` (a diffusers pipeline: IF* or StableDiffusion*), then its components (a `vae/` means a
latent Stable Diffusion; a pixel UNet with learned variance, 3 -> 6 channels, means DeepFloyd IF). A
hub id is read from the local hub cache when its model_index.json is there; otherwise an id under
`DeepFloyd/` is IF and any other id Stable Diffusion.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sds3d.assets import ASSETS_DIR
from sds3d.errors import InputError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # a Hugging Face hub id: org/name
PRIOR_TYPES = {"embedded": "embedded micro-world prior", "sd": "Stable Diffusion", "if": "DeepFloyd IF"}
# The embedded priors shipped in `assets/`, by name; "embedded" is the default one.
SHIPPED_PRIORS = {"embedded": "prior", "embedded-v1": "prior", "embedded-v2": "prior_v2", "embedded-v3": "prior_v3"}


def shipped_prior_dir(spec: str) -> Path | None:
    """The folder of a shipped prior's name (a key of `SHIPPED_PRIORS`), else None."""
    return ASSETS_DIR / SHIPPED_PRIORS[spec] if spec in SHIPPED_PRIORS else None


def prior_identity(spec: str) -> str:
    """One name per prior, whatever the spelling: a shipped prior's folder, an absolute folder, or a hub id."""
    shipped = shipped_prior_dir(spec)
    if shipped is not None:
        return str(shipped)
    return str(Path(spec).expanduser().resolve()) if is_local(spec) else spec


def is_local(spec: str) -> bool:
    """A path rather than a hub id: starts with '.', '/' or '~', or exists."""
    return spec.startswith((".", "/", "~")) or Path(spec).expanduser().exists()


def check_prior_spec(spec: str) -> None:
    """InputError (one line) unless `spec` names a shipped prior, an existing folder, or a hub id `org/name`."""
    if spec in SHIPPED_PRIORS:
        return
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"prior {spec} is a file; give a diffusers pipeline folder, a hub id 'org/name' "
                             f"or 'embedded'")
        return
    if is_local(spec) or not HUB_ID.match(spec):
        raise InputError(f"unknown prior {spec!r}: not {', '.join(map(repr, SHIPPED_PRIORS))}, not an existing "
                         "folder and not a hub id 'org/name'")


def prior_type(spec: str) -> str:
    """"embedded", "sd" or "if" for a prior spec; FileNotFoundError for a missing folder, ValueError
    for a folder that holds none of them."""
    if spec in SHIPPED_PRIORS:
        return "embedded"
    if not is_local(spec):
        return _hub_type(spec)
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"prior path {spec} does not exist")
    if (folder / "prior.json").is_file():
        return "embedded"
    index = _read_json(folder / "model_index.json")
    kind = _pipeline_type(index.get("_class_name", "")) if index else None
    if kind:
        return kind
    if (folder / "vae").is_dir():
        return "sd"
    unet = _read_json(folder / "unet" / "config.json")
    if unet.get("in_channels") == 3 and unet.get("out_channels") == 6:
        return "if"
    raise ValueError(f"cannot tell which prior {spec} holds: expected prior.json (embedded), or a diffusers "
                     "Stable Diffusion or DeepFloyd IF folder (model_index.json, unet/, ...)")


def _pipeline_type(class_name: str) -> str | None:
    if class_name.startswith("IF"):
        return "if"
    if class_name.startswith("StableDiffusion"):
        return "sd"
    return None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _hub_type(repo_id: str) -> str:
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, "model_index.json")
    except ValueError:  # not a valid repo id; loading will say so
        cached = None
    kind = _pipeline_type(_read_json(Path(cached)).get("_class_name", "")) if isinstance(cached, str) else None
    return kind or ("if" if repo_id.lower().startswith("deepfloyd/") else "sd")
