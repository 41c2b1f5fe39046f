"""The HTTP face of `cnnkit serve`: a FastAPI app with three routes and the OpenAPI schema at /docs.

    GET  /healthz    {"status": "ok"} while the model's worker thread runs (503 once it stopped)
    GET  /metadata   the model card as JSON, with the source, the runtime, the precision and the limits
    POST /predict    multipart/form-data, field `image` (repeatable): one entry per image, in order, each what
                     `cnnkit predict --json` gives for it ("path": the uploaded file name); a detector's entry is
                     {"path", "detections": [its rows]} (cnnkit.serve.model)

A request is checked before it costs anything: the body's declared size, then its size while it streams
(413), the number of images (413), each part's content type (415), each image's pixels from its header (413),
then a full decode (422 for an empty, corrupt or truncated image, naming it). Every refusal is a 4xx with
{"detail": "..."}; a full queue or a model that does not answer in time is a 503. Checked images are written to
the server's private folder and handed to the batcher (cnnkit.serve.batcher), which deletes them after the
model call.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive

from cnnkit.errors import CnnkitError
from cnnkit.serve.batcher import Batcher, Busy
from cnnkit.serve.limits import Limits, content_type_of, megabytes
from cnnkit.serve.uploads import RequestError, check_image
from cnnkit.version import __version__

log = logging.getLogger("cnnkit.serve")

FIELD = "image"  # the multipart field of the images


class Health(BaseModel):
    status: str


class ErrorBody(BaseModel):
    """Every refusal: a 4xx (or 503) status and one line saying why."""

    detail: str


class _BodyTooLarge(Exception):
    pass


def _counting(receive: Receive, limit: int) -> Receive:
    """`receive` that raises _BodyTooLarge as soon as more than `limit` body bytes came in."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _BodyTooLarge
        return message

    return counted


def _check_headers(request: Request, limits: Limits) -> None:
    if content_type_of(request.headers.get("content-type")) != "multipart/form-data":
        raise RequestError(415, f"send the images as multipart/form-data, in the field {FIELD!r} (repeatable)")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise RequestError(400, f"bad Content-Length {declared[:40]!r}")
        if int(declared) > limits.max_request_bytes:
            raise RequestError(413, f"the request is {megabytes(int(declared))}, over the limit of "
                                    f"{megabytes(limits.max_request_bytes)}")


@contextlib.asynccontextmanager
async def _form(request: Request, limits: Limits) -> AsyncIterator[FormData]:
    """The parsed multipart form, its body counted while it streams; its spooled files closed afterwards."""
    _check_headers(request, limits)
    counted = Request(request.scope, _counting(request.receive, limits.max_request_bytes))
    try:
        form = await counted.form(max_files=4 * limits.max_images + 4, max_fields=16)
    except _BodyTooLarge:
        raise RequestError(413, f"the request is over the limit of {megabytes(limits.max_request_bytes)}") from None
    except ClientDisconnect:
        raise RequestError(400, "the client disconnected before the request was complete") from None
    try:
        yield form
    finally:
        await form.close()


def _uploads(form: FormData, limits: Limits) -> list[UploadFile]:
    """The form's images: only the field `image`, files only, 1 to max_images of them."""
    for key, value in form.multi_items():
        if key != FIELD:
            raise RequestError(422, f"unknown form field {key!r}; send the images in the field {FIELD!r}")
        if not isinstance(value, UploadFile):
            raise RequestError(422, f"the field {FIELD!r} must hold files (a part with a filename), not text")
    uploads = [v for v in form.getlist(FIELD) if isinstance(v, UploadFile)]
    if not uploads:
        raise RequestError(422, f"no image: send one or more files in the multipart field {FIELD!r}")
    if len(uploads) > limits.max_images:
        raise RequestError(413, f"{len(uploads)} images in one request; at most {limits.max_images}")
    return uploads


def _store(images: list[tuple[str, bytes, str | None]], limits: Limits, folder: Path) -> list[tuple[Path, str]]:
    """Check each (name, bytes, content type) and write it to `folder` under a fresh name with its format's
    suffix: [(file, name)]. On the first bad image nothing stays on disk and its RequestError is raised."""
    stored: list[tuple[Path, str]] = []
    try:
        for name, data, declared in images:
            suffix = check_image(name, data, declared, limits)
            path = folder / f"{uuid.uuid4().hex}{suffix}"
            path.write_bytes(data)
            stored.append((path, name))
    except BaseException:
        release(stored)
        raise
    return stored


def release(items: list[tuple[Path, str]]) -> None:
    """Delete the stored files of a request (the batcher calls it after the request's model call)."""
    for path, _ in items:
        path.unlink(missing_ok=True)


async def _predict(batcher: Batcher, items: list[tuple[Path, str]], limits: Limits) -> list[Any]:
    """The entries of `items` from the batcher (which then owns and deletes the files)."""
    try:
        future = batcher.submit(items)
    except Busy as err:
        release(items)
        raise RequestError(503, f"busy: {err}; try again shortly") from None
    try:
        entries = await asyncio.wait_for(asyncio.wrap_future(future), limits.timeout_s)
    except TimeoutError:
        raise RequestError(503, f"the model did not answer within {limits.timeout_s:g} s; try again") from None
    except CnnkitError as err:
        raise RequestError(422, str(err)) from None
    for entry in entries:
        if isinstance(entry, RequestError):
            raise entry
    return entries


def _predict_body(limits: Limits) -> dict[str, Any]:
    """The OpenAPI request body of /predict (the route reads the form itself, to check it as it streams)."""
    images = {"type": "array", "minItems": 1, "maxItems": limits.max_images,
              "items": {"type": "string", "format": "binary"},
              "description": "image files (JPEG, PNG, BMP, WebP, GIF, TIFF, PPM); repeat the field for several images"}
    schema = {"type": "object", "required": [FIELD], "additionalProperties": False, "properties": {FIELD: images}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}

PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "one entry per image, in order: what `cnnkit predict --json` gives for it, with \"path\" "
                         "the uploaded file name (a detector: {\"path\", \"detections\": [one row per box]})",
          "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}},
    400: {"model": ErrorBody, "description": "a malformed multipart body"},
    413: {"model": ErrorBody, "description": "too many bytes, images or pixels"},
    415: {"model": ErrorBody, "description": "not multipart/form-data, or an image of a type not served"},
    422: {"model": ErrorBody, "description": "no image, another field, or an empty, corrupt or truncated image"},
    503: {"model": ErrorBody, "description": "busy or stopping: try again"},
}


def _routes(app: FastAPI, model: Any, batcher: Batcher, limits: Limits, folder: Path) -> None:
    @app.get("/healthz", response_model=Health, responses={503: {"model": ErrorBody}})
    async def healthz() -> Any:
        """Liveness: ok while the model's worker thread runs."""
        if not batcher.alive:
            raise RequestError(503, "the model's worker thread has stopped")
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        """The model card (classes, input size, normalisation, ...), the source, runtime, precision, limits."""
        return {**model.metadata(), "limits": limits.as_dict()}

    @app.post("/predict", response_class=JSONResponse, responses=PREDICT_RESPONSES,
              openapi_extra=_predict_body(limits))
    async def predict(request: Request) -> JSONResponse:
        """Predictions for the images of a multipart/form-data request (field `image`, repeatable)."""
        async with _form(request, limits) as form:
            images = [(u.filename or f"image-{i + 1}", await u.read(), u.content_type)
                      for i, u in enumerate(_uploads(form, limits))]
        items = await run_in_threadpool(_store, images, limits, folder)
        return JSONResponse(await _predict(batcher, items, limits))


def _refused(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RequestError)
    headers = {"Retry-After": "1"} if err.status == 503 else None
    return JSONResponse({"detail": err.detail}, status_code=err.status, headers=headers)


def _failed(request: Request, err: Exception) -> JSONResponse:
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(err).__name__, err)
    return JSONResponse({"detail": f"internal error: {type(err).__name__}"}, status_code=500)


def create_app(model: Any, batcher: Batcher, limits: Limits, folder: Path,
               on_ready: Callable[[], None] | None = None) -> FastAPI:
    """The app of `model` (a ServedModel: .metadata(), .target) whose predictions `batcher` makes; uploads are
    stored in `folder` (private to the server) until their model call. `on_ready()` runs when the server starts
    serving (its signal handlers installed, its socket listening)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if on_ready is not None:
            on_ready()
        yield

    app = FastAPI(title="cnnkit serve", version=__version__, lifespan=lifespan,
                  description=f"Predictions of {model.target} over HTTP: POST images to /predict.")
    _routes(app, model, batcher, limits, Path(folder))
    app.add_exception_handler(RequestError, _refused)
    app.add_exception_handler(Exception, _failed)
    return app
