"""Schemathesis against the server's own OpenAPI document: no input gives a 5xx.

Generated calls go to a real uvicorn over a run store holding a run (so valid ids reach
the handlers), with the operator token, so the authenticated paths are explored too.
Bounded: a few dozen examples per operation, no shrinking past a deadline."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from server_helpers import auth, make_run, serving


@pytest.mark.slow
def test_no_server_errors(tmp_path):
    with serving(tmp_path / "runs.db") as live:
        make_run(live.store, "1", steps=50)
        make_run(live.store, "current", steps=10, status="finished")
        schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
        operations = [op.ok() for op in schema.get_all_operations()]
        assert len(operations) >= 10
        for op in operations:
            # One hypothesis run per operation: the pytest plugin's fixture loader does not
            # work with this pytest, and a plain loop keeps the budget explicit.
            @given(case=op.as_strategy())
            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def call(case):
                case.call_and_validate(headers=auth(), checks=[not_a_server_error])

            call()
