"""A real OpenLDAP (Debian's slapd) for the directory tests: its own slapd.conf, database and
StartTLS certificate in a temporary directory, on a free loopback port, as the current user."""
from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
SUFFIX = "dc=bank,dc=test"
ADMIN_DN, ADMIN_PASSWORD = f"cn=admin,{SUFFIX}", "admin-secret-1"
SEARCH_DN, SEARCH_PASSWORD = f"cn=console,ou=services,{SUFFIX}", "console-search-1"
GROUPS = {"tellers": "teller", "supervisors": "supervisor"}


def slapd_or_skip() -> str:
    if not Path(SLAPD).exists():
        if os.environ.get("CI"):
            pytest.fail(f"slapd is required in CI but not found at {SLAPD}")
        pytest.skip("Debian's slapd is not installed (apt-get install slapd ldap-utils)")
    return SLAPD


def group_dn(name: str) -> str:
    return f"cn={name},ou=groups,{SUFFIX}"


def person_dn(uid: str) -> str:
    return f"uid={uid},ou=people,{SUFFIX}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Bank Directory CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def _person(uid: str, employee_no: str, name: str, branch: str, password: str, status: str = "active") -> str:
    return (f"dn: {person_dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {name}\nsn: {name}\n"
            f"displayName: {name}\nemployeeNumber: {employee_no}\ndepartmentNumber: {branch}\n"
            f"employeeType: {status}\nuserPassword: {password}\n")


def _tree(people: list[dict]) -> str:
    parts = [f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: bank\no: Test Bank\n"]
    for ou in ("people", "groups", "services"):
        parts.append(f"dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n")
    parts.append(f"dn: {SEARCH_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
                 f"cn: console\nuserPassword: {SEARCH_PASSWORD}\n")
    for person in people:
        parts.append(_person(**{k: v for k, v in person.items() if k != "group"}))
    for group in GROUPS:
        members = [person_dn(p["uid"]) for p in people if p.get("group") == group] or [ADMIN_DN]
        parts.append(f"dn: {group_dn(group)}\nobjectClass: groupOfNames\ncn: {group}\n"
                     + "".join(f"member: {m}\n" for m in members))
    return "\n".join(parts)


class Slapd:
    """``with Slapd(tmp, people) as ldap:`` — ldap.config holds the console's DIRECTORY_* settings."""

    def __init__(self, workdir: Path, people: list[dict]):
        self.dir, self.people = workdir, people
        self.port = _free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.process = None

    def __enter__(self):
        (self.dir / "db").mkdir(parents=True)
        ca, cert, key = _certificates(self.dir)
        self.ca_file = str(ca)
        conf = self.dir / "slapd.conf"
        conf.write_text("\n".join([
            *(f"include /etc/ldap/schema/{s}.schema" for s in ("core", "cosine", "inetorgperson")),
            f"pidfile {self.dir / 'slapd.pid'}",
            "modulepath /usr/lib/ldap", "moduleload back_mdb",
            f"TLSCACertificateFile {ca}", f"TLSCertificateFile {cert}", f"TLSCertificateKeyFile {key}",
            "database mdb", f'suffix "{SUFFIX}"', f'rootdn "{ADMIN_DN}"', f"rootpw {ADMIN_PASSWORD}",
            f"directory {self.dir / 'db'}", "maxsize 10485760",
            "access to attrs=userPassword by self =xw by anonymous auth by * none",
            f'access to * by dn.exact="{SEARCH_DN}" read by self read by * none', ""]))
        ldif = self.dir / "tree.ldif"
        ldif.write_text(_tree(self.people))
        subprocess.run([SLAPADD, "-f", str(conf), "-l", str(ldif)], check=True, capture_output=True)
        self.conf = conf
        self.start()
        return self

    def start(self) -> None:
        """(Re)start slapd on the same port and tree (after :meth:`stop`: the directory is back)."""
        self.process = subprocess.Popen([SLAPD, "-f", str(self.conf), "-h", self.url, "-d", "0"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("slapd did not start") from None
                time.sleep(0.05)

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    @property
    def config(self) -> dict:
        return {
            "DIRECTORY_URL": self.url, "DIRECTORY_STARTTLS": True, "DIRECTORY_CA_FILE": self.ca_file,
            "DIRECTORY_BIND_DN": SEARCH_DN, "DIRECTORY_BIND_PASSWORD": SEARCH_PASSWORD,
            "DIRECTORY_USER_BASE": f"ou=people,{SUFFIX}",
            "DIRECTORY_GROUP_ROLES": {group_dn(g): role for g, role in GROUPS.items()},
        }

    def modify(self, dn: str, changes: dict) -> None:
        """Change an entry as the directory's administrator (ldap3 MODIFY_REPLACE / MODIFY_DELETE)."""
        from ldap3 import Connection, Server

        conn = Connection(Server(self.url), ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)
        try:
            assert conn.modify(dn, changes), conn.result
        finally:
            conn.unbind()
