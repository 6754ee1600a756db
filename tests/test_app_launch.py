"""What `sds3d app` prints when it starts: where it listens, and the command-line way to share it."""

import socket

import pytest


def test_the_console_names_the_share_flag_not_gradios_argument(capsys, monkeypatch):
    gr = pytest.importorskip("gradio")
    from sds3d.app.ui import serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with gr.Blocks() as demo:
        gr.Markdown("sds3d")
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: None)  # returns instead of serving until Ctrl+C
    try:
        serve(demo, "127.0.0.1", port, block=True)
    finally:
        demo.close()
    out = capsys.readouterr().out
    assert f"Running on local URL:  http://127.0.0.1:{port}/" in out
    assert "add --share" in out and "share=True" not in out
