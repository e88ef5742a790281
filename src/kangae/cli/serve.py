"""``kangae serve SPEC``: the drawing page (digit models) or the picture page (any other
image classifier), and their JSON API (see kangae.serve)."""

from __future__ import annotations

import os
import socket
import sys

import click

from ._options import model_options


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
@click.argument("spec", metavar="SPEC")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; anything but 127.0.0.1 exposes the model to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 16), default=2, show_default=True,
              help="Threads running the model (a bounded pool).")
@click.option("--ideas", "ideas_method", type=click.Choice(["auto", "greedy", "gradient"]), default="auto",
              show_default=True, help="How to compute class prototypes at start (auto: greedy when quick).")
@click.option("--explain", "explain_method", default=None,
              help="Explanation method for /api/explain (default: mask for digits, gradcam for pictures).")
@click.option("--mask-steps", type=click.IntRange(1, 10_000), default=None,
              help="Pictures: steps of the explanation mask (default 40; kangae explain takes 300).")
@click.option("--proto-steps", type=click.IntRange(1, 10_000), default=None,
              help="Pictures: steps of each class prototype, computed when first asked for (default 64).")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=64, show_default=True,
              help="Predictions that arrive together share one forward pass of up to this many (1: off).")
@click.option("--queue", "max_pending", type=click.IntRange(1, 100_000), default=256, show_default=True,
              help="Predictions in progress at most; past it a request gets 503 with Retry-After at once.")
@model_options
def serve(spec: str, host: str, port: int, workers: int, ideas_method: str, explain_method: str | None,
          mask_steps: int | None, proto_steps: int | None, max_batch: int, max_pending: int,
          weights: str | None, card: str | None) -> None:
    """Serve a page that explains the model's answers. A digit model gets a page to draw on:
    probabilities, what the model sees, the explanation mask, its prototypes and "fix my
    drawing". Any other model gets a page to drop a picture on: the top-5 classes, the crop
    the model sees, Grad-CAM and the mask over it, and the prototype of the predicted class
    and of the class you meant. SPEC is also a tour folder whose tour.json names a run
    ("serve_run")."""
    import torch
    import uvicorn

    from ..serve.app import LOCAL_HOSTS, app_for

    sock = _bind(host, port)  # before loading anything: a taken port fails at once
    port = sock.getsockname()[1]
    threads = click.get_current_context().meta["kangae.threads"].threads
    torch.set_num_threads(max(1, threads // workers))  # each of the workers runs the model
    picture = {k: v for k, v in (("mask_steps", mask_steps), ("proto_steps", proto_steps)) if v is not None}
    local = host in LOCAL_HOSTS or host == "::1"
    app = app_for(spec, weights=weights, card=card, workers=workers, ideas_method=ideas_method,
                  explain_method=explain_method, allowed_hosts=LOCAL_HOSTS if local else None,
                  max_batch=max_batch, max_pending=max_pending, **picture)
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
