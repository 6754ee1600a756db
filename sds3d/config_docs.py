"""One line per config field for `sds3d config`: the text below for "Class.field", else the comment
on the field's line in its dataclass, else the text below for the field name (which several sections share)."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import tokenize

from .config import type_name
from .validation import fields

DESCRIPTIONS = {
    # the run
    "prompt": "the text to turn into 3D (at most 300 characters)",
    "GenerateConfig.negative_prompt": "what the asset should not look like (the unconditional text of CFG)",
    "GenerateConfig.steps": "optimisation steps",
    "GenerateConfig.prior": "the diffusion model: embedded-v2 (camera-conditioned), embedded-v3 (v2 following its "
                            "camera more), embedded (text only), or a Stable "
                            "Diffusion, DeepFloyd IF or embedded-prior folder / hub id",
    "GenerateConfig.views_per_step": "random camera views rendered and scored per step",
    "GenerateConfig.seed": "random seed (0 to 2^64-1); the same seed repeats a run exactly",
    "views_per_step": "random camera views rendered and scored per step",
    "view_dependent": "append view words (front / side / back / overhead view) to the prompt per camera",
    "device": "auto | cpu | cuda | cuda:<index> | mps",
    "out": "the run directory",
    "preview_every": "steps between preview grids in previews/ (0: none)",
    "checkpoint_every": "steps between checkpoints (0: only at the end)",
    "turntable_frames": "frames of turntable.gif",
    "turntable_resolution": "pixel size of turntable.gif frames",
    "elevation_range": "camera elevation range in degrees [low, high]",
    "azimuth_range": "camera azimuth range in degrees [low, high] (0 sees the front)",
    "radius_range": "camera distance from the origin [low, high]",
    "fovy_range": "camera vertical field of view in degrees [low, high]",
    # Gaussians
    "num_points": "Gaussians at the start",
    "init_radius": "radius of the ball the Gaussians start in",
    "init_opacity": "starting opacity of every Gaussian (0 to 1)",
    "sh_degree": "spherical-harmonics degree of the colours (0 to 3)",
    "lr_means": "learning rate of the Gaussians' positions",
    "lr_scales": "learning rate of the Gaussians' log-scales",
    "lr_quats": "learning rate of the Gaussians' rotations",
    "lr_opacities": "learning rate of the Gaussians' opacity logits",
    "lr_sh0": "learning rate of the base colour (SH degree 0)",
    "lr_shN": "learning rate of the higher SH coefficients",
    "lr_features": "learning rate of the extra per-Gaussian features",
    "enabled": "densify and prune the Gaussians during training",
    "refine_start_iter": "first step of densification (null: steps / 5)",
    "refine_stop_iter": "last step of densification (null: 4 steps / 5)",
    "refine_every": "steps between densification passes (null: steps / 5)",
    "grow_grad2d": "screen-space gradient above which a Gaussian is split or cloned",
    "grow_scale3d": "size (times scene_scale) that separates cloning from splitting",
    "prune_opa": "opacity below which a Gaussian is removed",
    "prune_scale3d": "size (times scene_scale) above which a Gaussian is removed",
    "scene_scale": "the scene's size for the densification thresholds",
    # NeRF
    "levels": "hash-grid levels",
    "features_per_level": "features per hash-grid level",
    "log2_table_size": "log2 of the hash table rows per level",
    "base_resolution": "grid resolution of the coarsest level",
    "max_resolution": "grid resolution of the finest level",
    "hidden_dim": "width of the MLP after the encoding",
    "hidden_layers": "hidden layers of that MLP",
    "blob_density": "density added at the centre at the start (a blob to carve from)",
    "blob_radius": "radius of that starting blob",
    "samples_per_ray": "ray-marching samples per ray",
    "occupancy_resolution": "resolution of the occupancy grid that skips empty space",
    "occupancy_decay": "decay of the occupancy grid's density estimates per update",
    "ambient": "ambient light of the shading",
    "diffuse": "diffuse (Lambertian) light of the shading",
    "orientation_weight": "weight of the normal-orientation regulariser (DreamFusion)",
    "opacity_weight": "weight of the opacity (sparsity) regulariser",
    "entropy_weight": "weight of the opacity-entropy regulariser",
    "lr_encoding": "learning rate of the hash encoding",
    "lr_density": "learning rate of the density head",
    "lr_albedo": "learning rate of the colour head",
    # DMTet
    "color_encoding": "colour field encoding: hash_grid | fourier",
    "hash_levels": "hash-grid levels of the colour field",
    "hash_log2_table_size": "log2 of the colour hash table rows per level",
    "hash_base_resolution": "coarsest resolution of the colour hash grid",
    "fourier_frequencies": "frequencies of the Fourier colour encoding",
    "color_hidden": "width of the colour MLP",
    "antialias": "antialias the silhouette edges",
    "normal_consistency_weight": "weight of the normal-consistency regulariser",
    "lr_sdf": "learning rate of the signed distances",
    "lr_deform": "learning rate of the vertex deformations",
    "lr_color": "learning rate of the colour field",
    # guidance
    "SDSConfig.guidance_scale": "classifier-free guidance scale, diffusers convention (20 suits the embedded prior)",
    "guidance_scale": "classifier-free guidance scale (a number or a schedule)",
    "grad_clip": "clip of the guidance gradient (null: none; a number or a schedule)",
    "lr_scale": "factor on the representation's learning rates",
    "alpha_sparsity": "weight of the floater regulariser on the render's alpha (a number or a schedule)",
    "alpha_entropy": "weight of the alpha-entropy regulariser (a number or a schedule)",
    "color_smoothness": "weight pulling each Gaussian's colour towards its neighbours'",
    "negative_prompt": "negative prompt of this variant",
    "weighting": "timestep weighting: sds | uniform | fantasia3d",
    "min_step_percent": "smallest diffusion timestep drawn, as a fraction of the prior's (a number or a schedule)",
    "max_step_percent": "largest diffusion timestep drawn, as a fraction of the prior's (a number or a schedule)",
    "dreamtime_m1": "DreamTime prior weight: centre of the first Gaussian",
    "dreamtime_m2": "DreamTime prior weight: centre of the second Gaussian",
    "dreamtime_s1": "DreamTime prior weight: width of the first Gaussian",
    "dreamtime_s2": "DreamTime prior weight: width of the second Gaussian",
    "enable_sdi": "use the DDIM-inverted noise (off: plain SDS)",
    "inversion_guidance_scale": "CFG scale of the DDIM inversion",
    "inversion_n_steps": "DDIM steps of the inversion",
    "inversion_eta": "stochasticity of the inversion",
    "inversion_jump": "invert in one jump to the target timestep",
    "mean_reduction": "average the loss over pixels instead of summing",
    "xs_delta_t": "timestep stride of the inversion (ISM)",
    "xs_inv_steps": "inversion steps (ISM)",
    "sds": "use SDS's fresh noise instead of the inverted one",
    "delta_t": "gap between the two timesteps (a number or a schedule)",
    "inversion_prompt": "text used while inverting ('' unconditional)",
    "noise_offset": "offset added to the noise",
    "perp_neg": "Perp-Neg guidance on the view prompts (doubles the cost)",
    "gamma": "weight between the two score terms",
    "end_gap": "timestep gap at the end of the schedule",
    "min_sigma_percent": "smallest noise level, as a fraction of the prior's",
    "max_sigma_percent": "largest noise level, as a fraction of the prior's",
    "delta_guidance_scale": "CFG scale of the difference term",
    "path_guidance_scale": "CFG scale of the DDIM path from z_T (null: guidance_scale)",
    "n_ddim_steps": "DDIM steps of the path",
    "plus_ratio": "share of steps that use the plus branch",
    "delta_min": "smallest timestep gap",
    "late_progress": "progress after which delta_min_late applies",
    "lora_rank": "rank of the LoRA estimator",
    "lora_lr": "learning rate of the LoRA estimator",
    "opacity_threshold": "opacity above which a Gaussian carries the consistent noise",
}


@functools.cache
def _line_comments(cls) -> dict[str, str]:
    """field name -> the comment at the end of its line in the class source."""
    source = inspect.getsource(cls)
    comments = {token.start[0]: token.string for token in tokenize.generate_tokens(io.StringIO(source).readline)
                if token.type == tokenize.COMMENT}
    body = ast.parse(source).body[0].body
    return {node.target.id: comments[node.lineno].lstrip("#").strip() for node in body
            if isinstance(node, ast.AnnAssign) and node.lineno in comments}


def run_default_text(name: str) -> str | None:
    """"gaussians 250, nerf 600, dmtet 600" for a run setting every representation sets for itself
    (`RepresentationEntry.run_defaults`: prior, steps, views_per_step), else None."""
    from sds3d.representations.registry import REPRESENTATIONS

    tuned = {rep: dict(entry.run_defaults) for rep, entry in REPRESENTATIONS.items()}
    if not all(name in values for values in tuned.values()):
        return None
    return ", ".join(f"{rep} {values[name]}" for rep, values in tuned.items())


def _registered(cls, name: str) -> str | None:
    """The run's `representation` and `guidance`: the names their registries hold; the run settings each
    representation sets for itself (`RepresentationEntry.run_defaults`): the text below and its values."""
    from sds3d.guidance.registry import GUIDANCE
    from sds3d.representations.registry import ALIASES, REPRESENTATIONS

    if cls.__name__ != "GenerateConfig":
        return None
    if run_default_text(name):
        return f"{DESCRIPTIONS[f'GenerateConfig.{name}']} (unset: the representation's: {run_default_text(name)})"
    if name not in ("representation", "guidance"):
        return None
    if name == "guidance":
        return f"score distillation variant: {' | '.join(GUIDANCE)}"
    aliases = "".join(f"; {old} is read as {new}" for old, new in ALIASES.items())
    return f"what is optimised: {' | '.join(REPRESENTATIONS)}{aliases}"


def _declaring(cls, name: str) -> type:
    """The class of `cls`'s MRO whose body declares field `name` (GenerateConfig's run settings are
    declared in its base)."""
    return next(base for base in cls.__mro__ if name in vars(base).get("__annotations__", {}))


def describe(cls, name: str) -> str | None:
    return (_registered(cls, name) or DESCRIPTIONS.get(f"{cls.__name__}.{name}")
            or _line_comments(_declaring(cls, name)).get(name) or DESCRIPTIONS.get(name))


def field_table(config) -> list[tuple[str, str, str, str]]:
    """(dotted path, type, default as JSON-ish text, description) of every field of `config`."""
    owners = dict(_owners(config))
    return [(path, type_name(hint), _text(value), describe(owners[path], path.rsplit(".", 1)[-1]) or "")
            for path, value, hint in fields(config)]


def _owners(config, prefix: str = ""):
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            yield from _owners(value, f"{prefix}{field.name}.")
        else:
            yield prefix + field.name, type(config)


def _text(value) -> str:
    import json

    return json.dumps(list(value) if isinstance(value, tuple) else value)
