"""Roles as data, every endpoint guarded, denials as 403 pages and audit events."""
import json

import pytest

from console import permissions as P
from console.web.security import GUARDED_BLUEPRINTS, PUBLIC_ENDPOINTS

from .conftest import audit_events, post_form


def test_role_matrix_matches_the_design():
    # DESIGN.md section 1, row by row.
    expected = {
        P.CUSTOMER_VIEW: {"teller", "agent", "supervisor"},
        P.VERIFY_COUNTER: {"teller", "supervisor"},
        P.VERIFY_PHONE: {"agent", "supervisor"},
        P.WALLET_UNLOCK: {"teller", "agent", "supervisor"},
        P.CREDENTIALS_RESET: {"teller", "agent", "supervisor"},
        P.TWOFA_RESET: {"teller", "supervisor"},
        P.TWOFA_RESET_REQUEST: {"agent", "supervisor"},
        P.HOLD_PLACE: {"teller", "agent", "supervisor"},
        P.HOLD_RELEASE_REQUEST: {"teller", "agent", "supervisor"},
        P.APPROVAL_DECIDE: {"supervisor"},
        P.PII_REVEAL: {"supervisor"},
        P.AUDIT_READ_OWN: {"teller", "agent", "supervisor", "auditor"},
        P.AUDIT_READ_BRANCH: {"supervisor", "auditor"},
        P.AUDIT_READ_ALL: {"auditor"},
        P.AUDIT_EXPORT: {"teller", "agent", "supervisor", "auditor"},  # within their reading scope
        P.AUDIT_VERIFY: {"auditor", "admin"},
        P.ADMIN_MANAGE: {"admin"},
    }
    assert set(expected) == P.ALL_PERMISSIONS
    for permission, roles in expected.items():
        holders = {role for role, perms in P.ROLE_PERMISSIONS.items() if permission in perms}
        assert holders == roles, permission


def test_auditor_and_admin_can_never_touch_customers():
    customer_perms = {P.CUSTOMER_VIEW, P.WALLET_UNLOCK, P.CREDENTIALS_RESET, P.TWOFA_RESET,
                      P.HOLD_PLACE, P.HOLD_RELEASE_REQUEST, P.VERIFY_COUNTER, P.VERIFY_PHONE}
    assert not customer_perms & P.ROLE_PERMISSIONS["auditor"]
    assert not customer_perms & P.ROLE_PERMISSIONS["admin"]


def test_can_rejects_unknown_permissions_and_disabled_staff():
    class Someone:
        role, active, is_authenticated = "supervisor", True, True

    assert P.can(Someone(), P.APPROVAL_DECIDE)
    with pytest.raises(KeyError):
        P.can(Someone(), "approval.decde")
    Someone.active = False
    assert not P.can(Someone(), P.APPROVAL_DECIDE)
    assert not P.can(None, P.APPROVAL_DECIDE)


def _sample_url(rule):
    values = {}
    for name, converter in rule._converters.items():
        values[name] = 1 if type(converter).__name__ in ("IntegerConverter",) else "x"
    try:
        return rule.build(values, append_unknown=False)[1]
    except Exception:
        return None


def test_every_endpoint_is_guarded_or_explicitly_public(app):
    from console.admin import _Guarded

    # Every Flask-Admin view (the index included) carries the admin-only guard.
    views = [view for admin in app.extensions["admin"] for view in admin._views]
    admin_views = {view.endpoint for view in views if isinstance(view, _Guarded)}
    assert admin_views == {view.endpoint for view in views}
    view_functions = app.view_functions
    unguarded = []
    for rule in app.url_map.iter_rules():
        endpoint = rule.endpoint
        if endpoint in PUBLIC_ENDPOINTS or endpoint.endswith(".static"):
            continue
        blueprint = endpoint.rsplit(".", 1)[0] if "." in endpoint else None
        view = view_functions[endpoint]
        guarded = (blueprint in GUARDED_BLUEPRINTS or getattr(view, "guarded", False)
                   or blueprint in admin_views)
        if not guarded:
            unguarded.append(endpoint)
    assert unguarded == []
    assert len(PUBLIC_ENDPOINTS) <= 13  # the public list stays short


def test_anonymous_requests_to_every_guarded_url_go_to_sign_in(app, client):
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS or rule.endpoint.endswith("static"):
            continue
        url = _sample_url(rule)
        if url is None:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(url, method=method)
            if url.startswith("/api/"):
                # APIs never redirect: a missing key or token is a JSON 401.
                assert response.status_code == 401, (method, url, response.status_code)
                assert response.get_json()["error"]["code"] == "unauthorized"
            else:
                assert response.status_code in (302, 400), (method, url, response.status_code)
                if response.status_code == 302:
                    assert "/auth/login" in response.headers["Location"], (method, url)
            checked += 1
    assert checked > 10


ROLE_FORBIDDEN = {
    "teller": ["/admin/", "/admin/staff_admin/", "/audit/chain", "/audit/dashboard"],
    "agent": ["/admin/", "/admin/branch_admin/", "/audit/chain", "/desk/approvals"],
    "supervisor": ["/admin/", "/audit/chain", "/audit/browse/audit_browser_events/"],
    "auditor": ["/admin/", "/admin/staff_admin/new/", "/desk/"],
    "admin": [],
}


@pytest.mark.parametrize("role", ["teller", "agent", "supervisor", "auditor"])
def test_each_role_gets_403_and_an_audit_event_outside_its_role(login_as, client, role):
    handle = login_as(role)
    for url in ROLE_FORBIDDEN[role]:
        response = client.get(url)
        assert response.status_code == 403, url
        assert "您的角色无权执行此操作" in response.get_data(as_text=True)
    denied = audit_events("access.denied")
    assert [json.loads(e.details)["path"] for e in denied] == ROLE_FORBIDDEN[role]
    assert all(e.outcome == "denied" and e.actor_employee_no == handle.employee_no for e in denied)


def test_allowed_pages_per_role(login_as, client):
    login_as("auditor")
    assert client.get("/audit/chain").status_code == 200
    assert client.get("/").status_code == 200


def test_admin_reaches_admin_and_chain_but_its_home_says_no_customers(login_as, client):
    login_as("admin", branch_code="HO-000")
    assert client.get("/admin/").status_code == 200
    assert client.get("/audit/chain").status_code == 200
    home = client.get("/").get_data(as_text=True)
    assert "系统管理员不能接触客户钱包" in home


def test_403_page_in_english_after_switching(login_as, client):
    login_as("teller")
    post_form(client, "/auth/language", {"lang": "en"}, token_from="/")
    response = client.get("/admin/")
    assert response.status_code == 403
    assert "Your role does not allow this" in response.get_data(as_text=True)
