"""The 2D diffusion priors the guidance variants distil from: the interface (`prior`), the embedded
micro-world prior and its text encoder, Stable Diffusion, DeepFloyd IF stage I, and `prior_type`,
which tells a prior's folder or hub id apart."""
