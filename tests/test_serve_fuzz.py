"""The OpenAPI spec fuzzed with schemathesis against a real server of the tiny model: no request, however odd,
gets a 5xx, and every reply conforms to the spec (status, content type, headers, body schema)."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("httpx")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_serve import Server  # noqa: E402

MAX_EXAMPLES = 12  # per operation: about 30 s in all on two cores
# no 5xx, and replies as documented; not whether every schema-valid body is accepted (an empty prompt, or a prompt
# longer than the model's positions, is a 422 the schema cannot express)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzzed_server(tiny_export, tmp_path_factory):
    """The tiny model alone, with a generous timeout and queue, so that only a wrong reply can be a 5xx."""
    srv = Server(
        [tiny_export("llama", "log_additive")],
        tmp_path_factory.mktemp("logs") / "fuzz.log",
        "--request-timeout",
        "60",
        "--max-queued",
        "32",
    )
    yield srv
    srv.stop()


def test_openapi_fuzz(fuzzed_server):
    """Each operation of /openapi.json with generated requests, valid and not (schemathesis's own pytest plugin
    predates pytest 9, so its strategies are driven by hypothesis here)."""
    api = schemathesis.openapi.from_url(fuzzed_server.url + "/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/explain", "/v1/tokenize", "/v1/report", "/v1/models"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def conforms(case) -> None:
            case.call_and_validate(base_url=fuzzed_server.url, checks=CHECKS, timeout=60)

        conforms()
