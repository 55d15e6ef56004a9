from __future__ import annotations

import pytest
from server_helpers import serving


@pytest.fixture
def live(tmp_path):
    """A real uvicorn on loopback over a real SQLite run store in tmp_path."""
    with serving(tmp_path / "runs.db") as live:
        yield live
