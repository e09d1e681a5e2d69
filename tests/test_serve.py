"""`cola-mm serve` driven over loopback: the official `openai` client for every endpoint
(streaming included), raw HTTP for the errors, batching that changes nothing, and cancellation."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from cola_mm.apps.driver import free_port
from cola_mm.pipeline import ColaPipeline

KEY = "test-key"
SAMPLER = {"steps": 2}


@pytest.fixture(scope="module")
def server(tiny_mm_pipeline, tmp_path_factory):
    import uvicorn

    from cola_mm.serve import create_app

    allowed = tmp_path_factory.mktemp("allowed")
    Image.new("RGB", (64, 64), (20, 20, 220)).save(allowed / "blue.png")
    pipe = ColaPipeline.from_pretrained(tiny_mm_pipeline)
    app = create_app(pipe, "cola-mm-tiny", api_key=KEY, max_batch=8, max_wait_ms=150, allow_files=[allowed])
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "pipe": pipe, "app": app, "allowed": allowed}
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server["url"] + "/v1", api_key=KEY, max_retries=0, timeout=120)


def post(server, path, body, key=KEY, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(server["url"] + path, headers=headers, timeout=120, **kw,
                      **({"json": body} if not isinstance(body, (bytes, str)) else {"content": body}))


def data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["cola-mm-tiny"]
    health = httpx.get(server["url"] + "/health").json()
    assert health["status"] == "ok" and set(health["jobs"]) == {"text_to_text", "text_to_image", "image_to_text"}


def test_completions_equal_the_pipeline_alone(server, client):
    pipe = server["pipe"]
    out = client.completions.create(model="cola-mm-tiny", prompt="the king", max_tokens=6, n=2, seed=7,
                                    extra_body=SAMPLER)
    alone = pipe.generate_text(["the king", "the king"], max_new_tokens=6, steps=2, seeds=[7, 8], return_result=True)
    assert [c.text for c in out.choices] == alone.outputs
    assert [c.index for c in out.choices] == [0, 1]
    assert out.usage.completion_tokens == sum(map(len, alone.tokens))
    assert all(c.finish_reason in ("stop", "length") for c in out.choices)
    # streamed: one chunk per block, the same text
    chunks = list(client.completions.create(model="x", prompt="the king", max_tokens=6, seed=7, stream=True,
                                            extra_body=SAMPLER))
    assert "".join(c.choices[0].text for c in chunks) == alone.outputs[0]
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_streamed_chat_continues_the_messages(server, client):
    pipe = server["pipe"]
    messages = [{"role": "system", "content": "the queen"}, {"role": "user", "content": "said to the king"}]
    stream = client.chat.completions.create(model="x", messages=messages, max_tokens=8, seed=3, stream=True,
                                            extra_body=SAMPLER)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == pipe.generate_text("the queen\nsaid to the king", max_new_tokens=8, steps=2, seed=3)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    whole = client.chat.completions.create(model="x", messages=messages, max_tokens=8, seed=3, extra_body=SAMPLER)
    assert whole.choices[0].message.content == text and whole.choices[0].message.role == "assistant"


def test_chat_with_an_image_is_captioned(server, client):
    pipe = server["pipe"]
    image = Image.new("RGB", (64, 64), (230, 40, 40))
    content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": data_url(image)}}]
    out = client.chat.completions.create(model="x", messages=[{"role": "user", "content": content}], seed=5,
                                         max_tokens=10, extra_body=SAMPLER)
    assert out.choices[0].message.content == pipe.caption([image], steps=2, seed=5, max_tokens=10)[0]
    streamed = client.chat.completions.create(model="x", messages=[{"role": "user", "content": content}], seed=5,
                                              max_tokens=10, stream=True, extra_body=SAMPLER)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == out.choices[0].message.content
    # a local file under --allow-files
    path = str(server["allowed"] / "blue.png")
    local = client.chat.completions.create(model="x", seed=5, max_tokens=10, extra_body=SAMPLER, messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": path}}]}])
    assert local.choices[0].message.content == pipe.caption([path], steps=2, seed=5, max_tokens=10)[0]


def test_image_generation_equals_the_pipeline_alone(server, client):
    pipe = server["pipe"]
    out = client.images.generate(model="x", prompt="a red circle", n=2, size="64x64", response_format="b64_json",
                                 extra_body={"seed": 4, **SAMPLER})
    got = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))).convert("RGB") for d in out.data]
    alone = pipe.generate_image("a red circle", steps=2, seed=4, n=2)
    assert [g.size for g in got] == [(64, 64)] * 2
    assert [g.tobytes() for g in got] == [a.tobytes() for a in alone]


def test_temperature_reaches_every_job(server, client):
    """OpenAI's ``temperature`` scales the starting noise, as the pipeline's ``temperature=`` does."""
    pipe = server["pipe"]
    out = client.completions.create(model="x", prompt="the king", max_tokens=6, seed=7, temperature=0.0,
                                    extra_body=SAMPLER)
    assert out.choices[0].text == pipe.generate_text("the king", max_new_tokens=6, steps=2, seed=7, temperature=0.0)
    cold = client.images.generate(model="x", prompt="a red circle", n=1, size="64x64", response_format="b64_json",
                                  extra_body={"seed": 4, "temperature": 0.0, **SAMPLER})
    got = Image.open(io.BytesIO(base64.b64decode(cold.data[0].b64_json))).convert("RGB")
    alone = pipe.generate_image("a red circle", steps=2, seed=4, temperature=0.0)[0]
    assert got.tobytes() == alone.tobytes()
    assert got.tobytes() != pipe.generate_image("a red circle", steps=2, seed=4)[0].tobytes()
    image = Image.new("RGB", (64, 64), (230, 40, 40))
    content = [{"type": "image_url", "image_url": {"url": data_url(image)}}]
    caption = client.chat.completions.create(model="x", messages=[{"role": "user", "content": content}], seed=5,
                                             max_tokens=10, temperature=0.5, extra_body=SAMPLER)
    assert caption.choices[0].message.content == pipe.caption([image], steps=2, seed=5, max_tokens=10,
                                                              temperature=0.5)[0]


def test_concurrent_requests_are_batched_and_unchanged(server, client):
    pipe = server["pipe"]
    stats = server["app"].state.batcher.stats
    before = dict(stats)
    prompts = ["the king", "love", "a lazy dog sat", "my lord", "the queen said", "sweet"]

    def ask(i):
        return client.completions.create(model="x", prompt=prompts[i], max_tokens=4 + i, seed=i,
                                         extra_body=SAMPLER).choices[0].text

    with ThreadPoolExecutor(len(prompts)) as pool:
        got = list(pool.map(ask, range(len(prompts))))
    for i, p in enumerate(prompts):
        assert got[i] == pipe.generate_text(p, max_new_tokens=4 + i, steps=2, seed=i)
    batches, rows = stats["batches"] - before["batches"], stats["rows"] - before["rows"]
    assert rows == len(prompts) and batches < len(prompts)  # at least two requests shared a sampler call


def test_a_closed_stream_stops_costing_compute(server):
    stats = server["app"].state.batcher.stats
    before = stats["cancelled_rows"]
    body = {"prompt": "the king", "max_tokens": 256, "stream": True, "seed": 1, "steps": 2}
    with httpx.stream("POST", server["url"] + "/v1/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                break  # first chunk, then hang up
    deadline = time.monotonic() + 30
    while stats["cancelled_rows"] == before:
        assert time.monotonic() < deadline, "the closed stream was never cancelled"
        time.sleep(0.05)
    r = post(server, "/v1/completions", {"prompt": "love", "max_tokens": 2, **SAMPLER})
    assert r.status_code == 200  # and the server goes on serving


ERRORS = [
    ("/v1/completions", {"prompt": "x", "max_tokens": "ten"}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 100000}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "n": True}, 400, "n"),
    ("/v1/completions", {"prompt": "x", "n": 99}, 400, "n"),
    ("/v1/completions", {"prompt": 5}, 400, "prompt"),
    ("/v1/completions", {"prompt": []}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x" * 5000}, 400, "prompt"),
    ("/v1/completions", {}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x", "stream": "yes"}, 400, "stream"),
    ("/v1/completions", {"prompt": "x", "seed": 1.5}, 400, "seed"),
    ("/v1/completions", {"prompt": "x", "steps": 0}, 400, "steps"),
    ("/v1/completions", {"prompt": "x", "guidance": "high"}, 400, "guidance"),
    ("/v1/completions", {"prompt": "x", "solver": "rk45"}, 400, "solver"),
    ("/v1/completions", [1, 2], 400, None),
    ("/v1/completions", b"{not json", 400, None),
    ("/v1/chat/completions", {"messages": "hi"}, 400, "messages"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"content": "hi"}]}, 400, "messages[0]"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, 400,
     "messages[0].content[0]"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}, 400, "messages[0].content[0]"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "/etc/passwd"}}]}]}, 400, "messages[0].content[0]"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}]}]}, 400,
     "messages[0].content[0]"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}]}]}, 400, "messages[0].content[0]"),
    ("/v1/images/generations", {"prompt": "a red circle", "size": "1024x1024"}, 400, "size"),
    ("/v1/images/generations", {"prompt": "a red circle", "response_format": "url"}, 400, "response_format"),
    ("/v1/images/generations", {"prompt": "a red circle", "n": 0}, 400, "n"),
    ("/v1/images/generations", {"size": "64x64"}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x", "temperature": 2.5}, 400, "temperature"),
    ("/v1/images/generations", {"prompt": "x", "temperature": -0.1}, 400, "temperature"),
    ("/v1/completions", {"prompt": "x", "temperature": "hot"}, 400, "temperature"),
]


@pytest.mark.parametrize("path,body,status,param", ERRORS)
def test_bad_requests_get_openai_errors(server, path, body, status, param):
    r = post(server, path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"] and err["param"] == param
    if param is not None:
        assert param.split(".")[0].split("[")[0] in err["message"] or param in err["message"]


def test_size_error_names_the_supported_size(server):
    r = post(server, "/v1/images/generations", {"prompt": "x", "size": "256x256"})
    assert "64x64" in r.json()["error"]["message"]


def test_api_key_is_enforced_and_unknown_fields_ignored(server):
    assert post(server, "/v1/completions", {"prompt": "x"}, key=None).status_code == 401
    assert post(server, "/v1/completions", {"prompt": "x"}, key="wrong").json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server["url"] + "/v1/models").status_code == 401
    r = post(server, "/v1/completions", {"prompt": "x", "max_tokens": 2, "temperature": 0.3, "frobnicate": [1],
                                         "user": "u", **SAMPLER})
    assert r.status_code == 200 and r.json()["object"] == "text_completion"


def test_oversized_image_is_refused(server):
    big = "data:image/png;base64," + "A" * (30 * 2**20)
    r = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": big}}]}]})
    assert r.status_code == 400 and "20 MB" in r.json()["error"]["message"]
    assert post(server, "/v1/completions", {"prompt": "x", "max_tokens": 1, **SAMPLER}).status_code == 200


def test_serve_cli_refuses_a_missing_checkpoint(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "serve", "--ckpt", str(tmp_path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("cola-mm: error: no pipeline at") and "Traceback" not in r.stderr
    json.dumps(r.stderr)
