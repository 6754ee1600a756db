"""Feature distillation: 2D feature teachers, feature fields on 3D representations, and text queries
that select parts of an asset (DFF, Feature-3DGS, LERF)."""
