"""One argument type for both command lines: a count below 1 is a usage error naming it."""

from __future__ import annotations

import pytest

from preprocess.cli import main as preprocess_main
from trainer.cli import main as trainer_main


@pytest.mark.parametrize("main, argv", [
    (preprocess_main, ["shard", "--src", "nowhere", "--out", "nowhere", "--workers", "0"]),
    (trainer_main, ["evaluate", "--checkpoint", "nowhere", "--data", "nowhere", "--workers", "0"]),
])
def test_a_count_below_one_is_refused_before_anything_runs(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "argument --workers: must be >= 1, got 0" in capsys.readouterr().err
