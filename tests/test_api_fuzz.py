"""Property-based requests from the OpenAPI schema, valid and invalid: never a 5xx."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import schemathesis
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hypothesis_settings
from schemathesis.generation import GenerationMode

from app.config import Settings
from app.main import create_app

EXAMPLES = 12  # per operation and mode: ~12 operations x 2 modes x 2 backends


def test_no_server_errors(settings: Settings) -> None:
    app = create_app(settings)
    schema = schemathesis.openapi.from_dict(app.openapi())
    operations = [r.ok() for r in schema.get_all_operations()]
    operations = [op for op in operations if op.path.startswith("/api/v1/")]
    assert len(operations) == 12

    lifespan = app.router.lifespan_context(app)
    with asyncio.Runner() as runner:
        runner.run(lifespan.__aenter__())
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        statuses: Counter[int] = Counter()
        try:
            for operation in operations:
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                    @hypothesis_settings(
                        max_examples=EXAMPLES,
                        deadline=None,
                        database=None,
                        derandomize=True,
                        suppress_health_check=list(HealthCheck),
                    )
                    @given(case=operation.as_strategy(generation_mode=mode))
                    def no_5xx(case: schemathesis.Case) -> None:
                        kwargs = case.as_transport_kwargs(base_url="http://t")
                        headers = kwargs.pop("headers") or {}
                        # A header an HTTP client cannot send is no request at all.
                        assume(all(v.isascii() and v.isprintable() for v in headers.values()))
                        kwargs.pop("cookies", None)
                        if isinstance(kwargs.get("data"), str | bytes):
                            kwargs["content"] = kwargs.pop("data")
                        response = runner.run(client.request(headers=headers, **kwargs))
                        statuses[response.status_code] += 1
                        assert response.status_code < 500, (
                            f"{case.operation.label} {kwargs} -> "
                            f"{response.status_code} {response.text}"
                        )
                        if response.status_code == 422:
                            assert response.json()["error"] == "invalid_request"

                    no_5xx()
        finally:
            runner.run(client.aclose())
            runner.run(lifespan.__aexit__(None, None, None))
    # The generated requests reach the handlers, not only the validation layer.
    assert sum(n for status, n in statuses.items() if status < 300) > 10, statuses
    assert statuses[404] > 0, statuses
    assert statuses[422] > 0, statuses
