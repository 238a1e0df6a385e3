"""Clicks and keys per customer at the service desk, measured in headless Chromium (issue #12).

    .venv/bin/python bench/desk_keys.py [--json]

Seeds the demo (console/demo.py) into a scratch SQLite database, serves it, and drives two flows
for one customer each, the way staff do, counting every action:

- counter (teller): search -> open -> verify the ID document -> unlock -> close -> print the
  receipt -> next customer (focus back in the search box);
- phone (agent): search by mobile -> open -> send the SMS code -> code and answers -> reset the
  password -> close -> next customer.

Each flow runs twice, on two customers in the same state:

- "mouse and keyboard": clicks on what is not focused already, typing the data, Enter after the
  search; a scroll is counted when the thing to click is below the fold (1366x768);
- "keyboard only": Tab / Shift+Tab (the shorter way) to each control, Space to tick, arrows to
  choose, Enter to press.

Typed characters (numbers, codes, answers) are counted apart: they are the customer's data, the
same before and after. The script reads the page as a person would (what is focused, which button
is there), so it measures whatever the desk looks like when it runs.

Measured for issue #12 (page loads: 7 counter, 8 phone, both times; typed: 34 and 23):

    flow                    before: clicks keys (Tab) scrolls   after: clicks keys (Tab) scrolls
    counter, mouse                   11     1    0     2               9     1    0     0
    counter, keyboard only            0    60   49     0               0    13    3     0
    phone, mouse                     10     1    0     3              10     1    0     0
    phone, keyboard only              0    49   40     0               0    13    4     0

After: one match opens the customer, each step lands with the focus on the next form, the reason
is chosen where the operation declares one, and closing asks first (one more step) but then
offers the receipt and the next customer with the focus back in the search box.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import threading
from dataclasses import asdict, dataclass

import _common
from werkzeug.serving import make_server

VIEWPORT = {"width": 1366, "height": 768}
TRACE = False
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

# The controls of each step, as they are found on the page (old and new desk alike).
RESULT_LINK = "table a.btn-primary[href*='/desk/customers/']"
OPEN_CASE = "form[action$='/cases'] button[type=submit]"
CLOSE = "form[action$='/close'] button[type=submit], a[href$='/close']"
PRINT = "form[action*='/receipts/'] button[type=submit]"
NEXT_CUSTOMER = "a[data-next-customer]"
DESK_LINK = "nav a[href='/desk/']"

# Tab order as the browser walks it (no positive tabindex is used in the console).
_TAB_ORDER = """() => {
  const sel = 'a[href], button:not([disabled]), input:not([type=hidden]):not([disabled]), select:not([disabled]),'
            + ' textarea:not([disabled]), summary, [tabindex]:not([tabindex="-1"])';
  return Array.from(document.querySelectorAll(sel)).filter(el => {
    if (el.closest('details:not([open])') && el.tagName !== 'SUMMARY') return false;
    const r = el.getBoundingClientRect(), s = getComputedStyle(el);
    return s.visibility !== 'hidden' && s.display !== 'none' && (r.width > 0 || r.height > 0 || el === document.activeElement);
  });
}"""


@dataclass
class Count:
    clicks: int = 0
    keys: int = 0  # keys that are not the customer's data: Tab, Enter, Space, arrows, shortcuts
    tabs: int = 0
    typed: int = 0  # characters of data typed (numbers, codes, answers)
    scrolls: int = 0
    loads: int = 0


class Desk:
    """One browser tab at the desk, counting what a person does in it."""

    def __init__(self, page, keyboard_only: bool):
        self.page, self.keyboard_only, self.n = page, keyboard_only, Count()
        page.on("load", self._loaded)

    def _loaded(self, _page) -> None:
        self.n.loads += 1

    def stop(self) -> None:
        self.page.remove_listener("load", self._loaded)

    # --- primitives -------------------------------------------------------------------------

    def _active(self) -> str:
        return self.page.evaluate("(() => { const a = document.activeElement; return a ? "
                                  "a.tagName + (a.id ? '#' + a.id : '') + (a.name ? '[' + a.name + ']' : '') : '-'; })()")

    def focused(self, selector: str) -> bool:
        return self.page.evaluate("s => { const a = document.activeElement; return !!a && a.matches(s); }", selector)

    def _press(self, key: str, times: int = 1) -> None:
        if TRACE:
            print(f"  {key} x{times}  on {self.page.url.rsplit('/', 3)[-2:]} from {self._active()}")
        for _ in range(times):
            self.page.keyboard.press(key)
        self.n.keys += times
        if key in ("Tab", "Shift+Tab"):
            self.n.tabs += times

    def tab_to(self, selector: str) -> None:
        """Tab or Shift+Tab, whichever is shorter, until ``selector`` (its first visible match) has focus."""
        if self.focused(selector):
            return
        where = self.page.evaluate(f"""s => {{
            const order = ({_TAB_ORDER})();
            const target = order.findIndex(el => el.matches(s));
            const here = order.indexOf(document.activeElement);
            return [here, target, order.length];
        }}""", selector)
        here, target, size = where
        if target < 0:
            raise RuntimeError(f"not reachable by Tab: {selector}")
        forward = target - here if here >= 0 else target + 1
        backward = here - target if here > target else None
        key = "Shift+Tab" if backward is not None and backward < forward else "Tab"
        for _ in range(2 * size + 2):  # press until it lands (the order above is only the direction)
            self._press(key)
            if self.focused(selector):
                return
        active = self.page.evaluate("document.activeElement && document.activeElement.outerHTML.slice(0, 120)")
        raise RuntimeError(f"Tab did not land on {selector} ({where}) but on {active}")

    def _scroll_if_hidden(self, selector: str) -> None:
        """A person scrolls before clicking what is not on the screen (below the fold, or above)."""
        box = self.page.locator(selector).first.bounding_box()
        if box is None or box["y"] + box["height"] > VIEWPORT["height"] or box["y"] < 0:
            self.n.scrolls += 1

    def activate(self, selector: str, *, navigates: bool = True) -> None:
        """Press a button or follow a link."""
        target = self.page.locator(selector).first
        if self.keyboard_only:
            self.tab_to(selector)
            action = lambda: self._press("Enter")  # noqa: E731
        else:
            self._scroll_if_hidden(selector)
            self.n.clicks += 1
            action = target.click
        if navigates:
            with self.page.expect_navigation():
                action()
        else:
            action()

    def type_into(self, selector: str, text: str) -> None:
        if not self.focused(selector):
            if self.keyboard_only:
                self.tab_to(selector)
            else:
                self._scroll_if_hidden(selector)
                self.n.clicks += 1
                self.page.locator(selector).first.click()
        self.page.keyboard.press("Control+A")
        self.page.keyboard.type(text)
        self.n.typed += len(text)

    def tick(self, selector: str) -> None:
        if self.page.locator(selector).first.is_checked():
            return
        if self.keyboard_only:
            self.tab_to(selector)
            self._press("Space")
        else:
            self._scroll_if_hidden(selector)
            self.n.clicks += 1
            self.page.locator(selector).first.click()

    def choose(self, selector: str, value: str) -> None:
        """Pick an option of a select list (nothing to do when it is already chosen)."""
        select = self.page.locator(selector).first
        if select.input_value() == value:
            return
        if self.keyboard_only:
            self.tab_to(selector)
            values = select.evaluate("s => Array.from(s.options).map(o => o.value)")
            steps = values.index(value) - select.evaluate("s => s.selectedIndex")
            self._press("ArrowDown" if steps > 0 else "ArrowUp", abs(steps))
        else:
            self._scroll_if_hidden(selector)
            self.n.clicks += 2  # open the list, pick the option
            select.select_option(value)

    def submit_typed(self) -> None:
        """Enter in the text field just typed in (both ways of working do this after a search)."""
        with self.page.expect_navigation():
            self._press("Enter")

    def text(self) -> str:
        return self.page.inner_text("body")


# --- the flows ---------------------------------------------------------------------------------


def _find_and_open(desk: Desk, kind: str, value: str) -> None:
    desk.choose("#kind", kind)
    desk.type_into("#value", value)
    desk.submit_typed()
    if "/desk/search" in desk.page.url:  # a list of results: choose the one
        desk.activate(RESULT_LINK)
    desk.activate(OPEN_CASE)
    assert "/desk/cases/" in desk.page.url, desk.page.url


def _operate(desk: Desk, wallet_id: int, operation: str, reason: str) -> None:
    prefix = f"#w{wallet_id}-{operation}"
    desk.choose(f"{prefix}-reason_code", reason)
    desk.tick(f"{prefix}-confirm")
    desk.activate(f"form[action$='/{operation}'] button[type=submit]")
    assert re.search("已办理|Done:", desk.text()), desk.text()[:400]


def _close(desk: Desk) -> None:
    for _ in range(3):  # the close button, then a confirmation if the desk asks for one
        if desk.page.locator(PRINT).count() or "已生成业务回单" in desk.text():
            return
        desk.activate(CLOSE)
    raise RuntimeError("the case did not close")


def _print_receipt(desk: Desk) -> None:
    with desk.page.context.expect_page() as popup:
        desk.activate(PRINT, navigates=False)
    popup.value.close()


def _next_customer(desk: Desk) -> None:
    desk.activate(NEXT_CUSTOMER if desk.page.locator(NEXT_CUSTOMER).count() else DESK_LINK)
    assert desk.page.url.endswith("/desk/"), desk.page.url
    if not desk.focused("#value"):
        if desk.keyboard_only:
            desk.tab_to("#value")
        else:
            desk.n.clicks += 1
            desk.page.click("#value")


def counter_flow(desk: Desk, wallet, wallet_id: int) -> None:
    _find_and_open(desk, "wallet_no", wallet.wallet_no)
    desk.choose("#id_type", "resident_id")
    desk.type_into("#id_number", wallet.id_number)
    desk.tick("#photo_matches")
    desk.activate("form[action$='/verify/counter'] button[type=submit]")
    assert re.search("已通过证件核验身份", desk.text())
    _operate(desk, wallet_id, "unlock", "locked_after_wrong_passwords")
    _close(desk)
    _print_receipt(desk)
    _next_customer(desk)


def phone_flow(desk: Desk, wallet, wallet_id: int, mobile: str, read_code, answers: dict) -> None:
    _find_and_open(desk, "mobile", mobile)
    desk.activate("form[action$='/verify/phone'] button[type=submit]")
    desk.type_into("#code", read_code())
    for name in desk.page.eval_on_selector_all("input[name^=answer_]", "els => els.map(e => e.name)"):
        desk.type_into(f"#{name}", answers[name.removeprefix("answer_")])
    desk.activate("form[action$='/verify/phone/check'] button[type=submit]")
    assert re.search("已通过电话核验身份", desk.text())
    _operate(desk, wallet_id, "reset_password", "forgot_password")
    _close(desk)
    _next_customer(desk)


# --- set-up ------------------------------------------------------------------------------------


def _sign_in(page, base: str, staff) -> None:
    import pyotp

    page.goto(base + "/auth/login")
    page.fill("#employee_no", staff.employee_no)
    page.fill("#password", staff.password)
    page.keyboard.press("Enter")
    page.wait_for_url("**/auth/totp")
    page.fill("#code", pyotp.TOTP(staff.totp_secret).now())
    with page.expect_navigation():
        page.keyboard.press("Enter")
    if page.url != base + "/":
        raise RuntimeError(page.inner_text("main")[:500])


def measure() -> dict:
    from playwright.sync_api import sync_playwright

    from console import boundary, demo
    from console.extensions import db
    from console.models.customer import Wallet
    from console.models.notification import Notification
    from console.services.actor import Actor
    from console.services.notifications import message_text

    _common.quiet_alembic()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    results = {}
    with _common.scratch_app() as app:
        data = boundary.perform(Actor.operator(), demo.seed, commit=boundary.commit_now)
        staff = {s.employee_no: s for s in data.staff}
        wallets = {w.state: w for w in data.wallets}
        mobiles = {name: mobile for name, _born, mobile, _state in demo.DEMO_CUSTOMERS}
        ids = {w.wallet_no: db.session.scalar(db.select(Wallet.id).where(Wallet.wallet_no == w.wallet_no))
               for w in data.wallets}
        answers = dict(demo.DEMO_SECURITY_ANSWERS)
        db.session.remove()  # no read transaction left open: SQLite would keep the server from writing

        def read_code(mobile_masked: str):
            def read():
                db.session.expire_all()
                row = db.session.scalars(db.select(Notification).where(Notification.kind == "verification_code")
                                         .order_by(Notification.id.desc())).first()
                code = re.search(r"验证码为(\d{6})", message_text(row)).group(1)
                db.session.remove()
                return code
            return read

        server = make_server("127.0.0.1", 0, app, threaded=True)
        base = f"http://127.0.0.1:{server.server_port}"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
                plan = {  # one signed-in tab per staff member; each next customer starts where the last ended
                    "T1001": [("counter", "mouse and keyboard", "locked_30_minutes"),
                              ("counter", "keyboard only", "locked_until_unlock")],
                    "A2001": [("phone", "mouse and keyboard", "password_expired"),
                              ("phone", "keyboard only", "active")],
                }
                for employee_no, runs in plan.items():
                    context = browser.new_context(viewport=VIEWPORT, locale="zh-CN")
                    page = context.new_page()
                    _sign_in(page, base, staff[employee_no])
                    page.goto(base + "/desk/")
                    for flow, way, state in runs:
                        desk = Desk(page, keyboard_only=way == "keyboard only")
                        wallet = wallets[state]
                        if flow == "counter":
                            counter_flow(desk, wallet, ids[wallet.wallet_no])
                        else:
                            phone_flow(desk, wallet, ids[wallet.wallet_no], mobiles[wallet.name],
                                       read_code(wallet.mobile_masked), answers)
                        desk.stop()
                        results[f"{flow} / {way}"] = asdict(desk.n)
                    context.close()
                browser.close()
        finally:
            server.shutdown()
            server.server_close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--trace", action="store_true", help="print every key pressed")
    args = parser.parse_args()
    global TRACE
    TRACE = args.trace
    results = measure()
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
        return
    print(f"{'flow':<32} {'clicks':>6} {'keys':>5} {'(Tab)':>6} {'typed':>6} {'scrolls':>8} {'loads':>6}")
    for name, n in results.items():
        print(f"{name:<32} {n['clicks']:>6} {n['keys']:>5} {n['tabs']:>6} {n['typed']:>6} {n['scrolls']:>8} {n['loads']:>6}")


if __name__ == "__main__":
    main()
