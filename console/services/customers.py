"""Customers and wallets: creation with validated, encrypted identifiers, and exact lookup."""
from __future__ import annotations

import secrets
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import crypto, policy
from ..identity import (birth_date_from_resident_id, document_problem, mask_id_number, mask_mobile,
                        mobile_problem, normalise_id_number, normalise_mobile)
from ..models.customer import Customer, Wallet, WalletPasswordHistory
from ..passwords import hash_password
from ..timeutil import utcnow
from . import audit
from .actor import Actor
from .errors import Conflict, InvalidInput


def document_index(id_type: str, number: str) -> str:
    return crypto.blind_index(f"{id_type}:{number}", context="customer.id_number")


def mobile_index(mobile: str) -> str:
    return crypto.blind_index(mobile, context="customer.mobile")


def customer_id_number(customer: Customer) -> str:
    return crypto.decrypt(customer.id_number_enc, context="customer.id_number")


def new_customer_no(session: Session) -> str:
    while True:
        candidate = "C" + "".join(secrets.choice("0123456789") for _ in range(9))
        if not session.scalar(select(Customer.id).where(Customer.customer_no == candidate)):
            return candidate


def new_wallet_no(session: Session) -> str:
    while True:
        candidate = "0031" + "".join(secrets.choice("0123456789") for _ in range(12))
        if not session.scalar(select(Wallet.id).where(Wallet.wallet_no == candidate)):
            return candidate


def create_customer(session: Session, actor: Actor, *, name: str, id_type: str, id_number: str, mobile: str,
                    birth_date: date | None = None, id_expires_on: date | None = None) -> Customer:
    """Validate and store a customer; identifiers encrypted, indexed and masked."""
    id_number = normalise_id_number(id_number)
    mobile = normalise_mobile(mobile)
    problem = document_problem(id_type, id_number) or mobile_problem(mobile)
    if problem:
        raise InvalidInput(problem, field=problem)
    if id_type == "resident_id":
        birth_date = birth_date_from_resident_id(id_number)
    if birth_date is None:
        raise InvalidInput("birth_date", field="birth_date")
    index = document_index(id_type, id_number)
    if session.scalar(select(Customer.id).where(Customer.id_type == id_type, Customer.id_number_index == index)):
        raise Conflict("customer exists", field="id_number")
    customer = Customer(
        customer_no=new_customer_no(session), name=name.strip(), id_type=id_type,
        id_number_enc=crypto.encrypt(id_number, context="customer.id_number"), id_number_index=index,
        id_number_masked=mask_id_number(id_number), id_expires_on=id_expires_on, birth_date=birth_date,
        mobile_enc=crypto.encrypt(mobile, context="customer.mobile"), mobile_index=mobile_index(mobile),
        mobile_masked=mask_mobile(mobile), created_at=utcnow(),
    )
    session.add(customer)
    session.flush()
    audit.record(session, actor, "customer.create", customer_ref=customer.customer_no,
                 after={"customer_no": customer.customer_no, "id_type": id_type,
                        "id_number": customer.id_number_masked, "mobile": customer.mobile_masked})
    return customer


def open_wallet(session: Session, actor: Actor, customer: Customer, *, password: str, tier: int = 4,
                home_branch_id: int | None = None) -> Wallet:
    """The wallet's home branch is the opening staff member's, unless one is assigned (the command
    line, which has no branch, assigns it or leaves none)."""
    if tier not in policy.current().wallet_tiers:
        raise InvalidInput("tier", field="tier")
    now = utcnow()
    hashed = hash_password(password)
    home = home_branch_id if home_branch_id is not None else actor.branch_id
    wallet = Wallet(wallet_no=new_wallet_no(session), customer=customer, tier=tier, status="active",
                    home_branch_id=home, created_at=now, password_hash=hashed, password_set_at=now,
                    password_expires_at=password_expiry(now), must_change_password=False, failed_count=0)
    session.add(wallet)
    session.flush()
    session.add(WalletPasswordHistory(wallet_id=wallet.id, password_hash=hashed, set_at=now))
    audit.record(session, actor, "wallet.open", customer_ref=customer.customer_no,
                 after={"wallet_no": wallet.wallet_no, "tier": tier,
                        "home_branch": wallet.home_branch.code if wallet.home_branch else None})
    return wallet


def password_expiry(now):
    days = policy.current().wallet_passwords.expiry_days
    return now + timedelta(days=days) if days else None
