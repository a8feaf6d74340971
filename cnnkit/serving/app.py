"""The HTTP server: a FastAPI app speaking the TensorFlow Serving REST API over ONNX Runtime."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from cnnkit.config import ServeConfig
from cnnkit.serving.batching import MicroBatcher, Overloaded
from cnnkit.serving.decoding import RETRY_AFTER_S, Budget, Decoder
from cnnkit.serving.guard import Guard, default_hosts, page_csp
from cnnkit.serving.hooks import ClassifyHook
from cnnkit.serving.memory import Trimmer
from cnnkit.serving.runtime import ModelRepository, ServedVersion
from cnnkit.serving.tfserving import (
    RequestError,
    classify_results,
    metadata,
    parse_classify,
    parse_predict,
    parse_url,
    resolve,
    threshold_decisions,
    version_status,
)

log = logging.getLogger("cnnkit.serving")
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Prometheus metrics in a registry of the app's own (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("cnnkit_requests_total", "HTTP requests by model, verb and status code",
                                ["model", "verb", "code"], registry=self.registry)
        self.latency = Histogram("cnnkit_request_latency_seconds", "Request latency in seconds", ["verb"],
                                 buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.batch = Histogram("cnnkit_batch_size", "Images per ONNX Runtime call",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.waiting = Gauge("cnnkit_requests_waiting", "Requests queued for a model call, by model and version",
                             ["model", "version"], registry=self.registry)
        self.busy = Gauge("cnnkit_lanes_busy", "Model calls running, by model and version", ["model", "version"],
                          registry=self.registry)


class Server:
    """Models, their batchers and the metrics; the routes below are thin wrappers around it."""

    def __init__(self, repository: ModelRepository, config: ServeConfig, hooks: tuple[ClassifyHook, ...] = ()) -> None:
        self.repository = repository
        self.hooks = hooks
        self.config = config
        self.metrics = Metrics()
        self.batchers: dict[tuple[str, int], MicroBatcher] = {}
        self.decoder = Decoder(threads=config.decode_threads, budget_bytes=int(config.decode_budget_mb * 2**20),
                               max_request_pixels=int(config.max_request_mpx * 1e6), timeout_s=config.decode_timeout)
        self.bodies = Budget(int(config.body_budget_mb * 2**20), what="request bodies being received",
                             flag="--body-budget-mb")
        self.trimmer = Trimmer()
        self.decoder.on_decoded = self.trimmer.note

    def batcher(self, served: ServedVersion) -> MicroBatcher:
        key = (served.name, served.version)
        if key not in self.batchers:
            batcher = MicroBatcher(served.run_lane, run_alone=served.run, lanes=served.lanes,
                                   max_batch=self.config.max_batch, max_wait_ms=self.config.max_wait_ms,
                                   max_queue=self.config.max_queue, on_batch=self.metrics.batch.observe)
            self.batchers[key] = batcher
            labels = {"model": served.name, "version": str(served.version)}
            self.metrics.waiting.labels(**labels).set_function(lambda: batcher.waiting)  # read at scrape time
            self.metrics.busy.labels(**labels).set_function(lambda: batcher.busy)
        return self.batchers[key]

    async def infer(self, served: ServedVersion, images: Any, *, deadline: float | None = None) -> Any:
        try:
            return await self.batcher(served).submit(images, deadline=deadline)
        except Overloaded as exc:
            raise RequestError(429, str(exc), retry_after_s=RETRY_AFTER_S) from None

    async def close(self) -> None:
        await self.trimmer.stop()
        for batcher in self.batchers.values():
            await batcher.close()
        self.decoder.close()


def create_app(repository: ModelRepository, config: ServeConfig, *, hooks: tuple[ClassifyHook, ...] = ()) -> FastAPI:
    """The ASGI app serving `repository`; `hooks` add to :classify answers (cnnkit.serving.hooks)."""
    server = Server(repository, config, hooks)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        server.trimmer.start()
        yield
        await server.close()

    docs = {} if config.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    # No trailing-slash redirects: an API client gets a 404 in the usual error shape, not an empty 307.
    app = FastAPI(title="cnnkit model server", version="1", lifespan=lifespan, redirect_slashes=False, **docs)
    app.state.server = server
    page = resources.files("cnnkit.serving.web").joinpath("index.html").read_text()
    origins = _split(config.cors_origin)
    if origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type"])
    hosts = _split(config.allowed_hosts) or default_hosts(config.host)
    app.add_middleware(Guard, hosts=hosts, origins=origins, csp=page_csp(page),  # outermost: runs first
                       max_headers=config.max_headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Requests that match no route (e.g. a path with a newline) get the same {"error": ...} shape as the rest.
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": f"invalid request: {exc.errors()[:3]}"}, status_code=400)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": {name: sorted(m.versions) for name, m in repository.models.items()}}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models/{path:path}")
    async def get_model(path: str) -> Response:
        verb = "metadata" if path.endswith("/metadata") else "status"
        return await _answer(server, path, verb, lambda: _status(server, path))

    @app.post("/v1/models/{path:path}")
    async def post_model(path: str, request: Request) -> Response:
        verb = path.rsplit(":", 1)[-1] if ":" in path else "post"
        response = await _answer(server, path, verb if verb in ("predict", "classify") else "other",
                                 lambda: _infer(server, path, request))
        # Runs once the answer is sent: the request's memory is free then.
        response.background = BackgroundTask(server.trimmer.finished, getattr(request.state, "body_bytes", 0))
        return response

    return app


async def _answer(server: Server, path: str, verb: str, handler: Any) -> Response:
    """Run a handler; map RequestError to its status and anything unexpected to 500, and record metrics."""
    started = time.perf_counter()
    name = path.split("/", 1)[0].split(":", 1)[0]
    model = name if name in server.repository.models else "-"  # bounded label values: served names only
    headers = None
    try:
        payload = await handler()
        status = 200
    except RequestError as exc:
        status, payload = exc.status, {"error": str(exc)}
        if exc.retry_after_s is not None:
            headers = {"Retry-After": str(exc.retry_after_s)}
        if status in (408, 413):  # the body was not read whole: the connection cannot carry another request
            headers = {"Connection": "close"}
    except ClientDisconnect:
        status, payload = 499, {"error": "client closed the connection"}  # nginx's code; nobody reads the answer
    except Exception:  # noqa: BLE001 - a bug must not take the server down; it is logged and counted
        log.exception("internal error")
        status, payload = 500, {"error": "internal server error"}
    server.metrics.requests.labels(model=model, verb=verb, code=str(status)).inc()
    server.metrics.latency.labels(verb=verb).observe(time.perf_counter() - started)
    return _json(payload, status, headers)


def _json(payload: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    """orjson writes float32 arrays straight from NumPy, several times faster than json.dumps of lists."""
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json", headers=headers)


async def _status(server: Server, path: str) -> dict[str, Any]:
    target = parse_url(path)
    if target.verb is not None:
        raise RequestError(405, f":{target.verb} needs POST")
    model = _model(server, target.name)
    if target.metadata:
        return metadata(resolve(model, target))
    return version_status(model, target)


async def _infer(server: Server, path: str, request: Request) -> dict[str, Any]:
    target = parse_url(path)
    if target.verb not in ("predict", "classify"):
        raise RequestError(404 if target.verb is None else 400,
                           f"unsupported method {target.verb!r}; use :predict or :classify")
    model = _model(server, target.name)
    served = resolve(model, target)
    max_containers = _most_containers(served, max_images=server.config.max_images)
    raw = await _read_body(request, server, max_containers=max_containers)
    # JSON parsing and image decoding run on the decoder's pools, so the event loop keeps serving other requests.
    # A body counts against --body-budget-mb until it is parsed, not only while it arrives: bodies queued for the
    # parser are memory too, and what the parser builds from them more.
    max_images, max_pixels = server.config.max_images, server.decoder.max_request_pixels
    # --max-queue-wait is the request's whole wait, from its body's arrival, over the parsing, decoding and model
    # queues together: each refuses it (429) as soon as the work queued ahead would take longer than it has left.
    wait = server.config.max_queue_wait
    deadline = time.monotonic() + wait if wait else None
    try:
        check_structure(raw, max_containers=max_containers)
        if target.verb == "predict":
            items, columnar = await server.decoder.parse(lambda: parse_predict(_parse_json(raw), served,
                                                                               max_images=max_images,
                                                                               max_pixels=max_pixels),
                                                         body_bytes=len(raw), deadline=deadline)
        else:
            body, items, contexts = await server.decoder.parse(
                lambda: _parse_classify(raw, served, max_images=max_images, max_pixels=max_pixels, hooks=server.hooks),
                body_bytes=len(raw), deadline=deadline)
    finally:
        server.bodies.release(len(raw))
    images = await server.decoder.decode(items, served, deadline=deadline)
    probs = await server.infer(served, images, deadline=deadline)
    if target.verb == "predict":
        return {"outputs" if columnar else "predictions": probs}
    answer: dict[str, Any] = {"results": classify_results(probs, served, top_k=server.config.top_k)}
    decisions = threshold_decisions(probs, served)
    if decisions is not None:
        answer["decisions"] = decisions
    for hook, context in zip(server.hooks, contexts):
        answer[hook.key] = await hook.answer(context, decisions)
    return answer


def _model(server: Server, name: str) -> Any:
    try:
        return server.repository.get(name)
    except KeyError as exc:
        raise RequestError(404, str(exc.args[0])) from None


# A refused body is still read and dropped, up to these bounds, before the 413 goes out: a client that is still
# sending (and asked for "Connection: close") would otherwise see a reset connection instead of the error.
DRAIN_MAX_BYTES = 64 * 1024 * 1024
DRAIN_MAX_S = 5.0


async def _read_body(request: Request, server: Server, *, max_containers: int | None = None) -> bytes:
    """The body, within --max-body-mb (413), --body-timeout (408) and the server's --body-budget-mb (429). With
    `max_containers`, a body is refused (400) as soon as it has brought more JSON arrays and objects than that: the
    rest of a 15 MB body of empty arrays is not waited for. That body is not drained: a client that sends one is
    not owed a clean connection."""
    limit = server.config.max_body_bytes
    too_large = RequestError(413, f"request body over the {limit}-byte limit (--max-body-mb)")
    stream = request.stream()
    declared = request.headers.get("content-length")
    declared_bytes = int(declared) if declared is not None and declared.isascii() and declared.isdigit() else None
    if declared_bytes is not None and declared_bytes > limit:
        # A client that sent "Expect: 100-continue" waits for our answer before it sends the body.
        if declared_bytes <= DRAIN_MAX_BYTES and request.headers.get("expect", "").lower() != "100-continue":
            await _drain(stream)
        raise too_large
    reserved = declared_bytes if declared_bytes is not None else limit  # a chunked body may grow to the limit
    server.bodies.reserve(reserved)
    chunks: list[bytes] = []
    size = containers = 0
    try:
        async with asyncio.timeout(server.config.body_timeout):
            async for chunk in stream:
                size += len(chunk)
                if size > limit:
                    await _drain(stream, already=size)
                    raise too_large
                if max_containers is not None:
                    containers += chunk.count(b"[") + chunk.count(b"{")
                    if containers > max_containers:
                        raise _too_many_containers(containers, size, max_containers)
                chunks.append(chunk)
            body = b"".join(chunks)
            reserved -= len(body)  # the rest is released once the body is parsed (_infer)
            return body
    except TimeoutError:
        raise RequestError(408, f"the request body took over {server.config.body_timeout:g} s to arrive "
                                "(--body-timeout)") from None
    finally:
        server.bodies.release(reserved)
        server.trimmer.note(size)
        request.state.body_bytes = size


async def _drain(stream: AsyncIterator[bytes], *, already: int = 0) -> None:
    async def drop() -> None:
        size = already
        async for chunk in stream:
            size += len(chunk)
            if size > DRAIN_MAX_BYTES:
                return

    try:
        await asyncio.wait_for(drop(), timeout=DRAIN_MAX_S)
    except (TimeoutError, ClientDisconnect):
        pass  # the 413 goes out anyway; the client may not see it


def _parse_classify(raw: bytes, served: ServedVersion, *, max_images: int, max_pixels: int,
                    hooks: tuple[ClassifyHook, ...]) -> tuple[Any, list[Any], list[Any]]:
    body = _parse_json(raw)
    items = parse_classify(body, served, max_images=max_images, max_pixels=max_pixels)
    return body, items, [hook.prepare(body) for hook in hooks]


MIN_BYTES_PER_CONTAINER = 6  # "[0,0,0]," is 8: a pixel's list; a body denser in arrays and objects is no request


def _most_containers(served: ServedVersion, *, max_images: int) -> int:
    """The most JSON arrays and objects a request to this model can need: one per pixel row and pixel of each image
    at the model's input size, plus a few per image and per request."""
    side = served.input_shape[0] * served.input_shape[1] + served.input_shape[0]
    return max_images * (side + 4) + 16


def check_structure(raw: bytes, *, max_containers: int) -> None:
    """Refuse, before parsing, a body with more JSON arrays and objects than any request to this model can need
    (`max_containers`), or more than one per MIN_BYTES_PER_CONTAINER bytes: parsing builds an object for each while
    holding the GIL (a 15 MB body of 5 million empty arrays took seconds, and stalled every other request meanwhile).
    Counting brackets is a memchr-speed scan, milliseconds for 16 MiB."""
    containers = raw.count(b"[") + raw.count(b"{")
    needed = min(max_containers, len(raw) // MIN_BYTES_PER_CONTAINER + 16)
    if containers > needed:
        raise _too_many_containers(containers, len(raw), needed)


def _too_many_containers(containers: int, size: int, needed: int) -> RequestError:
    return RequestError(400, f"the body holds {containers:,} JSON arrays and objects in its first {size:,} bytes, "
                             f"more than a request to this model can need ({needed:,}); images go as base64 or as "
                             "nested lists at the model's input size")


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # also a 5,000-digit integer (int's string-conversion limit)
        raise RequestError(400, f"malformed JSON: {exc}") from None


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip().lower().rstrip("/") for part in (text or "").split(",") if part.strip())
