import pytest

from trainer.run.lr_policy import LRPolicy


def test_manual_never_divides():
    p = LRPolicy("manual")
    assert all(p.after_epoch(e, 0.9) is None for e in range(1, 50))


def test_plateau_divides_after_patience_and_at_most_max_drops():
    p = LRPolicy("plateau", patience=2, max_drops=2)
    errors = [0.9, 0.8, 0.8, 0.85, 0.7, 0.75, 0.72, 0.7, 0.7, 0.7, 0.7]
    drops = [e for e, err in enumerate(errors, 1) if p.after_epoch(e, err)]
    assert drops == [4, 7]  # two epochs without beating 0.8, then two without beating 0.7
    assert p.drops == 2


def test_step_and_state_round_trip():
    p = LRPolicy("step", step_epochs=3, max_drops=3)
    assert [e for e in range(1, 13) if p.after_epoch(e, None)] == [3, 6, 9]
    q = LRPolicy("plateau", patience=1)
    q.after_epoch(1, 0.5)
    r = LRPolicy("plateau", patience=1)
    r.load_state_dict(q.state_dict())
    assert r.after_epoch(2, 0.6) is not None


def test_bad_policy_fails():
    with pytest.raises(ValueError):
        LRPolicy("cosine")
