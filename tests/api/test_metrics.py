"""GET /v1/metrics: the controller's SQL statement counter, for any reader."""

from __future__ import annotations

from tests.api.conftest import Api


async def test_metrics_count_the_statements_of_each_request(api: Api) -> None:
    reader = await api.token("reader")
    first = await api.ok("GET", "/v1/metrics", reader)
    assert set(first["db_statements_by_verb"]) == {"SELECT", "INSERT", "UPDATE", "DELETE", "OTHER"}
    assert first["db_statements"] == sum(first["db_statements_by_verb"].values()) > 0
    await api.ok("GET", "/v1/hosts", reader)
    second = await api.ok("GET", "/v1/metrics", reader)
    assert second["db_statements"] > first["db_statements"]
    assert second["db_statements_by_verb"]["SELECT"] > first["db_statements_by_verb"]["SELECT"]


async def test_metrics_need_a_token(api: Api) -> None:
    response = await api.call("GET", "/v1/metrics", None)
    assert response.status_code == 401
    agent = await api.token("agent")
    assert (await api.call("GET", "/v1/metrics", agent)).status_code == 403
