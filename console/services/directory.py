"""The bank's directory (LDAP): who may sign in, with which role, at which branch (docs/directory.md).

A directory-sourced staff account's password is checked by binding to the directory as the
person's own entry; the second factor stays ours. Groups map to roles and an attribute holds the
branch code (DIRECTORY_* settings, checked at start-up by config.check_directory). The sync job
(``flask console directory-sync``) brings every directory account in line with its entry: disabled,
removed or out of every mapped group deactivates it, a new role or branch updates it, and either
ends its sessions and API tokens. The directory being unreachable changes nothing: sign-in of
directory accounts refuses clearly (local break-glass accounts still sign in) and a sync stops.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from ldap3 import BASE, NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import policy
from ..models.staff import Branch, Staff
from ..permissions import ADMIN_MANAGE, can
from ..timeutil import utcnow
from . import audit, staff_admin  # a module (staff_admin -> passkeys -> staff_auth -> here)
from .actor import Actor
from .errors import Conflict, NotAllowed

INVALID_CREDENTIALS = 49  # LDAP resultCode invalidCredentials


class DirectoryUnavailable(Exception):
    """The directory could not be reached or answered with an error (not a wrong password)."""


@dataclass(frozen=True)
class DirectoryEntry:
    dn: str
    employee_no: str
    name: str
    branch_code: str | None
    role: str | None      # from the first mapped group the entry belongs to; None: no mapped group
    disabled: bool


@dataclass
class SyncReport:
    checked: int = 0
    changes: list[tuple[str, str]] = field(default_factory=list)  # (employee_no, what happened)


def enabled() -> bool:
    return bool((policy.current().directory.get("URL") or "").strip())


def _config(key: str):
    return policy.current().directory[key]


def _connection(user: str, password: str) -> Connection | None:
    """A connection bound as ``user``; None when the directory refused the credentials."""
    if not password:  # an empty password is an unauthenticated bind in LDAP: never a success
        return None
    url = _config("URL").strip()
    timeout = _config("TIMEOUT_SECONDS")
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=_config("CA_FILE") or None,
              version=ssl.PROTOCOL_TLS_CLIENT)
    server = Server(url, tls=tls, connect_timeout=timeout, get_info=NONE)
    conn = Connection(server, user=user, password=password, receive_timeout=timeout,
                      read_only=True, raise_exceptions=False)
    try:
        conn.open()
        if url.startswith("ldap://") and _config("STARTTLS") and not conn.start_tls():
            description = conn.result.get("description")
            _close(conn)
            raise DirectoryUnavailable(f"StartTLS refused: {description}")
        if conn.bind():
            return conn
        code = conn.result.get("result")
    except LDAPException as exc:
        _close(conn)
        raise DirectoryUnavailable(type(exc).__name__) from None
    _close(conn)
    if code == INVALID_CREDENTIALS:
        return None
    raise DirectoryUnavailable(f"bind answered {code}")


def _close(conn: Connection) -> None:
    try:
        conn.unbind()
    except LDAPException:  # the connection is already gone
        pass
    if conn.socket is not None:  # ldap3 leaves the socket of a failed connect open
        conn.socket.close()


def _service_connection() -> Connection:
    conn = _connection(_config("BIND_DN"), _config("BIND_PASSWORD"))
    if conn is None:
        raise DirectoryUnavailable("the console's search account was refused")
    return conn


def _search(conn: Connection, base: str, search_filter: str, attributes: list[str], scope=SUBTREE) -> list[dict]:
    try:
        ok = conn.search(base, search_filter, search_scope=scope, attributes=attributes)
    except LDAPException as exc:
        raise DirectoryUnavailable(type(exc).__name__) from None
    # Only a complete answer counts: ldap3 answers True for a partial one too (size or time limit
    # exceeded), and a base that is not there (32) is a misconfiguration, not "nobody". Either way
    # the sync must change nothing rather than deactivate everyone it did not see.
    if conn.result.get("result") != 0:
        raise DirectoryUnavailable(f"search answered {conn.result.get('result')} (ok={ok})")
    return [r for r in conn.response or () if r.get("type") == "searchResEntry"]


def _first(attributes: dict, name: str) -> str | None:
    value = attributes.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value).strip() if value not in (None, "") else None


def _group_members(conn: Connection) -> list[tuple[str, set[str]]]:
    """Each mapped group's role and its members' DNs (lower-cased), in the mapping's order."""
    attribute = _config("GROUP_MEMBER_ATTRIBUTE")
    groups = []
    for group_dn, role in _config("GROUP_ROLES").items():
        found = _search(conn, group_dn, "(objectClass=*)", [attribute], scope=BASE)
        members = {str(m).lower() for m in (found[0]["attributes"].get(attribute, []) if found else [])}
        groups.append((role, members))
    return groups


def _entries(conn: Connection, employee_filter: str) -> list[DirectoryEntry]:
    employee_attr, name_attr, branch_attr = (_config("EMPLOYEE_ATTRIBUTE"), _config("NAME_ATTRIBUTE"),
                                             _config("BRANCH_ATTRIBUTE"))
    user_filter = _config("USER_FILTER")
    base = _config("USER_BASE")
    found = _search(conn, base, f"(&{user_filter}{employee_filter})", [employee_attr, name_attr, branch_attr, "cn"])
    disabled = {r["dn"].lower() for r in _search(
        conn, base, f"(&{user_filter}{employee_filter}{_config('DISABLED_FILTER')})", ["1.1"])}
    groups = _group_members(conn)
    entries = []
    for row in found:
        attrs, dn = row["attributes"], row["dn"]
        employee_no = _first(attrs, employee_attr)
        if not employee_no:
            continue
        role = next((r for r, members in groups if dn.lower() in members), None)
        entries.append(DirectoryEntry(dn=dn, employee_no=employee_no,
                                      name=(_first(attrs, name_attr) or _first(attrs, "cn") or employee_no)[:80],
                                      branch_code=_first(attrs, branch_attr), role=role,
                                      disabled=dn.lower() in disabled))
    return entries


def find_entry(employee_no: str) -> DirectoryEntry | None:
    """The directory's entry for this employee number (None: there is none, or more than one)."""
    conn = _service_connection()
    try:
        value = escape_filter_chars(employee_no)
        entries = _entries(conn, f"({_config('EMPLOYEE_ATTRIBUTE')}={value})")
    finally:
        _close(conn)
    return entries[0] if len(entries) == 1 else None


def password_accepted(dn: str, password: str) -> bool:
    """Bind as the person's own entry: the directory checks the password (and its own lockout)."""
    conn = _connection(dn, password)
    if conn is None:
        return False
    _close(conn)
    return True


def refusal(session: Session, entry: DirectoryEntry | None) -> str | None:
    """Why this entry gives no sign-in (None: it may sign in)."""
    if entry is None:
        return "directory_entry_missing"
    if entry.disabled:
        return "directory_disabled"
    if entry.role is None:
        return "directory_no_group"
    if _branch(session, entry) is None:
        return "directory_branch_unknown"
    return None


def _branch(session: Session, entry: DirectoryEntry) -> Branch | None:
    if not entry.branch_code:
        return None
    return session.scalar(select(Branch).where(Branch.code == entry.branch_code))


def provision(session: Session, entry: DirectoryEntry) -> Staff:
    """First sign-in of a person the directory vouches for: their account, role and branch from
    the directory. The caller has checked ``refusal(...)`` is None and the password was accepted."""
    staff = Staff(employee_no=entry.employee_no[:16], name=entry.name, role=entry.role,
                  branch=_branch(session, entry), active=True, auth_source="directory",
                  directory_dn=entry.dn, password_hash="!directory", must_change_password=False,
                  created_at=utcnow(), session_generation=1, failed_signins=0)
    session.add(staff)
    session.flush()
    audit.record(session, Actor.system(channel="directory"), "staff.create", reason_code="directory_provisioned",
                 after=staff_admin.staff_snapshot(staff))
    return staff


def adopt(session: Session, actor: Actor, staff: Staff) -> None:
    """Move an existing local account to the directory (the bank's roll-out): from now on the
    directory checks its password and decides its role and branch. Its local password is erased
    and its sessions end; the second factor it enrolled is kept."""
    if not can(actor, ADMIN_MANAGE):
        raise NotAllowed("staff.directory_adopt", audit={"action": "staff.directory_adopt", "outcome": "denied",
                                                         "reason_code": "not_permitted"})
    if staff.from_directory:
        raise Conflict("already a directory account", field="auth_source")
    entry = find_entry(staff.employee_no)
    why = refusal(session, entry)
    if why is not None:
        raise NotAllowed(why, field="directory")
    before = staff_admin.staff_snapshot(staff)
    staff.auth_source, staff.directory_dn = "directory", entry.dn
    staff.password_hash, staff.must_change_password = "!directory", False
    ended = staff_admin.end_all_sessions(session, staff, "directory")
    reconcile(session, staff, entry)
    audit.record(session, actor, "staff.directory_adopt", before=before, after=staff_admin.staff_snapshot(staff),
                 details={"dn": entry.dn, "sessions_ended": ended})


def reconcile(session: Session, staff: Staff, entry: DirectoryEntry | None) -> str | None:
    """Bring one directory account in line with its entry; returns what changed (None: nothing).

    Disabled, removed, out of every mapped group or at an unknown branch: deactivated. Another
    role or branch: updated. Either ends every session and API token of the account.
    """
    why = refusal(session, entry)
    before = staff_admin.staff_snapshot(staff)
    if why is not None:
        if not staff.active:
            return None
        staff.active = False
        change = why
    else:
        branch = _branch(session, entry)
        updates = {k: v for k, v in (("role", entry.role), ("branch_id", branch.id), ("directory_dn", entry.dn))
                   if getattr(staff, k) != v}
        if not updates:
            return None
        for key, value in updates.items():
            setattr(staff, key, value)
        staff.branch = branch
        if set(updates) == {"directory_dn"}:
            change = "directory_moved"
        else:
            change = "directory_role_or_branch"
    ended = staff_admin.end_all_sessions(session, staff, "directory") if change != "directory_moved" else 0
    audit.record(session, Actor.system(channel="directory"), "staff.update", reason_code=change,
                 before=before, after=staff_admin.staff_snapshot(staff), details={"sessions_ended": ended})
    return change


def sync(session: Session) -> SyncReport:
    """Compare every directory-sourced account with the directory. Raises DirectoryUnavailable
    (before changing anything) when the directory cannot be read in full."""
    conn = _service_connection()
    try:
        entries = _entries(conn, f"({_config('EMPLOYEE_ATTRIBUTE')}=*)")
    finally:
        _close(conn)
    by_number: dict[str, list[DirectoryEntry]] = {}
    for entry in entries:
        by_number.setdefault(entry.employee_no, []).append(entry)
    report = SyncReport()
    accounts = session.scalars(select(Staff).where(Staff.auth_source == "directory").order_by(Staff.id)).all()
    for staff in accounts:
        report.checked += 1
        matches = by_number.get(staff.employee_no, [])
        change = reconcile(session, staff, matches[0] if len(matches) == 1 else None)
        if change:
            report.changes.append((staff.employee_no, change))
    audit.record(session, Actor.system(channel="directory"), "staff.directory_sync",
                 details={"checked": report.checked, "changed": len(report.changes)})
    return report
