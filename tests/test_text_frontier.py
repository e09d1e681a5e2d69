"""bench/plot_text_frontier.py: reading two models' fluency–diversity curves against each other."""

from conftest import bench_module


def point(entropy, gen_ppl, ngram_ppl=None, loops=0.0, temperature=1.0):
    return {"temperature": temperature, "entropy": entropy, "gen_ppl": gen_ppl, "gen_ppl_std": 0.0,
            "word_rate": 0.9, "ngram_ppl": ngram_ppl, "repeated_4gram": loops}


def test_dominates_needs_every_axis_at_least_as_good():
    f = bench_module("plot_text_frontier")
    base = point(6.0, 100.0, ngram_ppl=200.0)
    assert f.dominates(point(6.5, 50.0, ngram_ppl=100.0), base)  # more varied and more fluent
    assert not f.dominates(base, base)  # equal everywhere: not strictly better anywhere
    assert not f.dominates(point(5.9, 50.0, ngram_ppl=100.0), base)  # more fluent but less varied
    assert not f.dominates(point(6.5, 120.0, ngram_ppl=100.0), base)  # worse by the AR judge
    assert not f.dominates(point(6.5, 50.0, ngram_ppl=250.0), base)  # worse by the trigram judge
    assert not f.dominates(point(6.5, 50.0, ngram_ppl=100.0, loops=0.01), base)  # loops where base has none
    # a judge only one side has is left out of the comparison
    assert f.dominates(point(6.5, 50.0), base)


def test_perplexity_at_interpolates_in_log_and_refuses_outside_the_curve():
    f = bench_module("plot_text_frontier")
    pts = [point(5.0, 10.0, temperature=0.5), point(7.0, 1000.0, temperature=1.0)]
    assert abs(f.perplexity_at(pts, 6.0) - 100.0) < 1e-9  # halfway in entropy = geometric mean
    assert f.perplexity_at(pts, 7.5) is None and f.perplexity_at(pts, 4.0) is None
    # entropy falling as temperature rises: the curve does not index by entropy
    assert f.perplexity_at([point(7.0, 10.0, temperature=0.5), point(5.0, 1000.0, temperature=1.0)], 6.0) is None
