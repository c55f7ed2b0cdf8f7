"""Token authentication: every /api route and /metrics need the bearer token; nothing logs it."""
from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

import cloud.api.tokens as tokens
from cloud.api.app import create_app
from tests.cloud.api.world import TOKEN

GET_ROUTES = ["/api/fleet", "/api/devices", "/api/devices/dev-01", "/api/devices/dev-01/events", "/api/cohorts",
              "/api/series", "/api/summary", "/api/windows", "/api/ingest", "/api/alerts",
              "/api/alerts/ALERT", "/api/drift/report", "/api/models", "/api/models/production",
              "/api/rollouts", "/metrics"]


@pytest.fixture
def anon(world) -> TestClient:
    return TestClient(create_app(world.services()))


def test_every_api_route_in_the_openapi_document_needs_the_token(anon):
    assert anon.get("/openapi.json").status_code == 401  # the map of what there is to attack needs the token
    doc = anon.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    paths = [p for p in doc["paths"] if p.startswith("/api/")]
    assert len(paths) >= 15
    for path in paths:
        for method, op in doc["paths"][path].items():
            assert {"HTTPBearer": []} in op.get("security", []), f"{method} {path} does not declare the token"
            url = path.replace("{device_id}", "dev-01").replace("{alert_id}", "a-old").replace("{ref}", "x") \
                .replace("{rollout_id}", "r").replace("{action}", "pause")
            r = anon.request(method.upper(), url)
            assert r.status_code == 401, f"{method} {url} answered {r.status_code} without a token"
            assert r.headers["www-authenticate"] == "Bearer"
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


@pytest.mark.parametrize("path", GET_ROUTES)
def test_routes_answer_with_the_token_and_refuse_without(anon, world, path):
    path = path.replace("ALERT", world.alert_id("device:dev-03", "input"))
    assert anon.get(path).status_code == 401
    assert anon.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


@pytest.mark.parametrize("header, message", [
    (None, "missing Authorization header"),
    (f"Basic {TOKEN}", "malformed Authorization header"),
    ("Bearer ", "malformed Authorization header"),
    (f"Bearer {TOKEN}x", "invalid token"),
    (f"Bearer {TOKEN[:-1]}", "invalid token"),
])
def test_refusals_say_what_is_wrong(anon, header, message):
    r = anon.get("/api/fleet", headers={"Authorization": header} if header else {})
    assert r.status_code == 401
    assert message in r.json()["detail"]


def test_scheme_is_case_insensitive_and_the_query_string_is_never_a_token(anon):
    assert anon.get("/api/fleet", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    assert anon.get(f"/api/fleet?token={TOKEN}").status_code == 401
    assert anon.get(f"/api/fleet?access_token={TOKEN}").status_code == 401


@pytest.mark.parametrize("token", [None, ""])
def test_without_a_configured_token_the_api_is_closed_and_says_how_to_open_it(world, token):
    c = TestClient(create_app(world.services(token=token)))
    for header in (None, "Bearer ", "Bearer anything"):
        r = c.get("/api/fleet", headers={"Authorization": header} if header else {})
        assert r.status_code == 401
        assert "http.token" in r.json()["detail"]


def test_the_comparison_is_constant_time(anon, monkeypatch):
    calls = []
    real = tokens.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    assert anon.get("/api/fleet", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert anon.get("/api/fleet", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert calls == [(TOKEN.encode(), TOKEN.encode()), (b"nope", TOKEN.encode())]


def test_metrics_need_the_token_unless_made_public(world):
    closed = TestClient(create_app(world.services()))
    assert closed.get("/metrics").status_code == 401
    public = TestClient(create_app(world.services(public_metrics=True)))
    r = public.get("/metrics")
    assert r.status_code == 200 and "harken_devices" in r.text
    assert public.get("/api/fleet").status_code == 401


def test_dashboard_and_health_are_open_but_carry_no_data(anon):
    page = anon.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert anon.get("/static/app.js").status_code == 200
    assert anon.get("/healthz").json() == {"ok": True}
    assert anon.get("/docs").status_code == 404  # Swagger UI would load from a CDN: not served
    assert anon.get("/openapi.json").status_code == 401
    ready = anon.get("/readyz")
    for body in (page.text, ready.text):
        assert "dev-01" not in body and TOKEN not in body


def test_the_token_never_reaches_the_logs(anon, caplog):
    caplog.set_level(logging.DEBUG)
    anon.get("/api/fleet", headers={"Authorization": f"Bearer {TOKEN}"})
    anon.get("/api/fleet", headers={"Authorization": "Bearer wrong-secret-123"})
    anon.get("/api/nope", headers={"Authorization": f"Bearer {TOKEN}"})
    assert caplog.records, "expected the refused request to be logged at DEBUG"
    assert TOKEN not in caplog.text and "wrong-secret-123" not in caplog.text


def test_services_from_the_collector_config_carry_its_token(world):
    from cloud.api.backend import Services
    from cloud.config import CollectorConfig

    config = CollectorConfig(http_token="from-config-123", offline_after_s=30.0)
    services = Services.from_config(config, world.store, registry=world.registry)
    assert (services.token, services.offline_after_s, services.rollup_bucket_s) == (
        "from-config-123", 30.0, config.rollup_bucket_s)
    c = TestClient(create_app(services))
    assert c.get("/api/fleet", headers={"Authorization": "Bearer from-config-123"}).status_code == 200
    assert c.get("/api/fleet", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
    assert Services.from_config(CollectorConfig(), world.store).token is None  # "" means unset: API closed


READER, OPERATOR = "r3ad-only-token-0123456789", "0perate-token-0123456789ab"


def _tokens_file(tmp_path, text: str):
    path = tmp_path / "tokens"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_a_read_token_reads_everything_and_changes_nothing(fresh_world, tmp_path):
    from cloud.api.auth import TokenBook

    path = _tokens_file(tmp_path, f"# name role token\ngrafana read {READER}\nops-anna operate {OPERATOR}  # on call\n")
    c = TestClient(create_app(fresh_world.services(tokens=TokenBook.build(None, str(path)))))
    reader, operator = ({"Authorization": f"Bearer {t}"} for t in (READER, OPERATOR))
    for path_ in ("/api/fleet", "/api/rollouts", "/openapi.json", "/metrics"):
        assert c.get(path_, headers=reader).status_code == 200, path_
    rid = c.get("/api/rollouts", headers=reader).json()["rollouts"][0]["id"]
    aid = fresh_world.alert_id("device:dev-03", "input")
    refused = c.post(f"/api/rollouts/{rid}/pause", headers=reader)
    assert refused.status_code == 403 and "role read" in refused.json()["detail"]
    assert c.post(f"/api/alerts/{aid}/ack", headers=reader).status_code == 403
    assert fresh_world.rollouts.repo.open_commands(rid) == []  # nothing was queued
    assert c.post(f"/api/rollouts/{rid}/pause", headers=operator, json={"by": "grafana"}).status_code == 202
    assert [cmd.actor for cmd in fresh_world.rollouts.repo.open_commands(rid)] == ["ops-anna"]


@pytest.mark.parametrize("text, message", [
    ("anna operate\n", "expected 'NAME ROLE TOKEN'"),
    (f"anna admin {OPERATOR}\n", "role 'admin' is not one of read, operate"),
    ("anna read short\n", "shorter than 16 characters"),
    (f"anna read {READER}\nbob operate {READER}\n", "appears twice"),
])
def test_a_bad_tokens_file_names_the_line_and_the_fix(tmp_path, text, message):
    from cloud.api.auth import TokenBook
    from shared.errors import ConfigError

    from cloud.config import load_collector_config

    path = str(_tokens_file(tmp_path, text))
    with pytest.raises(ConfigError, match=message):
        TokenBook.build(None, path)
    with pytest.raises(ConfigError, match=message):  # the collector refuses to start with it
        load_collector_config(env={}, overrides={"http_tokens_file": path, "db_url": "sqlite:///:memory:"})


def test_readiness_follows_the_store_and_the_collector(world):
    reasons: list[str] = []
    c = TestClient(create_app(world.services(readiness=lambda: list(reasons))))
    assert c.get("/readyz").status_code == 200 and c.get("/readyz").json() == {"ready": True, "reasons": []}
    reasons.append("a commit has waited 12 s for the store")
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["reasons"] == ["a commit has waited 12 s for the store"]
    assert c.get("/healthz").status_code == 200  # liveness: the process still serves


def test_the_main_listings_have_response_schemas_with_properties(api):
    """/openapi.json (with the token) describes what fleet, devices, alerts, rollouts and models return."""
    doc = api.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]

    def resolve(schema: dict) -> dict:
        if "$ref" in schema:
            return resolve(schemas[schema["$ref"].rsplit("/", 1)[1]])
        return resolve(schema["items"]) if schema.get("type") == "array" else schema

    for path, field in (("/api/fleet", "devices"), ("/api/devices", "tags"), ("/api/alerts", "alerts"),
                        ("/api/rollouts", "rollouts"), ("/api/models", "models")):
        ok = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        props = resolve(ok).get("properties") or {}
        assert field in props, (path, ok)
    assert "stages" in resolve(schemas["Rollouts"]["properties"]["rollouts"])["properties"]
    assert "severity" in resolve(schemas["Alerts"]["properties"]["alerts"])["properties"]
