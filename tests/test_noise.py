"""The one noise rule (d2p_helpers.noise) on cases whose answer is known by hand."""
import pytest

from d2p_helpers import noise


def test_paired_ratio_is_a_t_test_on_the_per_seed_ratios():
    a, b = {0: 90.0, 1: 99.0, 2: 108.0}, {0: 100.0, 1: 110.0, 2: 120.0}     # a is 10% lower on every draw
    pr = noise.paired_ratio(a, b)
    assert pr["mean"] == pytest.approx(0.9) and pr["std"] == pytest.approx(0.0, abs=1e-12)
    assert pr["verdict"] == noise.AHEAD and pr["seeds"] == [0, 1, 2]
    # the same means, but the draws disagree in sign: unpaired means differ, the paired rule says tie
    mixed = noise.paired_ratio({0: 80.0, 1: 130.0}, {0: 100.0, 1: 100.0})
    assert mixed["mean"] == pytest.approx(1.05) and mixed["verdict"] == noise.TIE
    assert noise.paired_ratio({0: 1.0}, {0: 2.0})["verdict"] == noise.ONE_SEED
    assert noise.paired_ratio({0: 1.0}, {1: 2.0}) is None                  # no shared calibration draw
    # only shared seeds count: seed 2 of `a` has no partner
    assert noise.paired_ratio({0: 2.0, 1: 2.2, 2: 9.0}, {0: 1.0, 1: 1.0})["n"] == 2


def test_within_noise_of_best_and_knob_effect_use_the_same_rule():
    cells = {"best": {0: 100.0, 1: 104.0, 2: 96.0}, "close": {0: 101.0, 1: 103.0, 2: 99.0},
             "far": {0: 130.0, 1: 136.0, 2: 125.0}}
    assert noise.within_noise_of_best(cells) == {"best", "close"}
    assert noise.within_noise_of_best({"a": {0: 1.0}, "b": {0: 2.0}}) == set()   # one seed: no answer
    effect = noise.knob_effect(cells)
    assert effect.endswith("beyond seed noise") and "1 of 2 other settings behind" in effect
    assert noise.knob_effect({k: cells[k] for k in ("best", "close")}).endswith("within seed noise")


def test_by_seed_refuses_values_it_cannot_assign_to_seeds():
    assert noise.by_seed([1.0, 2.0], [3, 5]) == {3: 1.0, 5: 2.0}
    with pytest.raises(ValueError, match="say which seed"):
        noise.by_seed([1.0], [0, 1])
