"""Idle timeout with a warning and "stay signed in", and signing in returns to the page (issue #12 part 4)."""
from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from console import policy, timeutil

from .conftest import make_staff, post_form, sign_in, totp_code

META_TOKEN = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def _token(client, url="/desk/") -> str:
    return META_TOKEN.search(client.get(url).get_data(as_text=True)).group(1)


def _next_of(response) -> str | None:
    location = urlsplit(response.headers["Location"])
    assert location.path == "/auth/login"
    return dict(parse_qsl(location.query)).get("next")


def _later(minutes: float) -> None:
    timeutil.set_offset((timeutil._offset or timedelta()) + timedelta(minutes=minutes))


def test_pages_carry_the_policy_idle_timeout_and_the_warning(app, client, login_as):
    login_as("teller")
    page = client.get("/desk/").get_data(as_text=True)
    assert 'data-idle-seconds="900" data-idle-warn-seconds="120"' in page
    assert 'data-keepalive-url="/auth/keep-alive"' in page and 'id="idle-warning"' in page and "保持登录" in page
    assert client.get("/static/console.js").status_code == 200
    app.config["STAFF_IDLE_TIMEOUT_MINUTES"] = 4
    policy.rebuild(app)
    assert 'data-idle-seconds="240" data-idle-warn-seconds="60"' in client.get("/desk/").get_data(as_text=True)
    anonymous = app.test_client()
    assert "data-idle-seconds" not in anonymous.get("/auth/login").get_data(as_text=True)


def test_stay_signed_in_is_a_csrf_protected_signed_in_post_that_keeps_the_session(app, client, login_as):
    login_as("teller")
    token = _token(client)
    assert client.post("/auth/keep-alive").status_code == 400  # no CSRF token
    assert client.get("/auth/keep-alive").status_code == 405
    for _ in range(3):  # 3 x 12 minutes: longer than the 15-minute idle timeout, never idle that long
        _later(12)
        answer = client.post("/auth/keep-alive", headers={"X-CSRFToken": token})
        assert answer.status_code == 200 and answer.get_json() == {"signed_in": True, "idle_seconds": 900}
        assert answer.headers["Cache-Control"] == "no-store"
    assert client.get("/desk/").status_code == 200
    _later(16)  # now idle too long: the script is told to go to sign-in, and nothing is kept alive
    answer = client.post("/auth/keep-alive", headers={"X-CSRFToken": token})
    assert answer.status_code == 401 and answer.get_json() == {"signed_in": False}
    assert client.get("/desk/").status_code == 302


def test_a_stranger_cannot_keep_anything_alive(app):
    stranger = app.test_client()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"',
                      stranger.get("/auth/login").get_data(as_text=True)).group(1)
    assert stranger.post("/auth/keep-alive", headers={"X-CSRFToken": token}).status_code == 401


def test_signing_in_returns_to_the_page_asked_for(app, client):
    handle = make_staff("teller")
    asked = client.get("/desk/?from=queue")
    assert _next_of(asked) == "/desk/?from=queue"
    login = client.get(asked.headers["Location"]).get_data(as_text=True)
    assert 'id="next" name="next" type="hidden" value="/desk/?from=queue"' in login
    post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password,
                                      "next": "/desk/?from=queue"})
    done = post_form(client, "/auth/totp", {"code": totp_code(handle)})
    assert done.headers["Location"] == "/desk/?from=queue"


def test_a_form_sent_after_the_timeout_comes_back_to_its_page(app, client):
    handle = make_staff("teller")
    sign_in(client, handle)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/desk/").get_data(as_text=True)).group(1)
    _later(16)
    sent = client.post("/desk/search", data={"csrf_token": token, "kind": "mobile", "value": "13800000001"},
                       headers={"Referer": "http://localhost/desk/?from=queue"})
    assert sent.status_code == 302
    assert _next_of(sent) == "/desk/?from=queue"
    sign_in(client, handle, follow=False)
    elsewhere = client.get("/desk/").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', elsewhere).group(1)
    _later(16)
    foreign = client.post("/desk/search", data={"csrf_token": token, "kind": "mobile", "value": "13800000001"},
                          headers={"Referer": "http://evil.example/desk/"})
    assert foreign.headers["Location"] == "/auth/login"  # another site's page is never a way back


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example",
                                    "/desk/\r\nSet-Cookie: x=1", "javascript:alert(1)", "/auth/logout",
                                    "/auth/totp", "desk/"])
def test_the_way_back_is_a_same_origin_path_only(app, client, target):
    handle = make_staff("teller")
    login = client.get("/auth/login?next=" + quote(target, safe=""))
    # Refused outright (control characters in the address), or the way back left empty.
    assert login.status_code == 400 or 'id="next" name="next" type="hidden" value=""' in login.get_data(as_text=True)
    post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password, "next": target})
    done = post_form(client, "/auth/totp", {"code": totp_code(handle)})
    assert done.headers["Location"] == "/"
