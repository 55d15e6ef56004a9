"""One argument type for both command lines: a count below 1 is a usage error naming it."""

from __future__ import annotations

import pytest

from preprocess.cli import main as preprocess_main
from trainer.cli import main as trainer_main


@pytest.mark.parametrize("main, argv, line", [
    (preprocess_main, ["shard", "--src", "nowhere", "--out", "nowhere", "--workers", "0"],
     "argument --workers: must be >= 1, got 0"),
    (trainer_main, ["evaluate", "--checkpoint", "nowhere", "--data", "nowhere", "--num-workers=-1"],
     "argument --num-workers: must be >= 0, got -1"),  # 0: auto, as in `trainer train`
])
def test_a_count_below_one_is_refused_before_anything_runs(main, argv, line, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert line in capsys.readouterr().err
