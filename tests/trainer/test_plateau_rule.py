"""The plateau rule (trainer.runstore.advice) on hand-made validation series: the one rule
behind `--lr-policy plateau` and the server's advice."""

import pytest

from trainer.run.lr_policy import LRPolicy
from trainer.runstore.advice import PLATEAU_PATIENCE, PLATEAU_THRESHOLD, PlateauRule, plateau

RULE = PlateauRule(patience=3, threshold=0.01)


def series(errors, steps_per_epoch=10):
    return [(e * steps_per_epoch, float(e), err) for e, err in enumerate(errors, 1)]


def test_flat_series_is_a_plateau_after_patience():
    p = plateau(series([0.60, 0.50, 0.50, 0.51, 0.50]), [], RULE)
    assert (p.best, p.best_epoch, p.flat, p.due(RULE)) == (0.50, 2.0, 3, True)
    assert not plateau(series([0.60, 0.50, 0.50, 0.51]), [], RULE).due(RULE)


def test_improving_by_less_than_the_threshold_is_flat():
    # Each validation beats the last by 0.004 (< 0.01); the reference best stays 0.500
    # until the improvement adds up to more than the threshold.
    p = plateau(series([0.500, 0.496, 0.492]), [], RULE)
    assert (p.best, p.flat) == (0.500, 2)
    p = plateau(series([0.500, 0.496, 0.492, 0.488]), [], RULE)
    assert (p.best, p.best_epoch, p.flat) == (0.488, 4.0, 0)  # 0.012 below 0.500: improved


def test_improving_resets_the_count():
    p = plateau(series([0.60, 0.50, 0.50, 0.50, 0.45]), [], RULE)
    assert (p.best, p.best_epoch, p.flat, p.due(RULE)) == (0.45, 5.0, 0, False)


def test_a_division_restarts_the_count_and_keeps_the_best():
    errors = [0.60, 0.50, 0.50, 0.50, 0.50, 0.50]
    assert plateau(series(errors), [], RULE).flat == 4
    # Divided at the end of epoch 5 (step 50, logged after that epoch's validation).
    p = plateau(series(errors), [50], RULE)
    assert (p.best, p.flat, p.due(RULE)) == (0.50, 1, False)
    p = plateau(series(errors[:5]), [50], RULE)  # divided, no validation since
    assert p.flat == 0
    # An operator's division mid-epoch 4 (step 35): epochs 4, 5 and 6 are flat since.
    assert plateau(series(errors), [35], RULE).flat == 3


def test_nan_is_passed_over_and_defaults_are_the_policy_defaults():
    assert plateau(series([0.5, float("nan"), 0.5]), [], RULE).flat == 1
    assert plateau([], [], RULE).best is None
    policy = LRPolicy("plateau")
    assert (policy.patience, policy.threshold) == (PLATEAU_PATIENCE, PLATEAU_THRESHOLD)
    with pytest.raises(ValueError):
        PlateauRule(patience=0)


def test_the_policy_acts_where_the_advice_says_due():
    errors = [0.9, 0.8, 0.8, 0.805, 0.795, 0.7, 0.7, 0.71, 0.7, 0.7, 0.7, 0.7]
    policy = LRPolicy("plateau", patience=3, threshold=0.01, max_drops=5)
    drops = []
    for epoch, err in enumerate(errors, 1):
        advice = plateau(series(errors[:epoch]), [e * 10 for e in drops], RULE)
        acted = policy.after_epoch(epoch, err) is not None
        assert acted == advice.due(RULE), epoch
        if acted:
            drops.append(epoch)
    assert drops == [5, 9, 12]
