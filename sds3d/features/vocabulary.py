"""Scoring a text query against the part teacher's own vocabulary, as it was trained.

The part teacher (`part_teacher`) learnt a softmax over each of four vocabularies (the parts of every
kind, the part nouns, the kinds, the kinds in each colour; each with the background). Its per-phrase
sigmoid, thresholded at 0.5, is the weaker of its two heads (it was trained at a tenth of the
softmax's weight for most of the run) and under-selects small parts. A query that paraphrases a
trained concept (text cosine >= SNAP_COSINE to its nearest concept) is scored as in training, by
the softmax over the vocabulary that concept belongs to:

    nearest  = argmax_c <t_query, t_c>            (t_c: the concept's first phrasing)
    p_j(x)   = softmax_j( scale * <f_x, t_j> )     over the concepts j of nearest's vocabulary
    score(x) = sum of p_j(x) over the concepts whose parts overlap nearest's

so a point is selected (score > 0.5) where the majority of the mass names the query's parts (synonyms
add up). A part is named in two vocabularies, the parts of every kind ("mug/handle") and the part
nouns ("the handle", over every kind with a handle); their softmaxes were trained side by side and
each misses parts the other finds (the kinds' parts give an octahedron's body to other kinds' bodies,
the nouns find it; the nouns miss most of a clock's dial, the kinds' parts find more). A part query is
scored by both, and the larger mass counts:

    score(x) = max( mass in the kinds' parts of the concepts naming the query's parts,
                    mass in the part nouns of the nouns naming them )

(selection on the micro-world, 116 queries: 0.693 -> 0.729 mean IoU; `benchmarks/selection.py`).
Within one object the kind adds nothing; in a scene of several objects, "the mug's handle" also
selects another kind's handle. Paraphrases of the micro-world's parts sit at cosine 0.89-1.0 (the
untrained "the <part> on this <kind>": 0.95 at least), unrelated phrases at 0.54-0.82.

When the object's kind K is known (`kind`: the prompt of a generated run, an edit's source prompt),
a query naming parts of K is also scored within K alone: the foreground mass of the kinds' parts
times the share, among K's parts only, of the parts it names (its part nouns count, so "the handle"
and "the cup's handle" name a mug's handle); the kind itself ("the mug") is the foreground:

    within(x) = (1 - p_background(x)) * sum of q_j(x) over K's parts j that the query names,
    q_j(x)    = softmax_j( scale * <f_x, t_j> )   over the concepts "K/<part>" of K's parts
    score(x)  = max( within(x), the score without a kind )

The teacher then no longer has to tell K from the other kinds, which it cannot on generated assets
(fuzzy, blotchy renders unlike its training images: a generated purple sphere reads as a clock's
case, and "the sphere" selected nothing); the score without a kind still counts where its part
nouns find more of a small part (a rocket's nozzle). On the suite's 28 generated assets (opacity-
weighted IoU, `benchmarks/editing.py --generated`) selection rose from 0.34 to 0.60 (within alone:
0.56); on the editing benchmark's micro-world objects from 0.718 to 0.742. A query naming none of
K's parts is scored as without a kind.

Any other query q ("the legs", "a dragon") joins the nearest concept's vocabulary as one more label,
and the concepts whose phrasing is close to it (cosine >= MERGE_COSINE) count as naming it too:

    p(x)     = softmax( scale * [<f_x, q>, <f_x, t_j> for the concepts j of the vocabulary] )
    score(x) = p_q(x) + sum of p_j(x) over the concepts j with <q, t_j> >= MERGE_COSINE

so an unrelated phrase has to beat every trained concept where it selects. On 10 objects
(`benchmarks/open_vocabulary.py`) this selected less for 12 unrelated phrases and more of the right
part for 12 untrained part names than the teacher's open-vocabulary sigmoid head.

Reference: Language-driven Semantic Segmentation (LSeg), arXiv:2201.03546 (a label set's softmax)
"""

from __future__ import annotations

from functools import cached_property

import torch

SNAP_COSINE = 0.85  # a query at least this close to a trained concept is scored by its vocabulary
MERGE_COSINE = 0.75  # for any other query, the concepts at least this close count as naming it
PARTS, NOUNS = 0, 1  # the vocabularies (`PartVocabulary.groups`) of every kind's parts and of the part nouns


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
        self.group_of = torch.full((len(concepts),), 1, dtype=torch.long)  # index into groups; background: the part nouns'
        self.groups = []
        for g, keep in enumerate(members):
            members_g = [i for i, name in enumerate(self.names) if keep(name)]
            self.group_of[members_g] = g
            self.groups.append(torch.tensor([background] + members_g))

        self.kind_parts = {kind: torch.tensor([self.names.index(f"{kind}/{part}") for part in spec.parts])
                           for kind, spec in KINDS.items()}

    @cached_property
    def text(self) -> torch.Tensor:
        """[C, D] unit text features of each concept's first phrasing."""
        return self.teacher.text_features(self.phrases).float()

    def _mass(self, scaled: torch.Tensor, group: int, labels: torch.Tensor) -> torch.Tensor:
        """[N] softmax mass, over vocabulary `group`, of its concepts naming any of `labels` [L] bool."""
        members = self.groups[group]
        p = torch.softmax(scaled @ self.text[members].T, dim=-1)
        return p[:, (self.labels[members] & labels).any(-1)].sum(-1)

    def _concept_score(self, scaled: torch.Tensor, concept: int) -> torch.Tensor:
        """[N] score of a trained concept: its vocabulary's mass, or for a part the larger of the two
        part vocabularies' (module docstring)."""
        labels, group = self.labels[concept], int(self.group_of[concept])
        if group not in (PARTS, NOUNS):
            return self._mass(scaled, group, labels)
        nouns = labels if group == NOUNS else self._noun_labels(labels)
        return torch.maximum(self._mass(scaled, PARTS, labels), self._mass(scaled, NOUNS, nouns))

    def _noun_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """[L] bool: every part named by a part noun that names any of `labels` [L] bool."""
        return self.labels[[j for j in self.groups[NOUNS].tolist() if (self.labels[j] & labels).any()]].any(0)

    def _named_labels(self, concept: int) -> torch.Tensor:
        """[L] bool: the parts a trained concept names; a kind's part also by its nouns."""
        labels = self.labels[concept]
        return labels | self._noun_labels(labels) if int(self.group_of[concept]) == PARTS else labels

    def _score_within_kind(self, scaled: torch.Tensor, concept: int, kind: str) -> torch.Tensor | None:
        """[N] score of a trained concept within `kind`'s parts (module docstring), or None when it
        names none of them."""
        members = self.kind_parts[kind]
        named = (self.labels[members] & self._named_labels(concept)).any(-1)
        if not named.any():
            return None
        foreground = 1.0 - torch.softmax(scaled @ self.text[self.groups[PARTS]].T, dim=-1)[:, 0]
        return foreground * torch.softmax(scaled @ self.text[members].T, dim=-1)[:, named].sum(-1)

    @torch.no_grad()
    def scores(self, features: torch.Tensor, phrases: list[str], kind: str | None = None) -> torch.Tensor:
        """features [N, D] unit, phrases (P) -> [P, N] in [0, 1] (module docstring); `kind`: the
        object's micro-world kind when known."""
        queries = self.teacher.text_features(list(phrases)).float()
        scaled = self.teacher.model.log_scale.exp() * features.float()  # [N, D]
        out = []
        for q in queries:
            similarity = self.text @ q
            nearest = int(similarity.argmax())
            if float(similarity[nearest]) >= SNAP_COSINE:  # a trained concept
                score = self._concept_score(scaled, nearest)
                within = None if kind is None else self._score_within_kind(scaled, nearest, kind)
                out.append(score if within is None else torch.maximum(score, within))
                continue
            group = self.groups[int(self.group_of[nearest])]
            concepts = scaled @ self.text[group].T  # [N, G]
            p = torch.softmax(torch.cat([scaled @ q[:, None], concepts], dim=-1), dim=-1)
            out.append(p[:, 0] + p[:, 1:][:, similarity[group] >= MERGE_COSINE].sum(-1))
        return torch.stack(out)
