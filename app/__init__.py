"""The Gradio front end: a thin client of the library (in progress, see the issue tracker)."""
