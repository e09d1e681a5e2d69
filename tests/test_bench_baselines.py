"""bench/bench_baselines.py: figures over several sampling seeds."""

import math

from conftest import bench_module


def test_mean_and_spread_over_seeds():
    b = bench_module("bench_baselines")
    rows = [{"tokens_per_s_batch1": 10.0, "tokens_per_s_batch8": 40.0, "gen_ppl": 100.0, "corpus_word_rate": 0.9,
             "repeated_4gram_rate": 0.0},
            {"tokens_per_s_batch1": 20.0, "tokens_per_s_batch8": 60.0, "gen_ppl": 200.0, "corpus_word_rate": 0.8,
             "repeated_4gram_rate": 0.1}]
    out = b.mean_and_spread(rows)
    assert out["gen_ppl"] == 150.0 and math.isclose(out["gen_ppl_std"], math.sqrt(5000.0))
    assert math.isclose(out["corpus_word_rate"], 0.85) and out["tokens_per_s_batch8"] == 50.0
    one = b.mean_and_spread(rows[:1])
    assert one["gen_ppl"] == 100.0 and one["gen_ppl_std"] == 0.0
