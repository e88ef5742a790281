"""``kangae serve RUN_OR_TOUR_DIR``: the drawing page and JSON API (see kangae.serve)."""

from __future__ import annotations

import os
import socket
import sys

import click


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port is one clear error line."""
    from ..errors import KangaeError

    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit this: without it a keep-alive response written in two
        # pieces waits for the client's delayed ACK (40 ms on Linux) before its second piece.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(info[4])
    except OSError as e:
        raise KangaeError(f"cannot listen on {host}:{port} ({e.strerror or e}); try another --port") from None
    return sock


@click.command("serve")
@click.argument("folder", type=click.Path(), metavar="RUN_OR_TOUR_DIR")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; anything but 127.0.0.1 exposes the model to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 16), default=2, show_default=True,
              help="Threads running the model (a bounded pool).")
@click.option("--ideas", "ideas_method", type=click.Choice(["auto", "greedy", "gradient"]), default="auto",
              show_default=True, help="How to compute class prototypes at start (auto: greedy when quick).")
@click.option("--explain", "explain_method", default="mask", show_default=True,
              help="Explanation method for /api/explain.")
def serve(folder: str, host: str, port: int, workers: int, ideas_method: str, explain_method: str) -> None:
    """Serve a page to draw a digit on: probabilities, what the model sees, the explanation
    mask, its prototypes, and "fix my drawing". RUN_OR_TOUR_DIR is a run folder, or a tour
    folder whose tour.json names one ("serve_run")."""
    import torch
    import uvicorn

    from ..serve.app import LOCAL_HOSTS, app_for

    sock = _bind(host, port)  # before loading anything: a taken port fails at once
    port = sock.getsockname()[1]
    threads = click.get_current_context().meta["kangae.threads"].threads
    torch.set_num_threads(max(1, threads // workers))  # each of the workers runs the model
    local = host in LOCAL_HOSTS or host == "::1"
    app = app_for(folder, workers=workers, ideas_method=ideas_method, explain_method=explain_method,
                  allowed_hosts=LOCAL_HOSTS if local else None)
    if not local:
        click.echo(f"warning: binding {host}: the page and API are reachable from other machines", err=True)
    click.echo(f"kangae serve: http://{host}:{port}/  (API docs at /docs; Ctrl-C stops)")
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after shutting down cleanly
        pass
    if not app.state.engine.ideas_done():
        # the prototype search cannot be interrupted; leave without waiting for it
        click.echo("kangae serve: stopped while the prototypes were still being computed", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
