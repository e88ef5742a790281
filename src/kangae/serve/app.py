"""The FastAPI app of ``kangae serve``: a page that explains itself, and its JSON API.

``create_app(engine)`` builds the app around an :class:`~kangae.serve.engine.Engine` (one
loaded model); ``app_for(folder)`` loads a run or tour folder first. The page, its script and
its style sheet are package data read once at start (no CDN, no path from a request); only
``/docs`` (Swagger UI) loads its assets from a CDN, as FastAPI does by default.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..probes.registry import explainer_names
from .batcher import Busy
from .engine import Engine, NotAvailable, _round
from .inputs import BadInput, Seen, read_image
from .limits import ARRIVED, MAX_BODY, PICTURE_MAX_BODY, Arrival, BodyLimit, CancelOnDisconnect, HostCheck
from .picture_api import add_picture_routes
from .picture_engine import PictureEngine, picture_info

log = logging.getLogger("kangae.serve")

PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
LOCAL_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
UNPARSED = "There was an error parsing the body"  # FastAPI's words when json.loads raises
ASSETS = {"app.js": "text/javascript; charset=utf-8", "picture.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8"}
DIGIT_DESCRIPTION = ("Draw a digit; see what the model sees, what it rests on, what it imagines each class "
                     "looks like, and the fewest edits to change its mind.")
PICTURE_DESCRIPTION = ("Send a picture; see the top-5 classes, the crop the model sees, Grad-CAM and the "
                       "mask over it, and the model's prototype of any class.")

IMAGE_DOC = ("A drawing as a base64 PNG (or JPEG), bare or as a `data:image/png;base64,...` URL, which "
             "gets MNIST-style preprocessing; or a 28x28 array of numbers in [0, 1], taken as already "
             "preprocessed (white ink on black).")


class ImageIn(BaseModel):
    image: str | list[Any] = Field(description=IMAGE_DOC, examples=[[[0.0] * 28] * 28])


class ExplainIn(ImageIn):
    target: int | Literal["auto"] = Field("auto", description="Class to explain; `auto`: the predicted one.")
    method: str | None = Field(None, description=f"{', '.join(explainer_names()[:-1])} or "
                                                 f"{explainer_names()[-1]}; default: the server's "
                                                 "`--explain` (mask).")


class FixIn(ImageIn):
    target: int = Field(description="The class the drawing was meant to be.")
    max_edits: int = Field(64, ge=1, le=784, description="Give up after this many pixel edits.")
    threshold: float = Field(0.9, gt=0.0, lt=1.0, description="Probability of `target` to reach.")


class PredictOut(BaseModel):
    classes: list[str]
    probabilities: list[float]
    predicted: int
    confidence: float
    seen: list[list[float]] = Field(description="The (H, W) image the model saw, in [0, 1].")
    input: Literal["png", "array"]
    preprocessing: str
    inverted: bool
    ms: float


class ExplainOut(BaseModel):
    target: int
    method: str
    probability: float
    attribution: list[list[float]] = Field(description="(H, W); higher = more important for target.")
    summary: str = Field(description="One line, e.g. '7: p=96.1% -> 1.3% after deleting 6.2% of pixels'.")
    seen: list[list[float]]
    frame: list[float] | None = Field(None, description="For a PNG: [x, y, width, height] of the 28x28 "
                                                        "field in the drawing's pixels.")
    metrics: dict[str, Any]
    ms: float


class IdeasOut(BaseModel):
    ready: bool
    classes: list[str]
    method: str | None = None
    seconds: float | None = None
    probabilities: list[float] | None = Field(None, description="Each prototype's own-class probability.")
    images: list[list[list[float]]] | None = Field(None, description="(K, H, W) prototypes in [0, 1].")


class FixOut(BaseModel):
    target: int
    success: bool
    n_changed: int
    prob_before: float
    prob_after: float
    image: list[list[float]] = Field(description="The edited (H, W) image.")
    changed: list[list[int]] = Field(description="1 where a pixel was edited.")
    seen: list[list[float]]
    probabilities: list[float]
    metrics: dict[str, Any]
    ms: float


class ErrorOut(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Unusable image or target"},
    413: {"model": ErrorOut, "description": "Request body over the size limit"},
    422: {"model": ErrorOut, "description": "Request body does not match the schema"},
    503: {"model": ErrorOut, "description": "Too many requests waiting for the model"},
}


def _package_text(*parts: str) -> str:
    return resources.files("kangae.serve").joinpath(*parts).read_text(encoding="utf-8")


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    if any(err.get("type") == "json_invalid" for err in exc.errors()):
        return "invalid request: the body is not valid JSON"
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def create_app(engine: Engine, *, max_body: int = MAX_BODY, title: str = "",
               allowed_hosts: list[str] | None = None) -> FastAPI:
    """The app serving ``engine``'s model; closes the engine's pool on shutdown.

    ``allowed_hosts`` (e.g. :data:`LOCAL_HOSTS`) refuses requests whose ``Host`` header names
    anything else, so a web page cannot reach a local server through DNS rebinding.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        yield
        engine.close()

    picture = isinstance(engine, PictureEngine)
    app = FastAPI(title="kangae serve", version=__version__, lifespan=lifespan,
                  description=PICTURE_DESCRIPTION if picture else DIGIT_DESCRIPTION)
    app.add_middleware(CancelOnDisconnect)  # inside BodyLimit, which reads the body first
    app.add_middleware(BodyLimit, max_bytes=max_body)
    if allowed_hosts:
        app.add_middleware(HostCheck, allowed=allowed_hosts)
    app.add_middleware(Arrival)  # the last added is the outermost
    app.state.engine = engine
    env = jinja2.Environment(loader=jinja2.PackageLoader("kangae.serve", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]))
    assets = {name: _package_text("static", name).encode() for name in ASSETS}
    meta = engine.run.meta
    info = {"mode": "picture" if picture else "digits", "classes": engine.classes, "model": meta.model,
            "dataset": meta.dataset, "shape": list(engine.shape), "run": title or engine.run.path.name,
            "accuracy": _test_accuracy(meta.metrics)}
    if picture:
        info.update(picture_info(engine))
    page = env.get_template("picture.html" if picture else "index.html").render(info=info,
                                                                                 info_json=json.dumps(info))
    hw = engine.shape[-2:]

    def _decode_then(fn: Callable[..., Any]) -> Callable[..., tuple[Seen, Any]]:
        """Decoding and preprocessing run in the pool too, off the event loop."""
        def job(image: Any, *args: Any) -> tuple[Seen, Any]:
            seen = read_image(image, hw)
            return seen, fn(seen.image, *args)
        return job

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(NotAvailable)
    async def not_available(request: Request, exc: NotAvailable) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 400 and message == UNPARSED:  # e.g. JSON nested past Python's recursion limit
            message = "invalid request: the body could not be parsed as JSON (nested too deeply?)"
        return JSONResponse({"error": message}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error serving %s", request.url.path)
        return _error(500, f"internal error ({exc.__class__.__name__}); see the server log")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_CSP,
                                           "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in assets:  # a fixed set read at start: a request never names a file
            return _error(404, "not found")
        return Response(assets[name], media_type=ASSETS[name],
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    @app.get("/api/info", summary="The model being served")
    async def api_info() -> dict[str, Any]:
        return info

    if picture:
        add_picture_routes(app, engine, ERRORS)
        return app

    @app.post("/api/predict", response_model=PredictOut, responses=ERRORS,
              summary="Class probabilities, and the 28x28 image the model sees")
    async def predict(body: ImageIn, request: Request) -> dict[str, Any]:
        t0 = time.perf_counter()
        seen, probs = await engine.classify(partial(read_image, body.image, hw),
                                            arrived=request.scope.get(ARRIVED))
        p = probs.tolist()  # one tensor call on the event loop; the rest is plain Python
        k = max(range(len(p)), key=p.__getitem__)
        return {"classes": engine.classes, "probabilities": [round(v, 4) for v in p], "predicted": k,
                "confidence": round(p[k], 4), "seen": seen.rows,
                "input": seen.source, "preprocessing": seen.steps, "inverted": seen.inverted,
                "ms": round((time.perf_counter() - t0) * 1000, 2)}

    @app.post("/api/explain", response_model=ExplainOut, responses=ERRORS,
              summary="Which pixels the decision rests on (the explanation mask)")
    async def explain(body: ExplainIn, request: Request) -> dict[str, Any]:
        t0 = time.perf_counter()
        target = None if body.target == "auto" else engine.check_target(int(body.target))
        method = engine.check_method(body.method)
        seen, out = await engine.call(_decode_then(engine.explain), body.image, target, method, slow=True,
                                      arrived=request.scope.get(ARRIVED))
        return {**out, "attribution": _round(out["attribution"], 5), "seen": seen.rows,
                "frame": [round(v, 2) for v in seen.frame] if seen.frame else None,
                "probability": round(out["probability"], 4),
                "ms": round((time.perf_counter() - t0) * 1000, 2)}

    @app.get("/api/ideas", response_model=IdeasOut, responses={500: {"model": ErrorOut}},
             summary="The model's prototype ('idea') of every class")
    async def ideas() -> dict[str, Any]:
        try:
            found = engine.ideas()
        except Exception as e:  # noqa: BLE001 - the background computation failed
            return _error(500, f"prototype computation failed: {e}")
        if found is None:
            return {"ready": False, "classes": engine.classes}
        return {"ready": True, "classes": engine.classes, "method": found.method,
                "seconds": round(found.seconds, 2), "probabilities": found.probabilities,
                "images": _round(found.images.mean(1), 3)}

    @app.get("/api/ideas/{target}.png", responses={200: {"content": {"image/png": {}}}, **ERRORS},
             response_class=Response, summary="One class prototype as a PNG (4x enlarged)")
    async def idea_png(target: int, request: Request) -> Response:
        png = await engine.call(engine.idea_png, target, arrived=request.scope.get(ARRIVED))
        return Response(png, media_type="image/png")

    @app.post("/api/fix", response_model=FixOut, responses=ERRORS,
              summary="Fix my drawing: the fewest pixel edits that make it read as the target")
    async def fix(body: FixIn, request: Request) -> dict[str, Any]:
        t0 = time.perf_counter()
        target = engine.check_target(body.target)
        seen, out = await engine.call(_decode_then(engine.fix), body.image, target, body.max_edits,
                                      body.threshold, slow=True, arrived=request.scope.get(ARRIVED))
        return {**out, "image": _round(out["image"], 3), "changed": out["changed"].int().tolist(),
                "probabilities": _round(out["probabilities"]), "seen": seen.rows,
                "ms": round((time.perf_counter() - t0) * 1000, 2)}

    return app


def is_digit_model(run: Any) -> bool:
    """A model whose card prepares pictures as MNIST digits gets the drawing page."""
    return run.card is None or run.card.preprocess == "mnist"


def _test_accuracy(metrics: dict[str, Any]) -> float | None:
    """The run's test accuracy: kangae validates on the test split (``val_acc``)."""
    for key in ("test_accuracy", "accuracy", "val_acc"):
        if isinstance(metrics.get(key), (int, float)):
            return float(metrics[key])
    return None


def app_for(spec: str | os.PathLike, *, weights: str | os.PathLike | None = None,
            card: str | os.PathLike | None = None, workers: int = 2, ideas_method: str = "auto",
            explain_method: str | None = None, max_body: int | None = None,
            allowed_hosts: list[str] | None = None, **engine_options: Any) -> FastAPI:
    """Open ``spec`` and build its app: a run or tour folder (see :mod:`kangae.serve.source`),
    or any other ``SPEC`` of :func:`kangae.open_model` with ``weights`` and ``card``. A digit
    model (its card says ``mnist``) gets the drawing page and :class:`Engine`, any other the
    picture page and :class:`~kangae.serve.picture_engine.PictureEngine` (``mask_steps``,
    ``proto_steps`` and ``proto_batch`` go there). ``engine_options`` (``max_batch``,
    ``max_pending``, ``max_wait``, ...) go to the engine. ``max_body`` defaults to 1 MiB for
    drawings, 16 MiB for pictures."""
    from ..errors import RunError
    from ..training.run import load, open_model
    from .source import load_picture_prototypes, load_prototypes, resolve_source

    protos_path = None
    if Path(spec).is_dir():
        if weights is not None or card is not None:
            raise RunError(f"{spec}: a kangae run or tour folder carries its own weights and card; "
                           "--weights and --card are for other models")
        source = resolve_source(spec)
        protos_path = source.prototypes
        run = load(source.run) if source.run is not None else open_model(**source.model)  # type: ignore[arg-type]
    else:
        run = open_model(spec, weights=weights, card=card)
    if not is_digit_model(run):
        for name in ("ideas", "ideas_from", "compute_ideas_now"):
            engine_options.pop(name, None)
        known = None  # checked before the engine starts its threads
        if protos_path is not None:
            known = load_picture_prototypes(protos_path, len(run.classes), tuple(run.card.input_shape))
        engine = PictureEngine(run, workers=workers, explain_method=explain_method or "gradcam",
                               **engine_options)
        if known is not None:
            engine.prototypes.preload(*known, f"precomputed: {protos_path.name}")
        return create_app(engine, max_body=max_body or PICTURE_MAX_BODY, title=run.path.name,
                          allowed_hosts=allowed_hosts)
    for name in ("mask_steps", "proto_steps", "proto_batch"):
        engine_options.pop(name, None)
    ideas = None
    if protos_path is not None:
        ideas = load_prototypes(protos_path, len(run.classes), tuple(run.meta.input_shape))
    engine = Engine(run, workers=workers, ideas=ideas, ideas_method=ideas_method,
                    ideas_from=protos_path.name if protos_path else "",
                    explain_method=explain_method or "mask",
                    **engine_options)
    return create_app(engine, max_body=max_body or MAX_BODY, title=run.path.name, allowed_hosts=allowed_hosts)


__all__ = ["app_for", "create_app"]
