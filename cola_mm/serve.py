"""``cola-mm serve``: the three jobs over HTTP in the shape of the OpenAI API.

    cola-mm serve --ckpt checkpoints/demo --port 8000
    curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\
         -d '{"prompt": "ROMEO. ", "max_tokens": 32, "seed": 0}'

Endpoints: ``POST /v1/completions`` (text continuation), ``POST /v1/chat/completions`` (the
messages' text is continued; a user message with an ``image_url`` part is captioned),
``POST /v1/images/generations`` (text → image), ``GET /v1/models``, ``GET /health``.
Completions and chat stream as server-sent events (``stream: true``), one chunk per generated
block. ``temperature`` (0–2) scales each block's starting noise (the checkpoint's default for the
job when absent). Sampler settings beyond the OpenAI fields: ``steps`` and ``guidance``
(classifier-free guidance scale); ``seed`` fixes the output (choice ``i`` uses ``seed + i``).

**Request batching.** One worker thread owns the pipeline. Concurrent requests of the same job
and sampler settings are gathered (up to ``max_batch`` samples, waiting at most ``max_wait_ms``
for company) into one sampler call; each request gets exactly what it would get alone (every
sample has its own noise, cache slice and mask). A client that goes away (a closed stream, a
dropped connection) is cancelled: its samples leave the batch at the next block.

**Errors** have the OpenAI shape ``{"error": {"message", "type", "param", "code"}}``: a wrong type
or value is a 400 that names the field, a missing or wrong API key a 401; unknown fields are
ignored. Limits: :class:`Limits`. The server binds to loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import io
import json
import logging
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int = 4000  # longer prompts are a 400 (the pipeline keeps a prompt's last 111 tokens anyway)
    max_prompts: int = 8  # prompts in one /v1/completions request
    max_tokens: int = 256  # per choice
    max_n: int = 8  # choices (or images) per request
    max_request_bytes: int = 32 * 2**20  # a 20 MB image as a base64 data URL fits
    max_messages: int = 64


class APIError(Exception):
    """An error answered in the OpenAI shape."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 type_: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.type, self.code = message, param, status, type_, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# --------------------------------------------------------------------------- request fields

_MISSING = object()


def _get(body: dict, name: str, kind: str, default: Any = _MISSING, lo: float | None = None,
         hi: float | None = None) -> Any:
    """``body[name]`` checked against ``kind`` (int | float | bool | str), with bounds."""
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        if default is _MISSING:
            raise APIError(f"'{name}' is required", name, code="missing_required_parameter")
        return default
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "bool": isinstance(value, bool), "str": isinstance(value, str)}[kind]
    if not ok:
        article = "an" if kind == "int" else "a"
        raise APIError(f"'{name}' must be {article} {kind}, got {type(value).__name__} {json.dumps(value)[:40]}",
                       name, code="invalid_type")
    if kind == "float" and value != value:
        raise APIError(f"'{name}' must be a number, got NaN", name, code="invalid_value")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise APIError(f"'{name}' must be between {lo} and {hi}, got {value}", name, code="invalid_value")
    return float(value) if kind == "float" else value


# --------------------------------------------------------------------------- the batcher


@dataclass
class Job:
    """One request's share of a batch: ``rows`` samples of one job with the same ``key``."""

    kind: str  # text | caption | image
    key: tuple  # requests with equal keys may share a sampler call
    inputs: list  # per row: a prompt (text, image) or a PIL image (caption)
    seeds: list[int]
    budgets: list[int] = field(default_factory=list)  # text: max new tokens per row
    loop: asyncio.AbstractEventLoop | None = None
    events: asyncio.Queue | None = None
    cancelled: bool = False

    @property
    def rows(self) -> int:
        return len(self.inputs)

    def emit(self, event: tuple) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Batcher:
    """Gathers jobs with equal keys and runs them on the pipeline in one worker thread."""

    def __init__(self, pipe, max_batch: int = 8, max_wait_ms: float = 20.0):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.pipe, self.max_batch, self.max_wait = pipe, max_batch, max_wait_ms / 1000
        self._pending: collections.deque[Job] = collections.deque()
        self._cv = threading.Condition()
        self._stop = False
        self.stats = {"batches": 0, "rows": 0, "max_rows": 0, "blocks": 0, "row_blocks": 0, "cancelled_rows": 0}
        self._thread = threading.Thread(target=self._run, name="cola-mm-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._stop:
                raise APIError("the server is shutting down", status=503, type_="server_error")
            self._pending.append(job)
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=30)

    def _take(self) -> list[Job] | None:
        with self._cv:
            while True:
                while self._pending and self._pending[0].cancelled:
                    self._pending.popleft()
                if self._stop:
                    return None
                if self._pending:
                    break
                self._cv.wait()
            first = self._pending[0]
            deadline = time.monotonic() + self.max_wait
            while True:
                rows = sum(j.rows for j in self._pending if j.key == first.key and not j.cancelled)
                left = deadline - time.monotonic()
                if rows >= self.max_batch or left <= 0 or self._stop:
                    break
                self._cv.wait(left)
            batch, rows = [], 0
            for job in list(self._pending):
                if job.key != first.key:
                    continue
                if job.cancelled or (batch and rows + job.rows > self.max_batch):
                    if job.cancelled:
                        self._pending.remove(job)
                    continue
                batch.append(job)
                rows += job.rows
                self._pending.remove(job)
            return batch

    def _run(self) -> None:
        import torch

        while True:
            batch = self._take()
            if batch is None:
                return
            if not batch:
                continue
            try:
                with torch.inference_mode():
                    {"text": self._run_text, "caption": self._run_text, "image": self._run_image}[batch[0].kind](batch)
            except Exception as err:  # noqa: BLE001 — reported to every request of the batch
                log.exception("batch failed")
                for job in batch:
                    job.emit(("error", APIError(f"generation failed: {type(err).__name__}: {err}", status=500,
                                                type_="server_error")))
            rows = sum(j.rows for j in batch)
            self.stats["batches"] += 1
            self.stats["rows"] += rows
            self.stats["max_rows"] = max(self.stats["max_rows"], rows)

    def _run_text(self, batch: list[Job]) -> None:
        inputs = [x for j in batch for x in j.inputs]
        seeds = [s for j in batch for s in j.seeds]
        kind, steps, cfg, solver, temperature, *rest = batch[0].key
        if kind == "text":
            stream = self.pipe.stream_text(inputs, max_new_tokens=[b for j in batch for b in j.budgets], steps=steps,
                                           cfg_scale=cfg, solver=solver, seeds=seeds, temperature=temperature)
        else:
            stream = self.pipe.stream_captions(inputs, steps=steps, cfg_scale=cfg, solver=solver, max_tokens=rest[0],
                                               seeds=seeds, temperature=temperature)
        spans, start = [], 0
        for job in batch:
            spans.append(range(start, start + job.rows))
            start += job.rows
        cancelled: set[int] = set()
        answered: set[int] = set()  # jobs already sent their result
        while True:
            for job, span in zip(batch, spans):
                if job.cancelled and span.start not in cancelled:
                    for i in span:
                        stream.cancel(i)
                    cancelled.add(span.start)
                    self.stats["cancelled_rows"] += job.rows
            try:
                deltas = next(stream)
            except StopIteration:
                break
            running = sum(1 for i, f in enumerate(stream.finished) if not f or deltas[i])
            self.stats["blocks"] += 1
            self.stats["row_blocks"] += running
            finished = stream.finished
            for k, (job, span) in enumerate(zip(batch, spans)):
                if job.cancelled or k in answered:
                    continue
                job.emit(("delta", [deltas[i] for i in span], [finished[i] for i in span]))
                if all(finished[i] for i in span):  # answer now, not when the whole batch is done
                    self._finish(job, stream, span)
                    answered.add(k)
        for k, (job, span) in enumerate(zip(batch, spans)):
            if k not in answered:
                self._finish(job, stream, span)

    @staticmethod
    def _finish(job: Job, stream, span: range) -> None:
        texts, tokens, finished = stream.texts, stream.tokens, stream.finished
        job.emit(("done", [texts[i] for i in span], [tokens[i] for i in span], [finished[i] for i in span]))

    def _run_image(self, batch: list[Job]) -> None:
        _, steps, cfg, solver, temperature = batch[0].key
        live = [j for j in batch if not j.cancelled]
        if not live:
            return
        prompts = [p for j in live for p in j.inputs]
        seeds = [s for j in live for s in j.seeds]
        tokens = self.pipe.generate_image_tokens(prompts, steps=steps, cfg_scale=cfg, solver=solver, seeds=seeds,
                                                 temperature=temperature)
        images = self.pipe.decode_image_tokens(tokens)
        self.stats["blocks"] += 1
        self.stats["row_blocks"] += len(prompts)
        start = 0
        for job in live:
            job.emit(("done", images[start:start + job.rows]))
            start += job.rows


# --------------------------------------------------------------------------- the app


def to_png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _required(body: dict, name: str) -> Any:
    value = body.get(name)
    if value is None:
        raise APIError(f"'{name}' is required", name, code="missing_required_parameter")
    return value


def _seed_list(body: dict, n: int) -> list[int]:
    seed = _get(body, "seed", "int", None, -(2**63), 2**63 - 1)
    base = random.randrange(2**31) if seed is None else seed
    return [(base + i) % 2**63 for i in range(n)]


def _sampler_key(body: dict, pipe, kind: str) -> tuple:
    steps = _get(body, "steps", "int", None, 1, 200)
    default = {"text": pipe.config.default_cfg_scale, "caption": pipe.config.default_caption_cfg_scale,
               "image": pipe.config.default_image_cfg_scale}[kind]
    guidance = _get(body, "guidance", "float", default, 0.0, 30.0)
    # the scale of the starting noise, OpenAI's range; the checkpoint's default for the job
    temperature = _get(body, "temperature", "float", getattr(pipe.config, f"{kind}_temperature"), 0.0, 2.0)
    solver = _get(body, "solver", "str", pipe.config.solver)
    from cola_mm.prior.flow import SOLVERS

    if solver not in SOLVERS:
        raise APIError(f"'solver' must be one of {sorted(SOLVERS)}, got {solver!r}", "solver", code="invalid_value")
    from cola_mm.pipeline import job_steps

    return (kind, steps or job_steps(pipe.config, kind), guidance, solver, temperature)


def create_app(pipe, model_id: str = "cola-mm", api_key: str | None = None, max_batch: int = 8,
               max_wait_ms: float = 20.0, allow_files: list[str | os.PathLike] = (), limits: Limits = Limits()):
    """The ASGI app (FastAPI) serving ``pipe``; ``app.state.batcher`` holds the batching stats."""
    from cola_mm.core.images import MAX_INPUT_BYTES, ImageInputError, load_image
    from cola_mm.pipeline import clean_text

    batcher = Batcher(pipe, max_batch, max_wait_ms)
    created = int(time.time())
    roots = [Path(p).resolve() for p in allow_files]
    image_size = pipe.image_vae.config.image_size if pipe.image_vae is not None else None
    app = FastAPI(title="Cola-MM", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher

    @app.on_event("shutdown")
    def _shutdown() -> None:
        batcher.close()

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(Exception)
    async def _internal(request: Request, err: Exception):
        log.exception("unhandled error")
        return JSONResponse(APIError(f"internal error: {type(err).__name__}", status=500, type_="server_error").body(),
                            status_code=500)

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        if request.url.path.startswith("/v1/") and api_key is not None:
            if request.headers.get("authorization", "") != f"Bearer {api_key}":
                return JSONResponse(APIError("a valid API key is required (Authorization: Bearer KEY)", status=401,
                                             code="invalid_api_key").body(), status_code=401)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_request_bytes:
            return JSONResponse(APIError(f"the request body is larger than {limits.max_request_bytes // 2**20} MB",
                                         status=413, code="request_too_large").body(), status_code=413)
        return await call_next(request)

    async def read_body(request: Request) -> dict:
        raw = await request.body()
        if len(raw) > limits.max_request_bytes:
            raise APIError(f"the request body is larger than {limits.max_request_bytes // 2**20} MB", status=413)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise APIError("the request body is not valid JSON", code="invalid_json") from None
        if not isinstance(body, dict):
            raise APIError(f"the request body must be a JSON object, got {type(body).__name__}", code="invalid_json")
        return body

    def check_prompt(prompt: Any, param: str) -> str:
        if not isinstance(prompt, str):
            raise APIError(f"'{param}' must be a string, got {type(prompt).__name__}", param, code="invalid_type")
        if len(prompt) > limits.max_prompt_chars:
            raise APIError(f"'{param}' is longer than {limits.max_prompt_chars} characters ({len(prompt)})", param,
                           code="prompt_too_long")
        return clean_text(prompt, [])

    def need_images(what: str) -> None:
        if pipe.image_vae is None:
            raise APIError(f"this model has no image VAE: it cannot {what}", status=400, code="unsupported")

    async def run_job(request: Request, job: Job) -> tuple:
        """Submit and wait for the final event; a client that disconnects cancels the job."""
        job.loop, job.events = asyncio.get_running_loop(), asyncio.Queue()
        batcher.submit(job)
        try:
            while True:
                try:
                    event = await asyncio.wait_for(job.events.get(), timeout=0.25)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        raise APIError("client disconnected", status=499) from None
                    continue
                if event[0] == "error":
                    raise event[1]
                if event[0] == "done":
                    return event
        except BaseException:
            job.cancelled = True  # disconnected or cancelled: its samples leave the batch at the next block
            raise

    def stream_job(job: Job, chunk) -> StreamingResponse:
        """Server-sent events: ``chunk(deltas, finished, final)`` → the JSON chunks of one block."""
        job.loop, job.events = asyncio.get_running_loop(), asyncio.Queue()
        batcher.submit(job)

        async def events():
            try:
                while True:
                    event = await job.events.get()
                    if event[0] == "error":
                        yield f"data: {json.dumps(event[1].body())}\n\n"
                        break
                    if event[0] == "delta":
                        for payload in chunk(event[1], event[2], final=False):
                            yield f"data: {json.dumps(payload)}\n\n"
                    elif event[0] == "done":
                        for payload in chunk(["" for _ in event[1]], event[3], final=True):
                            yield f"data: {json.dumps(payload)}\n\n"
                        yield "data: [DONE]\n\n"
                        break
            finally:  # the client went away (or the stream ended): stop spending compute on it
                job.cancelled = True

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def usage(prompt_tokens: int, tokens: list[list[int]]) -> dict:
        completion = sum(len(t) for t in tokens)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion}

    def finish_reason(tokens: list[int], budget: int) -> str:
        return "length" if len(tokens) >= budget else "stop"

    def n_tokens(text: str) -> int:
        return len(pipe.tokenizer.encode(text, add_special_tokens=False))

    # ---- endpoints
    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_id, "jobs": list(pipe.config.jobs), "batching": dict(batcher.stats)}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created,
                                            "owned_by": "cola-mm"}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_body(request)
        raw = _required(body, "prompt")
        prompts = [raw] if isinstance(raw, str) else raw
        if not isinstance(prompts, list) or not prompts:
            raise APIError("'prompt' must be a string or a non-empty list of strings", "prompt", code="invalid_type")
        if len(prompts) > limits.max_prompts:
            raise APIError(f"'prompt' holds more than {limits.max_prompts} prompts", "prompt", code="invalid_value")
        prompts = [check_prompt(p, "prompt") for p in prompts]
        max_tokens = _get(body, "max_tokens", "int", 16, 1, limits.max_tokens)
        n = _get(body, "n", "int", 1, 1, limits.max_n)
        stream = _get(body, "stream", "bool", False)
        echo = _get(body, "echo", "bool", False)
        key = _sampler_key(body, pipe, "text")
        rows = [p for p in prompts for _ in range(n)]
        job = Job("text", key, rows, _seed_list(body, len(rows)), [max_tokens] * len(rows))
        cid, now = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def choice(i, text, reason):
            prefix = rows[i] if echo else ""
            return {"index": i, "text": prefix + text, "logprobs": None, "finish_reason": reason}

        if stream:
            started = [False] * len(rows)

            def chunk(deltas, finished, final):
                out = []
                for i, (d, f) in enumerate(zip(deltas, finished)):
                    if final or d or (echo and not started[i]):
                        text = (rows[i] if echo and not started[i] else "") + d
                        started[i] = True
                        reason = ("stop" if f else "length") if final else None
                        out.append({"id": cid, "object": "text_completion", "created": now, "model": model_id,
                                    "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}]})
                return out

            return stream_job(job, chunk)
        _, texts, tokens, _ = await run_job(request, job)
        return {"id": cid, "object": "text_completion", "created": now, "model": model_id,
                "choices": [choice(i, t, finish_reason(tokens[i], max_tokens)) for i, t in enumerate(texts)],
                "usage": usage(sum(n_tokens(p) for p in prompts), tokens)}

    async def image_from_url(url: Any, param: str):
        if isinstance(url, dict):
            url = url.get("url")
        if not isinstance(url, str) or not url:
            raise APIError(f"'{param}' must hold a url string", param, code="invalid_type")
        if url.startswith("data:"):
            head, _, data = url.partition(",")
            if ";base64" not in head:
                raise APIError(f"'{param}': only base64 data URLs are read", param, code="invalid_image")
            if len(data) > MAX_INPUT_BYTES * 4 // 3 + 8:
                raise APIError(f"'{param}': the image is larger than {MAX_INPUT_BYTES // 2**20} MB", param,
                               code="image_too_large")
            try:
                source = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise APIError(f"'{param}': the data URL is not valid base64", param, code="invalid_image") from None
        elif url.startswith(("http://", "https://")):
            raise APIError(f"'{param}': this server does not fetch remote URLs; send the image as a base64 data URL",
                           param, code="invalid_image")
        else:
            path = Path(url[len("file://"):] if url.startswith("file://") else url)
            try:
                resolved = path.resolve()
            except (OSError, RuntimeError, ValueError):
                resolved = None
            if resolved is None or not any(resolved.is_relative_to(r) for r in roots):
                raise APIError(f"'{param}': this server reads local files only under the folders given with "
                               f"--allow-files; send the image as a base64 data URL", param, code="invalid_image")
            source = resolved
        try:
            return await run_in_threadpool(load_image, source, image_size)
        except (ImageInputError, OSError, ValueError) as err:
            raise APIError(f"'{param}': {str(err).splitlines()[0] if str(err) else type(err).__name__}", param,
                           code="invalid_image") from None

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await read_body(request)
        messages = _required(body, "messages")
        if not isinstance(messages, list) or not messages:
            raise APIError("'messages' must be a non-empty list", "messages", code="invalid_type")
        if len(messages) > limits.max_messages:
            raise APIError(f"'messages' holds more than {limits.max_messages} messages", "messages")
        texts, images = [], []
        for k, m in enumerate(messages):
            where = f"messages[{k}]"
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise APIError(f"'{where}' must be an object with a 'role' string", where, code="invalid_type")
            content = m.get("content")
            if content is None:
                continue
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            if not isinstance(parts, list):
                raise APIError(f"'{where}.content' must be a string or a list of parts", f"{where}.content",
                               code="invalid_type")
            for j, part in enumerate(parts):
                pw = f"{where}.content[{j}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    texts.append(check_prompt(part.get("text"), f"{pw}.text"))
                elif kind == "image_url":
                    if m["role"] != "user":
                        raise APIError(f"'{pw}': images are read from user messages only", pw)
                    images.append((pw, part.get("image_url")))
                else:
                    raise APIError(f"'{pw}' must be a text or image_url part", pw, code="invalid_type")
        max_tokens = _get(body, "max_completion_tokens", "int", None, 1, limits.max_tokens)
        if max_tokens is None:
            max_tokens = _get(body, "max_tokens", "int", 64, 1, limits.max_tokens)
        n = _get(body, "n", "int", 1, 1, limits.max_n)
        stream = _get(body, "stream", "bool", False)
        if images:
            need_images("caption images")
            if len(images) > 1:
                raise APIError("one image per request is captioned; send the others separately", images[1][0])
            image = await image_from_url(images[0][1], images[0][0])
            budget = min(max_tokens, pipe.config.caption_tokens - 2)
            key = _sampler_key(body, pipe, "caption") + (budget,)
            job = Job("caption", key, [image] * n, _seed_list(body, n))
            prompt_tokens = 0
        else:
            prompt = "\n".join(texts)
            if not prompt:
                raise APIError("'messages' hold no text to continue and no image to caption", "messages")
            if len(prompt) > limits.max_prompt_chars:
                raise APIError(f"the messages' text is longer than {limits.max_prompt_chars} characters", "messages",
                               code="prompt_too_long")
            budget = max_tokens
            job = Job("text", _sampler_key(body, pipe, "text"), [prompt] * n, _seed_list(body, n), [budget] * n)
            prompt_tokens = n_tokens(prompt)
        cid, now = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if stream:
            started = [False] * n

            def chunk(deltas, finished, final):
                out = []
                for i, (d, f) in enumerate(zip(deltas, finished)):
                    if final or d or not started[i]:
                        delta = {} if final and not d else {"content": d}
                        if not started[i]:
                            delta = {"role": "assistant", "content": d}
                            started[i] = True
                        reason = ("stop" if f else "length") if final else None
                        out.append({"id": cid, "object": "chat.completion.chunk", "created": now, "model": model_id,
                                    "choices": [{"index": i, "delta": delta, "logprobs": None,
                                                 "finish_reason": reason}]})
                return out

            return stream_job(job, chunk)
        _, outs, tokens, _ = await run_job(request, job)
        return {"id": cid, "object": "chat.completion", "created": now, "model": model_id,
                "choices": [{"index": i, "message": {"role": "assistant", "content": t},
                             "logprobs": None, "finish_reason": finish_reason(tokens[i], budget)}
                            for i, t in enumerate(outs)],
                "usage": usage(prompt_tokens, tokens)}

    @app.post("/v1/images/generations")
    async def images(request: Request):
        body = await read_body(request)
        need_images("generate images")
        prompt = check_prompt(_required(body, "prompt"), "prompt")
        n = _get(body, "n", "int", 1, 1, limits.max_n)
        supported = f"{image_size}x{image_size}"
        size = _get(body, "size", "str", supported)
        if size not in (supported, "auto"):
            raise APIError(f"'size' {size!r} is not supported: this model makes {supported} images", "size",
                           code="invalid_value")
        fmt = _get(body, "response_format", "str", "b64_json")
        if fmt != "b64_json":
            raise APIError(f"'response_format' must be 'b64_json' (this server keeps no files to link to), got {fmt!r}",
                           "response_format", code="invalid_value")
        job = Job("image", _sampler_key(body, pipe, "image"), [prompt] * n, _seed_list(body, n))
        _, pictures = await run_job(request, job)
        return {"created": int(time.time()),
                "data": [{"b64_json": base64.b64encode(to_png_bytes(im)).decode("ascii")} for im in pictures]}

    return app


def serve(ckpt: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_batch: int = 8, max_wait_ms: float = 20.0, allow_files: list[str] = (),
          trust_pickle_files: bool = False) -> None:
    import uvicorn

    from cola_mm.pipeline import ColaPipeline

    pipe = ColaPipeline.from_pretrained(ckpt, trust_pickle_files=trust_pickle_files)
    model_id = f"cola-mm-{Path(ckpt).resolve().name}"
    app = create_app(pipe, model_id, api_key, max_batch, max_wait_ms, allow_files)
    print(f"Cola-MM API ({model_id}) on http://{host}:{port}/v1 (Ctrl+C stops it)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
