"""Chinese by default with English switchable; every string translated; security headers."""
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from console import ROOT

from .conftest import post_form

PO = ROOT / "console" / "translations" / "zh_Hans_CN" / "LC_MESSAGES" / "messages.po"
MO = PO.with_suffix(".mo")


def _read_po(path):
    with open(path, "rb") as fh:
        return read_po(fh)


def test_every_ui_string_has_a_chinese_translation(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    pot = tmp_path / "messages.pot"
    from babel.messages.frontend import CommandLineInterface

    CommandLineInterface().run(["pybabel", "-q", "extract", "-F", str(ROOT / "babel.cfg"), "-k", "_l",
                                "-k", "lazy_gettext", "-o", str(pot), "console", "templates"])
    extracted = {m.id for m in _read_po(pot) if m.id}
    catalog = _read_po(PO)
    translated = {m.id for m in catalog if m.id and m.string and "fuzzy" not in m.flags}
    assert extracted - translated == set()


def test_compiled_catalogue_matches_the_po_file():
    po = {m.id: m.string for m in _read_po(PO) if m.id}
    with open(MO, "rb") as fh:
        mo = {m.id: m.string for m in read_mo(fh) if m.id}
    assert po == mo, "run: pybabel compile -d console/translations"


def test_pages_are_chinese_by_default_and_english_on_request(client):
    assert "员工登录" in client.get("/auth/login").get_data(as_text=True)
    post_form(client, "/auth/language", {"lang": "en", "next": "/auth/login"}, token_from="/auth/login")
    assert "Staff sign-in" in client.get("/auth/login").get_data(as_text=True)
    post_form(client, "/auth/language", {"lang": "xx"}, token_from="/auth/login")
    assert "Staff sign-in" in client.get("/auth/login").get_data(as_text=True)


def test_security_headers_on_every_page(login_as, client):
    login_as("teller")
    for url in ("/", "/auth/login", "/does-not-exist"):
        response = client.get(url)
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp and "http" not in csp
        assert "script-src 'self' 'nonce-" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert response.headers["Cache-Control"] == "no-store"
    page = client.get("/").get_data(as_text=True)
    assert "<script" not in page or "nonce=" in page
    assert "https://" not in page  # no CDN


def test_nonce_differs_per_request(client):
    first = client.get("/auth/login").headers["Content-Security-Policy"]
    second = client.get("/auth/login").headers["Content-Security-Policy"]
    assert first != second


def test_session_cookie_flags(client, app):
    from .conftest import make_staff

    handle = make_staff("teller")
    post_form(client, "/auth/login", {"employee_no": handle.employee_no, "password": handle.password})
    cookie = client.get_cookie("bc_session")
    assert cookie.http_only and cookie.same_site == "Lax"


def test_admin_pages_use_the_nonce_and_no_cdn(login_as, client):
    login_as("admin", branch_code="HO-000")
    page = client.get("/admin/staff_admin/").get_data(as_text=True)
    assert "cdn" not in page.lower() and "https://" not in page
    scripts = [line for line in page.splitlines() if "<script" in line]
    assert scripts and all("nonce=" in line for line in scripts)


def test_oversized_body_is_a_clear_413(client):
    response = client.post("/auth/login", data={"employee_no": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413
    assert "请求内容过大" in response.get_data(as_text=True)


def test_malformed_input_never_500(client):
    for data in ({"employee_no": "\x00\x01", "password": "x"}, {"employee_no": ["a", "b"]}, {}):
        response = client.post("/auth/login", data=data)
        assert response.status_code < 500
    raw = client.post("/auth/login", data=b"employee_no=%ff%fe&password=%c0%00&csrf_token=%ff",
                      content_type="application/x-www-form-urlencoded")
    assert raw.status_code < 500
