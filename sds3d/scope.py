"""What the embedded prior knows, and a one-line note for prompts outside it.

The embedded prior was trained on the micro-world only: 28 kinds of object in 10 colours, as 32x32
images. `world_summary()` lists them (`sds3d world`); `scope_note(prompt, prior)` is a line to show
when a prompt for the embedded prior names none of those kinds (a run still goes on).
"""

from __future__ import annotations

import textwrap
import warnings


class OutsideWorldWarning(UserWarning):
    """The embedded prior is asked for an object that is not in the micro-world."""


def world_summary() -> str:
    """Kinds and colours with the words prompts may use for them."""
    from .world import COLORS, KINDS
    from .world.dataset import RESOLUTION

    width = max(map(len, [*KINDS, *COLORS])) + 2
    lines = [f"The embedded prior knows {len(KINDS)} kinds x {len(COLORS)} colours of the micro-world, as "
             f"{RESOLUTION}x{RESOLUTION} images; prompts may use any of these words.", "",
             f"{len(KINDS)} kinds:"]
    lines += [f"  {name:<{width}}{', '.join(spec.synonyms)}" for name, spec in KINDS.items()]
    lines += ["", f"{len(COLORS)} colours:"]
    lines += [f"  {name:<{width}}{', '.join((name, *spec.synonyms))}" for name, spec in COLORS.items()]
    lines += ["", *textwrap.wrap('A view phrase such as "front view" or "seen from above" may follow. Other '
                                 "objects need a Stable Diffusion or DeepFloyd IF folder (--prior PATH).", 100)]
    return "\n".join(lines)


def names_a_kind(prompt: str) -> bool:
    """Whether `prompt` names a micro-world kind (any synonym, singular or plural)."""
    from .world import find_mentions

    return bool(find_mentions(prompt)["kind"])


def scope_note(prompt: str, prior) -> str | None:
    """One line when `prior` ("embedded", a folder, or a loaded prior) is the embedded prior and
    `prompt` names no micro-world kind; else None."""
    from sds3d.guidance.priors.embedded_prior import EmbeddedPrior
    from sds3d.guidance.priors.prior_type import prior_type
    from .world import COLORS, KINDS

    embedded = prior_type(prior) == "embedded" if isinstance(prior, str) else isinstance(prior, EmbeddedPrior)
    if not embedded or names_a_kind(prompt):
        return None
    return (f"{prompt!r} names no micro-world object; the embedded prior knows {len(KINDS)} kinds x "
            f"{len(COLORS)} colours (`sds3d world` lists them); going on anyway")


def warn_outside_world(prompt: str, prior) -> None:
    """`scope_note` as an OutsideWorldWarning, for library callers."""
    note = scope_note(prompt, prior)
    if note:
        warnings.warn(note, OutsideWorldWarning, stacklevel=3)
