"""Retrieval-augmented score distillation: asset libraries, their index, retrieval for a prompt, and
the two uses of what is retrieved (initialisation, prior adaptation), as in ReDream."""
