"""Checks of a whole GenerateConfig before any work: every field's type (from its annotation), then
ranges and choices. The first problem is an `InputError` naming the field, its value and what it
may be, so a run never starts (nor touches its folder) on a config it cannot finish."""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import math
import re
import typing
import unicodedata
from pathlib import Path

from .config import check_value
from .errors import InputError
from .hardware import PRECISIONS
from .turntable import ANIMATION_FORMATS
from sds3d.guidance.priors.prior_type import check_prior_spec

MAX_PROMPT_CHARS = 300  # as `validate_prompt` and the web UI
MAX_SEED = 2**64 - 1  # torch.manual_seed's range
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
PROMPT_FIELDS = ("prompt", "negative_prompt", "*.negative_prompt", "*.inversion_prompt")


def _between(low, high):
    return lambda v: low <= v <= high, f"between {low} and {high}"


def _at_least(low):
    return lambda v: v >= low, f"at least {low}"


def _above(low):
    return lambda v: v > low, f"above {low}"


# dotted-path pattern -> (test on each number of the value, what it must be); the first match applies
RANGES: dict[str, tuple] = {
    "steps": _between(1, 10**7),
    "seed": _between(0, MAX_SEED),
    "*.seed": _between(0, MAX_SEED),
    "views_per_step": _between(1, 64),
    "resolution": _between(8, 1024),
    "preview_every": _at_least(0),
    "checkpoint_every": _at_least(0),
    "turntable_frames": _between(1, 1000),
    "turntable_resolution": _between(8, 2048),
    "camera.elevation_range": _between(-90, 90),
    "camera.radius_range": _above(0),
    "camera.fovy_range": _between(1, 179),
    "gaussians.num_points": _between(1, 10**7),
    "gaussians.sh_degree": _between(0, 3),
    "gaussians.init_opacity": _between(1e-6, 1 - 1e-6),
    "gaussians.init_radius": _above(0),
    "gaussians.densify.max_gaussians": _at_least(1),
    "nerf.shading_probabilities": _at_least(0),
    "nerf.samples_per_ray": _at_least(1),
    "dmtet.resolution": _between(4, 256),
    "retrieval.k": _between(1, 64),
    "retrieval.candidates": _at_least(1),
    "retrieval.adaptation.steps": _at_least(0),
    "retrieval.adaptation.rank": _at_least(1),
    "retrieval.adaptation.batch_size": _at_least(1),
    "retrieval.adaptation.views_per_asset": _at_least(1),
    "retrieval.adaptation.view_caption_prob": _between(0, 1),
    "retrieval.adaptation.render_resolution": _between(8, 1024),
    "retrieval.adaptation.lr": _between(0, 1e6),
    "retrieval.adaptation.weight_decay": _at_least(0),
    "*.particles": _between(1, 64),
    "*.lora_rank": _at_least(1),
    "*.n_ddim_steps": _at_least(1),
    "*.inversion_n_steps": _at_least(1),
    "*.guidance_scale": _at_least(0),
    "*.path_guidance_scale": _at_least(0),
    "*.delta_guidance_scale": _at_least(0),
    "*.camera_guidance_scale": _at_least(0),
    "*.grad_clip": _at_least(0),
    "*.pixel_grad_clip": _at_least(0),
    "*_percent": _between(0, 1),
    "*.lr_*": _between(0, 1e6),  # far beyond any useful rate; larger ones overflow Adam's float32 step
    "*.lora_lr": _between(0, 1e6),
}
# dotted-path pattern -> the strings a field may hold (the module constants the code checks against)
CHOICES: dict[str, tuple[str, ...]] = {
    "*.timesteps.kind": ("random", "sqrt_anneal", "linear_anneal", "dreamtime"),
    "*.weighting": ("sds", "uniform", "fantasia3d"),
    "gaussians.backend": ("auto", "native", "reference", "gsplat"),
    "gaussians.rasterize_mode": ("classic", "antialiased"),
    "nerf.backend": ("auto", "native", "reference", "cuda"),
    "nerf.density_activation": ("softplus", "trunc_exp"),
    "dmtet.backend": ("auto", "native", "reference"),
    "dmtet.color_encoding": ("hash_grid", "fourier"),
    "turntable_format": ANIMATION_FORMATS,
    "prior_precision": PRECISIONS,
}
# fields whose value is a schedule [start_step, start_value, end_value, end_step]: the range applies to the values
SCHEDULE_STEPS = (0, 3)


def fields(config, prefix: str = ""):
    """(dotted path, value, annotation) of every leaf field of a config dataclass, in order."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            yield from fields(value, f"{prefix}{field.name}.")
        else:
            yield prefix + field.name, value, hints[field.name]


def _range_rule(path: str):
    return next((rule for pattern, rule in RANGES.items() if fnmatch.fnmatchcase(path, pattern)), None)


def _numbers(value, is_schedule: bool) -> list:
    if isinstance(value, tuple):
        return [v for i, v in enumerate(value) if not (is_schedule and i in SCHEDULE_STEPS)]
    return [] if value is None or isinstance(value, (bool, str)) else [value]


def check_field(path: str, value, hint) -> None:
    """Type and range of one field; InputError naming it."""
    check_value(value, hint, path)
    if isinstance(value, str):
        bad = next((ch for ch in value if unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\t\n"), None)
        if bad is not None:
            raise InputError(f"{path} contains the control character U+{ord(bad):04X}; use plain text")
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in PROMPT_FIELDS) and len(value) > MAX_PROMPT_CHARS:
            raise InputError(f"{path} is {len(value)} characters long; the limit is {MAX_PROMPT_CHARS}")
    allowed = next((choices for pattern, choices in CHOICES.items() if fnmatch.fnmatchcase(path, pattern)), None)
    if allowed is not None and value not in allowed:
        raise InputError(f"unknown {path} {value!r}; choose one of {', '.join(allowed)}")
    rule = _range_rule(path)
    if rule is None:
        return
    test, wanted = rule
    is_schedule = isinstance(value, tuple) and typing.get_origin(hint) is not tuple
    if is_schedule and any(v < 0 for v in (value[0], value[3])):
        raise InputError(f"{path}: a schedule's steps must be at least 0, got {list(value)}")
    bad = [v for v in _numbers(value, is_schedule) if not test(v)]
    if bad:
        shown = list(value) if isinstance(value, tuple) else value
        raise InputError(f"{path} must be {wanted}, got {shown}")


def check_prompt_given(prompt: str) -> None:
    """InputError unless the prompt holds more than white space."""
    if not " ".join(prompt.split()):
        raise InputError("the prompt is empty; give a text such as \"a red mug\"")


def check_registered(representation: str, guidance: str) -> None:
    """The representation (an alias included) and the guidance variant are in their registries;
    InputError naming the choices."""
    from sds3d.guidance.registry import GUIDANCE
    from sds3d.representations.registry import representation_entry

    representation_entry(representation)
    if guidance not in GUIDANCE:
        raise InputError(f"unknown guidance {guidance!r}; choose one of {', '.join(sorted(GUIDANCE))}")


PARTICLE_GUIDANCE = ("vsd", "redream")  # the variants whose section has `particles`


def check_particles(guidance: str, particles: int) -> None:
    """Several particles share VSD's LoRA: InputError for more than one with another variant."""
    if particles > 1 and guidance not in PARTICLE_GUIDANCE:
        raise InputError(f"{particles} particles need the vsd guidance (or redream; they share its LoRA); "
                         f"{guidance} trains one asset")


def check_retrieval(config) -> None:
    """ReDream needs a library to retrieve from and adapts the prior on what it retrieves; a library
    given must be a folder with a non-empty library.jsonl (InputError from the library module)."""
    from sds3d.guidance.registry import LIBRARY_GUIDANCE

    retrieval = config.retrieval
    if config.guidance in LIBRARY_GUIDANCE and not retrieval.library:
        raise InputError(f"guidance {config.guidance} retrieves assets for the prompt: give a library "
                         "(--retrieve LIB or retrieval.library)")
    if config.guidance in LIBRARY_GUIDANCE and retrieval.adapt is False:
        raise InputError(f"guidance {config.guidance} scores with the adapted prior: drop --no-adapt "
                         "(retrieval.adapt) or use --guidance vsd")
    if retrieval.library:
        from sds3d.retrieval.library import read_entries

        read_entries(retrieval.library)


def validate_config(config) -> None:
    """Every field of a GenerateConfig, then the choices (representation, guidance, background,
    device, prior, init_from) and the ranges' order; InputError (one line) at the first problem."""
    from .background import KINDS as BACKGROUNDS
    from sds3d.representations.registry import canonical_name

    for path, value, hint in fields(config):
        check_field(path, value, hint)
    check_prompt_given(config.prompt)
    check_registered(config.representation, config.guidance)
    if config.background not in BACKGROUNDS:
        raise InputError(f"unknown background {config.background!r}; choose one of {', '.join(BACKGROUNDS)}")
    if not DEVICE.match(config.device):
        raise InputError(f"unknown device {config.device!r}; choose auto, cpu, cuda, cuda:<index> or mps")
    check_prior_spec(config.prior)
    for name in ("elevation_range", "azimuth_range", "radius_range", "fovy_range"):
        low, high = getattr(config.camera, name)
        if low > high:
            raise InputError(f"camera.{name} must be [low, high] with low <= high, got [{low}, {high}]")
    if not math.fsum(config.nerf.shading_probabilities) > 0:
        raise InputError("nerf.shading_probabilities must not all be 0")
    if config.init_from:
        run = Path(config.init_from)
        if not (run / "config.json").is_file() or not (run / "checkpoint.pt").is_file():
            raise InputError(f"init_from {config.init_from} is not a run directory (needs config.json and "
                             f"checkpoint.pt)")
        if run.resolve() == Path(config.out).resolve():
            raise InputError(f"init_from {config.init_from} is the run's own output folder; pick a new --out")
    check_retrieval(config)
    from .export import require_mesh_tools

    require_mesh_tools(canonical_name(config.representation), bool(config.init_from))


# fields a resumed run may change: the length of the run and where and how often it writes
RESUMABLE = ("steps", "out", "device", "preview_every", "checkpoint_every", "turntable_frames",
             "turntable_resolution")
CHECKPOINT_KEYS = ("step", "representation", "optimizers", "training_state", "background", "guidance", "generator",
                   "torch_rng", "elapsed", "timings")


def check_resume(config, n_particles: int) -> dict:
    """The checkpoint in `config.out` that `config` may resume, after checking it: config.json reads
    and differs only in RESUMABLE fields, checkpoint.pt loads without code and is a run's checkpoint
    with `n_particles` particles at a step within `config.steps`. InputError names what differs."""
    from .config import load_json
    from .errors import load_checkpoint

    out = Path(config.out)
    if not (out / "config.json").is_file():
        raise InputError(f"cannot resume {out}: it has checkpoint.pt but no config.json; start a new run directory")
    stored = load_json(type(config), out / "config.json")
    new, old = dict((p, v) for p, v, _ in fields(config)), dict((p, v) for p, v, _ in fields(stored))
    differing = [path for path in new if path not in RESUMABLE and new[path] != old[path]]
    if differing:
        shown = ", ".join(f"{path} ({_short(old[path])} -> {_short(new[path])})" for path in differing[:4])
        more = f" and {len(differing) - 4} more" if len(differing) > 4 else ""
        raise InputError(f"cannot resume {out}: the config differs from its config.json in {shown}{more}; "
                         f"resume with the same settings or choose another --out")
    state = load_checkpoint(out / "checkpoint.pt")
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise InputError(f"{out / 'checkpoint.pt'}: not an sds3d run checkpoint (no {', '.join(missing[:3])})")
    for particle in [state, *state.get("particles", [])]:
        check_finite_weights(particle.get("representation", {}), out / "checkpoint.pt")
    held = 1 + len(state.get("particles", []))
    if held != n_particles:
        raise InputError(f"{out / 'checkpoint.pt'} holds {held} particle(s), the config asks for {n_particles}; "
                         f"resume with the same number or start a new run directory")
    if not isinstance(state["step"], int) or not 0 <= state["step"] <= config.steps:
        raise InputError(f"{out / 'checkpoint.pt'} is at step {state['step']}, beyond steps={config.steps}; "
                         f"resume with at least that many steps")
    return state


def _short(value) -> str:
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_writable(out: Path) -> None:
    """`out` is a folder that exists or can be made, and can be written to; checked without creating it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"cannot write to output directory {out}: it is a file")
    existing = next(parent for parent in (out, *out.absolute().parents) if parent.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot write to output directory {out}: {existing} is not writable")


def check_finite_weights(weights: dict, path: Path) -> None:
    """InputError naming the first floating-point tensor of `weights` that holds NaN or inf."""
    import torch

    bad = next((key for key, value in weights.items()
                if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()),
               None)
    if bad is not None:
        raise InputError(f"{path}: non-finite values (NaN or inf) in {bad}; the run diverged, so there is no "
                         f"asset to use; run it again with lower learning rates")
