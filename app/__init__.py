"""The Gradio web UI, a thin client of `sds3d.generate.generate`.

- `limits`: what one request may ask for;
- `runner`: input checks, one server-chosen run directory per request, the run in a worker thread;
- `ui`: the page (gradio Blocks) that starts runs, streams their progress and shows the results;
- `server`: the `sds3d app` flags and `launch`.

Only `ui` imports gradio (the `app` extra).
"""
