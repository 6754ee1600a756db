"""Scoring a text query against the part teacher's own vocabulary, as it was trained.

The part teacher (`part_teacher`) learnt a softmax over each of four vocabularies (the parts of every
kind, the part nouns, the kinds, the kinds in each colour; each with the background). Its per-phrase
sigmoid, thresholded at 0.5, is the weaker of its two heads (it was trained at a tenth of the
softmax's weight for most of the run) and under-selects small parts. Here a query competes, as in
training, with the other concepts of the vocabulary its nearest concept belongs to:

    nearest = argmax_c  <t_query, t_c>            (t_c: the concept's first phrasing)
    p_j(x)  = softmax_j( scale * <f_x, t_j> )      over j in [query, the vocabulary's other concepts]
    score(x) = sum of p_j(x) over the query and the concepts whose parts overlap the nearest's

so a query scores the probability mass of what it names (synonyms that name the same parts add up),
and a point is selected when that mass is the majority (score > 0.5). A query unlike every concept
snaps to the closest one's vocabulary and selects only where it outscores the others.

Reference: Language-driven Semantic Segmentation (LSeg), arXiv:2201.03546 (a label set's softmax)
"""

from __future__ import annotations

from functools import cached_property

import torch


class PartVocabulary:
    """The training concepts of `sds3d.world.part_dataset.part_concepts`, their parts and vocabularies,
    with the teacher's text features of each concept's first phrasing."""

    def __init__(self, teacher):
        from sds3d.world import KINDS
        from sds3d.world.part_dataset import part_concepts, part_names

        self.teacher = teacher
        concepts = part_concepts()
        self.names = [c.name for c in concepts]
        self.phrases = [c.phrases[0] for c in concepts]
        self.labels = torch.zeros(len(concepts), len(part_names()), dtype=torch.bool)
        for i, concept in enumerate(concepts):
            self.labels[i, list(concept.labels)] = True
        background = self.names.index("background")
        kinds = set(KINDS)
        members = [lambda n: "/" in n, lambda n: n.startswith("part:"), lambda n: n in kinds,
                   lambda n: " " in n and n.split(" ", 1)[1] in kinds]
        self.vocabulary = torch.full((len(concepts),), 1, dtype=torch.long)  # background: the part nouns'
        self.groups = []
        for g, keep in enumerate(members):
            members_g = [i for i, name in enumerate(self.names) if keep(name)]
            self.vocabulary[members_g] = g
            self.groups.append(torch.tensor([background] + members_g))
        self.background = background

    @cached_property
    def text(self) -> torch.Tensor:
        """[C, D] unit text features of each concept's first phrasing."""
        return self.teacher.text_features(self.phrases).float()

    @torch.no_grad()
    def scores(self, features: torch.Tensor, phrases: list[str]) -> torch.Tensor:
        """features [N, D] unit, phrases (P) -> [P, N] in [0, 1] (module docstring)."""
        queries = self.teacher.text_features(list(phrases)).float()
        scale = self.teacher.model.log_scale.exp()
        out = []
        for q in queries:
            nearest = int((self.text @ q).argmax())
            group = self.groups[int(self.vocabulary[nearest])] if nearest != self.background else self.groups[1]
            others = group[group != nearest]
            text = torch.cat([q[None], self.text[others]])  # [1 + G, D]
            p = torch.softmax(scale * features.float() @ text.T, dim=-1)  # [N, 1 + G]
            same = torch.cat([torch.ones(1, dtype=torch.bool), (self.labels[others] & self.labels[nearest]).any(-1)])
            out.append(p[:, same].sum(-1))
        return torch.stack(out)
