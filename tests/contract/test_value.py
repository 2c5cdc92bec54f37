"""The example service's route, `GET /v1/value`: the same bytes from both flavours.

The route belongs to the example service part (a team replaces it), but while the example
is in place both flavours answer it alike, and the platform's rules (405 with `Allow`, route
labels, readiness while draining) hold for it as for the platform's own routes.
"""

from __future__ import annotations

import json
import time

import pytest

from services import FakeUpstream, Metrics, good

pytestmark = [pytest.mark.slow, pytest.mark.example]

JSON = "application/json; charset=utf-8"


def wait_value(svc, timeout: float = 5):
    """GET /v1/value until it answers 200 (or the timeout); the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        resp = svc.get("/v1/value")
        if resp.status == 200 or time.monotonic() > deadline:
            return resp
        time.sleep(0.05)


def test_no_value_yet_is_503_with_a_json_error(shared_service):
    resp = shared_service.get("/v1/value")

    assert resp.status == 503
    assert resp.headers["content-type"] == JSON
    assert resp.body == '{"error": "no value yet"}'


def test_a_good_value_is_served_with_its_fetch_time(spawn):
    with FakeUpstream([good(42.0)]) as upstream:
        svc = spawn(settings={"WORK__UPSTREAM_URL": upstream.url, "WORK__INTERVAL_SECS": "30"}).start()
        resp = wait_value(svc)

    assert resp.status == 200, resp.body
    assert resp.headers["content-type"] == JSON
    record = json.loads((svc.data_dir / "last_value.json").read_text())
    assert abs(record["fetched_at"] - time.time()) < 10
    # exact bytes: json.dumps' default separators, the value as a float, whole Unix seconds
    assert resp.body == f'{{"value": 42.0, "fetched_at": {record["fetched_at"]}}}'


def test_the_last_value_of_a_previous_run_is_served_while_the_upstream_fails(spawn):
    with FakeUpstream([(404, "")]) as upstream:
        svc = spawn(settings={"WORK__UPSTREAM_URL": upstream.url, "WORK__INTERVAL_SECS": "30"})
        svc.data_dir.mkdir(parents=True, mode=0o750)
        (svc.data_dir / "last_value.json").write_text(json.dumps({"value": 2.5, "fetched_at": 1764250000}))
        svc.start()
        upstream.wait_calls(1, 5)
        resp = svc.get("/v1/value")

    assert (resp.status, resp.body) == (200, '{"value": 2.5, "fetched_at": 1764250000}')


def test_head_answers_like_get_without_a_body(shared_service):
    resp = shared_service.get("/v1/value", method="HEAD")

    assert resp.status == shared_service.get("/v1/value").status
    assert resp.body == ""


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "TRACE"])
def test_other_methods_get_405_with_allow(shared_service, method):
    resp = shared_service.get("/v1/value", method=method)

    assert resp.status == 405
    allowed = {token.strip() for token in resp.headers.get("allow", "").split(",")}
    assert allowed == {"GET", "HEAD"}, resp.headers


def test_requests_are_counted_under_the_route_template(spawn, service_build):
    svc = spawn().start()
    for _ in range(3):
        svc.get("/v1/value")
    svc.get("/v1/value", method="DELETE")
    svc.get("/v1/value/extra")

    m = Metrics.parse(svc.metrics())
    name = f"{service_build.metric_prefix}http_requests_total"

    assert m.value(name, route="/v1/value", method="GET", status="503") == 3
    assert m.value(name, route="/v1/value", method="DELETE", status="405") == 1
    assert m.value(name, route="unknown", method="GET", status="404") == 1
