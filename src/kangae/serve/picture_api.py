"""The JSON API of the picture page, for any image classifier that is not a digit model.

``POST /api/predict`` takes an uploaded picture (base64 or a data URL), prepares it as the
model card says and answers the top-5 classes and the crop the model saw; ``POST
/api/explain`` lays Grad-CAM or the mask over that crop; ``GET /api/prototypes/{k}`` is the
model's prototype of class ``k``, computed on demand (see
:mod:`kangae.serve.picture_engine`).
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, Field

from .engine import NotAvailable
from .inputs import read_picture
from .limits import ARRIVED
from .picture_engine import PICTURE_METHODS, TOP_K, PictureEngine

PICTURE_DOC = ("A picture as base64 or a `data:image/...;base64,...` URL: PNG, JPEG, GIF, BMP or WebP, "
               "of any size; it is resized and cropped as the model card says.")
MAX_PROTO_WAIT_S = 30.0


class PictureIn(BaseModel):
    image: str = Field(description=PICTURE_DOC)
    prepared: bool = Field(False, description="The image is already the model's crop (the `crop` of "
                                              "/api/predict, exactly the model's size): taken as it is.")


class PictureExplainIn(PictureIn):
    target: int | Literal["auto"] = Field("auto", description="Class to explain; `auto`: the predicted one.")
    method: str | None = Field(None, description=f"{', '.join(PICTURE_METHODS)}; default: the server's "
                                                 "`--explain` (gradcam on a model with a conv layer).")


class ClassOut(BaseModel):
    index: int
    name: str
    probability: float


class PicturePredictOut(BaseModel):
    top: list[ClassOut] = Field(description=f"The {TOP_K} most probable classes, most probable first.")
    predicted: int
    name: str
    confidence: float
    crop: str = Field(description="What the model sees: the prepared picture as a PNG data URL.")
    size: list[int] = Field(description="[height, width] of the crop (the model's input size).")
    upload: list[int] = Field(description="[width, height] of the picture as sent.")
    preprocessing: str
    ms: float


class PictureExplainOut(BaseModel):
    target: int
    name: str
    method: str
    probability: float
    summary: str
    overlay: str = Field(description="The map over the crop, as a PNG data URL of the crop's size.")
    heat: str = Field(description="The map's positive part (evidence for the class) scaled to its maximum, "
                                  "as an 8-bit grey PNG data URL.")
    size: list[int]
    metrics: dict[str, Any] = Field(description="The method's settings (e.g. the mask's steps) and results.")
    ms: float


class PrototypeOut(BaseModel):
    index: int
    name: str
    ready: bool
    image: str | None = Field(None, description="The prototype at the model's size, a PNG data URL.")
    probability: float | None = Field(None, description="The model's probability of the class for it.")
    seconds: float | None = Field(None, description="Time of the batch that computed it.")
    batch: int | None = Field(None, description="Classes computed in that batch.")
    source: str | None = Field(None, description="`computed`, or `precomputed: FILE` for a tour's.")
    position: int = Field(description="While not ready: 0 being computed, n: n - 1 classes before it.")
    settings: dict[str, Any]


def add_picture_routes(app: FastAPI, engine: PictureEngine, errors: dict[int | str, dict[str, Any]]) -> None:
    """The picture page's API on ``app``."""

    def decode_then(fn: Any) -> Any:
        def job(image: str, prepared: bool, *args: Any) -> Any:
            return fn(read_picture(image, engine.card, prepared), *args)
        return job

    @app.post("/api/predict", response_model=PicturePredictOut, responses=errors,
              summary="The top-5 classes of a picture, and the crop the model sees")
    async def predict(body: PictureIn, request: Request) -> dict[str, Any]:
        t0 = time.perf_counter()
        picture, probs = await engine.classify(partial(read_picture, body.image, engine.card, body.prepared),
                                               arrived=request.scope.get(ARRIVED))
        top = engine.top(probs)
        return {"top": top, "predicted": top[0]["index"], "name": top[0]["name"],
                "confidence": top[0]["probability"], "crop": picture.crop,
                "size": list(picture.image.shape[-2:]),
                "upload": list(picture.size), "preprocessing": picture.steps,
                "ms": round((time.perf_counter() - t0) * 1000, 2)}

    @app.post("/api/explain", response_model=PictureExplainOut, responses=errors,
              summary="What the answer rests on: Grad-CAM or the mask over the crop")
    async def explain(body: PictureExplainIn, request: Request) -> dict[str, Any]:
        t0 = time.perf_counter()
        target = None if body.target == "auto" else engine.check_target(int(body.target))
        method = engine.check_method(body.method)
        out = await engine.call(decode_then(engine.explain_picture), body.image, body.prepared, target,
                                method, lane="mask" if method == "mask" else "slow",
                                arrived=request.scope.get(ARRIVED))
        return {**out, "ms": round((time.perf_counter() - t0) * 1000, 2)}

    @app.get("/api/prototypes/{target}", response_model=PrototypeOut, responses=errors,
             summary="The model's prototype of one class, computed on demand and kept")
    async def prototype(target: int, wait: float = Query(0.0, ge=0.0, le=MAX_PROTO_WAIT_S,
                                                         description="Seconds to wait for it at most.")
                        ) -> dict[str, Any]:
        k = engine.check_target(target)
        future = engine.prototypes.get(k)
        if wait and not future.done():  # waits on the event loop without holding a thread
            await asyncio.wait({asyncio.wrap_future(future)}, timeout=wait)
        out: dict[str, Any] = {"index": k, "name": engine.classes[k], "ready": future.done(),
                               "position": engine.prototypes.position(k),
                               "settings": engine.prototypes.settings}
        if future.done():
            try:
                p = future.result()
            except Exception as e:  # noqa: BLE001 - the background computation failed
                raise NotAvailable(f"prototype computation failed: {e}", 500) from None
            out.update(image=p.image, probability=p.probability, seconds=p.seconds, batch=p.batch, position=0,
                       source=p.source)
        return out
