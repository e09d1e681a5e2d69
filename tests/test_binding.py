"""The binding bench: prompt variants that exchange or replace attributes, the paired losses of
text → image rows under them, and the ratio that says whether a prior binds."""

import random

import pytest
import torch

from cola_mm.data.shapes import COLORS, SHAPES, make_caption, parse_strict, sample_scene
from cola_mm.evaluation.binding import VARIANTS, BindingToy, gaps_by_draw, summarize_binding, variants
from cola_mm.evaluation.context import MASKED, prompt_context_losses


def two_object_captions(n: int) -> list[tuple[dict, str]]:
    rng = random.Random(0)
    out = []
    while len(out) < n:
        scene = sample_scene(rng, "train", 64, max_objects=2)
        if len(scene["objects"]) == 2:
            out.append((scene, make_caption(scene, rng)))
    return out


def attrs(parsed: dict, key: str) -> list[str]:
    return [o[key] for o in parsed["objects"]]


def test_variants_change_exactly_what_they_name():
    seen = dict.fromkeys(VARIANTS, 0)
    for _, caption in two_object_captions(300):
        truth = parse_strict(caption)
        assert truth is not None, caption
        for name, text in variants(caption).items():
            if text is None:
                continue
            seen[name] += 1
            got = parse_strict(text)
            assert got is not None, (name, text)  # still a caption of the training grammar
            assert got["relation"] == truth["relation"]
            colors, shapes, sizes = (attrs(truth, k) for k in ("color", "shape", "size"))
            if name == "swap_colors":
                assert attrs(got, "color") == colors[::-1] and colors[0] != colors[1]
                assert attrs(got, "shape") == shapes and attrs(got, "size") == sizes
            elif name == "swap_shapes":
                assert attrs(got, "shape") == shapes[::-1] and shapes[0] != shapes[1]
                assert attrs(got, "color") == colors and attrs(got, "size") == sizes
            elif name == "swap_objects":  # same words, the objects trade places: the relation reverses
                assert got["objects"] == truth["objects"][::-1] and got["objects"] != truth["objects"]
            elif name == "recolor_both":
                new = attrs(got, "color")
                assert not set(new) & set(colors) and new[0] != new[1] and set(new) <= set(COLORS)
                assert attrs(got, "shape") == shapes and attrs(got, "size") == sizes
            elif name == "reshape_both":
                new = attrs(got, "shape")
                assert not set(new) & set(shapes) and new[0] != new[1] and set(new) <= set(SHAPES)
                assert attrs(got, "color") == colors and attrs(got, "size") == sizes
    assert all(n > 50 for n in seen.values()), seen  # every variant was exercised


def test_variants_that_do_not_apply_are_none():
    same_color = "there is a small black disc above a large black triangle"
    v = variants(same_color)
    assert v["swap_colors"] is None and v["recolor_both"] is None
    assert v["swap_shapes"] is not None and v["swap_objects"] is not None
    same_object = "a small red square left of a small red square"
    assert all(variants(same_object)[n] is None for n in ("swap_colors", "swap_shapes", "swap_objects"))
    assert all(t is None for t in variants("a large red square in the top left").values())  # one object


def test_binding_ratio_tells_a_binder_from_a_bag_of_attributes():
    """Synthetic losses: a bag-of-attributes reader loses nothing from an exchange, a binder as much
    as from a replacement; images a variant left out (NaN) are not counted."""
    true = torch.full((2, 4), 1.0)
    nan = float("nan")
    loss = {"true": true, MASKED: true + 0.5,
            "recolor_both": true + 0.4, "reshape_both": true + 0.2,
            "swap_colors": torch.tensor([[1.0, 1.0, 1.0, nan]] * 2),  # bag: no loss from exchanging
            "swap_shapes": true + 0.2,  # binder
            "swap_objects": torch.tensor([[1.25, 1.25, nan, nan]] * 2)}
    kept = {n: int((~x[0].isnan()).sum()) for n, x in loss.items()}
    s = summarize_binding({"loss": loss, "kept": kept})
    assert s["ratio"]["swap_colors"] == pytest.approx(0.0)
    assert s["ratio"]["swap_shapes"] == pytest.approx(1.0)
    assert s["ratio"]["swap_objects"] == pytest.approx(0.5)
    assert s["ratio_images"] == {"swap_colors": 3, "swap_shapes": 4, "swap_objects": 2}
    assert s["gap"]["recolor_both"] == pytest.approx(0.4) and s["gap_se"]["recolor_both"] == pytest.approx(0.0)
    by_draw = gaps_by_draw({"loss": loss})
    assert by_draw["swap_colors"] == pytest.approx([0.0, 0.0]) and by_draw["swap_objects"] == pytest.approx([0.25] * 2)


@pytest.fixture(scope="module")
def pipe(tiny_mm_pipeline):
    from cola_mm.pipeline import ColaPipeline

    return ColaPipeline.from_pretrained(tiny_mm_pipeline)


@pytest.fixture(scope="module")
def samples(tiny_datasets):
    from cola_mm.evaluation.images import read_samples

    return read_samples(tiny_datasets / "shapes" / "val", 6)


def test_prompt_losses_are_paired_and_leave_out_other_layouts(pipe, samples):
    own = [s["txt"] for s in samples]
    shorter = [p.split()[0] for p in own]  # fewer caption latents than the prompt: another layout
    shorter[0] = own[0]  # the same prompt: the same layout, the same loss
    raw = prompt_context_losses(pipe, samples, {"true": own, "again": list(own), "shorter": shorter,
                                                "none": [None] * len(own), MASKED: MASKED}, draws=2, seed=3)
    loss = raw["loss"]
    assert loss["true"].shape == (2, len(samples)) and not loss["true"].isnan().any()
    assert torch.equal(loss["again"], loss["true"])  # same ε and t for every name: differences are paired
    assert loss["shorter"][:, 0].tolist() == loss["true"][:, 0].tolist()
    assert loss["shorter"][:, 1:].isnan().all() and loss["none"].isnan().all()
    assert raw["kept"] == {"true": len(samples), "again": len(samples), "shorter": 1, "none": 0, MASKED: len(samples)}
    assert not torch.allclose(loss[MASKED], loss["true"])  # the image reads its prompt in this layout
    again = prompt_context_losses(pipe, samples, {"true": own}, draws=2, seed=3)["loss"]["true"]
    other = prompt_context_losses(pipe, samples, {"true": own}, draws=2, seed=4)["loss"]["true"]
    assert torch.equal(again, loss["true"]) and not torch.equal(other, again)  # the seed fixes the draws


def test_prompt_losses_refuse_bad_input(pipe, samples):
    own = [s["txt"] for s in samples]
    with pytest.raises(ValueError, match="'true'"):
        prompt_context_losses(pipe, samples, {"other": own})
    with pytest.raises(ValueError, match="one prompt"):
        prompt_context_losses(pipe, samples, {"true": own, "short": own[:-1]})
    with pytest.raises(ValueError, match="one prompt"):
        prompt_context_losses(pipe, samples, {"true": own, "one": "a red circle"})


def test_a_prior_with_absolute_positions_learns_to_bind_word_order():
    """The toy of bench/bench_binding_toy.py, 300 steps: with position tables the prior sends each
    prompt word to its place (the exchange costs most of what a replacement costs); on the control,
    whose images ignore word order, the same prior learns the scene and the ratio stays ~0."""
    order, bag = BindingToy("order"), BindingToy("bag")
    binder = order.measure(order.train(BindingToy.dit(16), 300))
    assert binder["true"] < 0.05 and binder["ratio"] > 0.4, binder
    control = bag.measure(bag.train(BindingToy.dit(16), 300))
    assert control["true"] < 0.05 and abs(control["ratio"]) < 0.05, control
    untrained = order.measure(BindingToy.dit(16).eval())  # adaLN-zero: the same velocity for every prompt
    assert untrained["true"] > 0.5 and untrained["ratio"] != untrained["ratio"], untrained
    with pytest.raises(ValueError, match="toy kind"):
        BindingToy("colour")


def test_toy_rows_put_each_word_where_its_kind_says():
    pairs = torch.tensor([[3, 5, BindingToy.LEFT], [3, 5, BindingToy.RIGHT], [5, 3, BindingToy.LEFT]])
    for kind, first in (("order", [3, 3, 5]), ("bag", [3, 3, 3]), ("relation", [3, 5, 5])):
        toy = BindingToy(kind)
        rows = toy.rows(pairs)
        assert torch.equal(rows[:, 4], toy.images[first]) and rows.shape == (3, 8, 8)
        assert torch.equal(rows[:, 0], toy.words[pairs[:, 0]])  # the first word opens every prompt
        swapped = toy.rows(pairs, toy.exchanged(pairs))
        assert torch.equal(swapped[:, 4:], rows[:, 4:]) and not torch.equal(swapped[:, :4], rows[:, :4])
    relation = BindingToy("relation")
    assert torch.equal(relation.rows(pairs)[:, 1], relation.words[pairs[:, 2]])  # the relation word


def test_toy_relation_share_is_set_by_p_right_and_only_on_relation_rows():
    for p_right, lo, hi in ((0.5, 0.45, 0.55), (0.2, 0.16, 0.24), (0.0, 0.0, 0.0)):
        share = (BindingToy("relation").pairs(2000, torch.Generator().manual_seed(0), p_right)[:, 2]
                 == BindingToy.RIGHT).float().mean()
        assert lo <= share <= hi
    assert (BindingToy("order").pairs(500, torch.Generator().manual_seed(0), 0.9)[:, 2] == BindingToy.LEFT).all()
    # the default draws the same rows as before the option existed (the 0.5 share)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(BindingToy("relation").pairs(64, g1), BindingToy("relation").pairs(64, g2, 0.5))
