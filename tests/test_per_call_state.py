"""One pipeline, many callers: every call owns its notices and tokens, rows leave a batch when
they finish or are cancelled without changing the others, and text enters through one door."""

from __future__ import annotations

import threading

import pytest

from cola_mm.pipeline import ColaPipeline, Result, clean_text

KW = dict(steps=2, seed=3)


@pytest.fixture(scope="module")
def pipe(tiny_mm_pipeline):
    return ColaPipeline.from_pretrained(tiny_mm_pipeline)


def test_regression_lone_surrogate_prompt(pipe):
    """A JSON "\\udcff" escape or invalid UTF-8 in argv once crashed the tokenizer."""
    bad = "the king\udcff said \ud800"
    result = pipe.generate_text(bad, max_new_tokens=4, return_result=True, **KW)
    assert isinstance(result.outputs[0], str)
    assert any("not valid Unicode" in n for n in result.notices)
    same = pipe.generate_text("the king\ufffd said \ufffd", max_new_tokens=4, return_result=True, **KW)
    assert same.outputs == result.outputs  # replaced by U+FFFD, nothing else
    images = pipe.generate_image(bad, return_result=True, **KW)
    assert len(images.outputs) == 1 and any("not valid Unicode" in n for n in images.notices)


def test_clean_text_is_the_one_door():
    notices: list[str] = []
    assert clean_text("fine", notices) == "fine" and notices == []
    assert clean_text("a\udc80b\udfff", notices) == "a\ufffdb\ufffd"
    assert notices == ["2 character(s) of the prompt were not valid Unicode and became U+FFFD"]
    with pytest.raises(ValueError, match="must be a string, got bytes"):
        clean_text(b"bytes", [])
    with pytest.raises(ValueError, match="must be a string, got NoneType"):
        clean_text(None, [])


def test_results_carry_their_own_notices(pipe):
    long = pipe.generate_text("the dog " * 200, max_new_tokens=3, return_result=True, **KW)
    short = pipe.generate_text("the dog", max_new_tokens=3, return_result=True, **KW)
    assert isinstance(long, Result) and any("truncated" in n for n in long.notices)
    assert short.notices == []  # the long call's notice stayed with it
    assert not hasattr(pipe, "notices") and not hasattr(pipe, "last_tokens")


def test_threads_sharing_one_pipeline_see_only_their_own_results(pipe):
    """Eight threads at once, each alternating a prompt that makes a notice and one that does
    not, across the three jobs: each result equals what the same call gets alone."""
    from PIL import Image

    long_prompt = "the dog " * 200
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    calls = {
        "long": lambda: pipe.generate_text(long_prompt, max_new_tokens=3, return_result=True, **KW),
        "short": lambda: pipe.generate_text("love", max_new_tokens=3, return_result=True, **KW),
        "image": lambda: pipe.generate_image("a red circle", return_result=True, **KW),
        "caption": lambda: pipe.caption([image], max_tokens=6, return_result=True, **KW),
    }
    alone = {name: call() for name, call in calls.items()}
    got: dict[int, tuple[str, Result]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(k: int) -> None:
        name = list(calls)[k % 4]
        try:
            barrier.wait()
            for _ in range(2):
                got[k] = (name, calls[name]())
        except BaseException as err:  # noqa: BLE001 — reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(got) == 8
    for name, result in got.values():
        assert result.notices == alone[name].notices
        if name == "image":
            assert [im.tobytes() for im in result.outputs] == [im.tobytes() for im in alone[name].outputs]
        else:
            assert result.outputs == alone[name].outputs and result.tokens == alone[name].tokens


def test_per_sample_seeds_and_budgets_match_one_by_one(pipe):
    prompts = ["the king", "a lazy dog sat on the mat", "love"]
    together = pipe.generate_text(prompts, max_new_tokens=[3, 9, 5], seeds=[11, 4, 11], steps=2)
    for p, m, s, text in zip(prompts, [3, 9, 5], [11, 4, 11], together):
        assert pipe.generate_text(p, max_new_tokens=m, seed=s, steps=2) == text
    with pytest.raises(ValueError, match="2 seeds given for 3 samples"):
        pipe.generate_text(prompts, seeds=[1, 2], steps=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        pipe.generate_text(prompts, max_new_tokens=[3, 0, 5], steps=2)


def test_cancelled_and_finished_rows_leave_the_batch(pipe):
    """After a cancel, the DiT runs on fewer rows; the rows left produce what they do alone."""
    prompts = ["the king", "a lazy dog", "love"]
    batch_sizes = []
    forward = pipe.dit.forward

    def spy(x, *args, **kwargs):
        batch_sizes.append(x.shape[0])
        return forward(x, *args, **kwargs)

    pipe.dit.forward = spy
    try:
        stream = pipe.stream_text(prompts, max_new_tokens=40, seed=5, steps=2, cfg_scale=1.0)
        next(stream)
        stream.cancel(1)
        batch_sizes.clear()
        rest = list(stream)
    finally:
        del pipe.dit.forward
    assert rest and set(batch_sizes) == {2}  # row 1 cost nothing after its cancel
    assert all(d[1] == "" for d in rest)
    for i in (0, 2):
        alone = pipe.generate_text(prompts[i], max_new_tokens=40, seed=5 + i, steps=2, cfg_scale=1.0)
        assert stream.texts[i] == alone

    captions = pipe.stream_captions([_image((255, 0, 0)), _image((0, 0, 255))], max_tokens=12, **KW)
    first = next(captions)
    captions.cancel(0)
    list(captions)
    alone = pipe.caption([_image((0, 0, 255))], max_tokens=12, steps=2, seed=4)
    assert captions.texts[1] == alone[0] and captions.texts[0] == first[0]


def _image(rgb):
    from PIL import Image

    return Image.new("RGB", (64, 64), rgb)
