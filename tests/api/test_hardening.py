"""Small holes that a stranger could use: an open redirect at sign-in, callback addresses that
hide a private IPv4 address inside an IPv6 one, forged log lines, pages without nosniff or a
CSP, secrets readable by other users for a moment."""

from __future__ import annotations

import logging
import stat
import uuid

import pytest
from flask import url_for

from backprop.files import write_private
from backprop.urls import resolve
from cli.dev import write_dev_env
from web import create_app
from web.pages import _local


@pytest.fixture
def app(test_settings):
    return create_app(test_settings.model_copy(update={"training_queue": f"h-{uuid.uuid4()}"}))


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "/\\evil.example",  # browsers read a backslash as a slash
        "/%5Cevil.example".replace("%5C", "\\"),  # as Flask hands ?next=/%5Cevil.example over
        "\\/evil.example",
        "/\t/evil.example",  # browsers drop tabs and line breaks
        "/\n/evil.example",
        "https://evil.example/",
        "evil.example",
    ],
)
def test_sign_in_never_sends_a_browser_to_another_site(app, target):
    with app.test_request_context("/sign-in"):
        assert _local(target) == url_for("dashboard.job_list")


def test_sign_in_goes_back_to_a_page_of_this_site(app):
    with app.test_request_context("/sign-in"):
        assert _local("/jobs/123?tab=metrics") == "/jobs/123?tab=metrics"


@pytest.mark.parametrize(
    "address",
    [
        "[::ffff:10.0.0.1]",  # IPv4-mapped
        "[::ffff:127.0.0.1]",
        "[::10.0.0.1]",  # IPv4-compatible
        "[64:ff9b::a00:1]",  # NAT64 of 10.0.0.1
        "[64:ff9b::7f00:1]",  # NAT64 of 127.0.0.1
        "[2002:a00:1::1]",  # 6to4 of 10.0.0.1
        "[::1]",
        "10.1.2.3",
        "169.254.169.254",
    ],
)
def test_a_callback_to_a_private_address_is_refused_whatever_its_form(address):
    address_, why = resolve(f"http://{address}:8080/hook", allow_private=False)
    assert address_ is None
    assert "private, loopback, link-local or reserved" in why


def test_a_refusal_does_not_name_what_a_host_name_resolves_to():
    _, why = resolve("http://localhost:8080/hook", allow_private=False)
    assert "127.0.0.1" not in why and "::1" not in why


@pytest.mark.parametrize(
    "url, address",
    [
        ("http://8.8.8.8/hook", "8.8.8.8"),
        ("https://[2606:4700::1111]/hook", "2606:4700::1111"),
        ("http://8.8.8.8:8443/hook", "8.8.8.8"),
        ("http://[::ffff:8.8.8.8]/hook", "::ffff:808:808"),  # a public IPv4 inside: fine
    ],
)
def test_a_callback_to_a_public_address_is_allowed_on_web_and_high_ports(url, address):
    assert resolve(url, allow_private=False) == (address, None)


@pytest.mark.parametrize("port", [22, 25, 111, 873])
def test_a_callback_to_another_service_s_port_is_refused(port):
    address, why = resolve(f"http://8.8.8.8:{port}/hook", allow_private=False)
    assert address is None and "port" in why


def test_a_path_cannot_forge_a_line_of_the_request_log(app, caplog):
    client = app.test_client()
    with caplog.at_level(logging.INFO, logger="backprop.api"):
        client.get("/v1/jobs%0Arequest_id=forged status=200")
    lines = [r.getMessage() for r in caplog.records if "method=GET" in r.getMessage()]
    assert lines and all("\n" not in line for line in lines)
    assert any("\\n" in line for line in lines)  # escaped, still readable


@pytest.mark.parametrize("path", ["/docs/", "/openapi.json", "/healthz", "/v1/jobs"])
def test_every_answer_says_nosniff_and_the_docs_have_a_content_security_policy(app, path):
    answer = app.test_client().get(path)
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    if path == "/docs/":
        assert answer.status_code == 200
        policy = answer.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy


def test_secrets_are_private_from_their_first_byte(tmp_path):
    wide = tmp_path / "old-secret"
    wide.write_text("old")
    wide.chmod(0o644)
    write_private(wide, "new")
    assert stat.S_IMODE(wide.stat().st_mode) == 0o600 and wide.read_text() == "new"
    env = {"DATABASE_URL": "sqlite:///x", "REDIS_URL": "redis://127.0.0.1:1/0"}
    path = write_dev_env(tmp_path, "http://127.0.0.1:8000", "secret-token", env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
