"""SMS to the customer's registered mobile, through the transactional outbox.

``queue_sms`` adds a row in the caller's transaction, so a message exists exactly when the
change it reports was committed. ``deliver_due`` (the worker) sends due rows through the
configured gateway, recording every attempt, and backs off exponentially on failure.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import crypto, policy
from ..adapters.sms import DeliveryError, SmsMessage
from ..identity import mask_mobile
from ..models.customer import Customer, Wallet
from ..models.notification import Notification, NotificationAttempt
from ..timeutil import format_local, utcnow

log = logging.getLogger(__name__)

# Chinese texts; {bank}, {hotline} and {time} (the bank's local time) are always available. The notices of
# wallet operations are declared with each operation (``operations.registry``); see ``template``.
TEMPLATES = {
    "wallet_locked": "【{bank}】您的数字钱包因连续{failures}次输入错误密码已被锁定，将于{until}自动解锁。如非本人操作，请致电{hotline}。",
    "wallet_locked_until_unlock": "【{bank}】您的数字钱包因多次输入错误密码已被锁定，需本人携带有效身份证件到网点或致电{hotline}核实身份后解锁。",
    "wallet_frozen": "【{bank}】我行检测到您的数字钱包存在异常登录尝试，为保障资金安全已临时冻结。请致电{hotline}或到网点办理。",
    "password_changed": "【{bank}】您的数字钱包登录密码已于{time}修改成功。如非本人操作，请立即致电{hotline}。",
    "security_questions_set": "【{bank}】您的数字钱包密保问题已于{time}设置。如非本人操作，请立即致电{hotline}。",
    "verification_code": "【{bank}】您的身份验证码为{code}，{minutes}分钟内有效。请仅向正在与您通话的{bank}客服人员读出，切勿告诉其他任何人。",
    "recovery_code": "【{bank}】您正在通过钱包App自助找回密码，验证码为{code}，{minutes}分钟内有效。银行工作人员不会向您索要此验证码；如非本人操作，请勿告诉任何人并致电{hotline}。",
    "password_recovered": "【{bank}】您的数字钱包登录密码已于{time}通过钱包App自助找回重新设置。如非本人操作，请立即致电{hotline}。",
    "counter_only": "【{bank}】您的身份核验已多次未通过，为保障资金安全，电话及App自助服务已暂停，请本人携带有效身份证件到网点办理。如有疑问请致电{hotline}。",
    "temporary_password": "【{bank}】您的数字钱包临时密码为{password}，{hours}小时内有效，仅可使用一次，登录后须立即设置新密码。请勿向任何人（包括银行工作人员）透露。",
}


def template(kind: str) -> str:
    """The text of an SMS kind: one of ``TEMPLATES``, or a wallet operation's notice."""
    if kind in TEMPLATES:
        return TEMPLATES[kind]
    from .operations import registry  # imported here: the operations queue their SMS through this module

    operation = registry.by_sms_kind(kind)
    if operation is None:
        raise KeyError(kind)
    return operation.sms_template


def customer_mobile(customer: Customer) -> str:
    return crypto.decrypt(customer.mobile_enc, context="customer.mobile")


def queue_sms(session: Session, customer: Customer, kind: str, *, wallet: Wallet | None = None,
              secret: bool = False, **params) -> Notification:
    """Add an SMS to the outbox in the current transaction.

    A text with ``secret=True`` (a temporary password) travels alone and is stored encrypted
    like every text; nothing of it is logged or audited.
    """
    now = utcnow()
    bank = policy.current().bank
    text = template(kind).format(bank=bank.name_zh, hotline=bank.hotline, time=format_local(now), **params)
    mobile = customer_mobile(customer)
    row = Notification(
        customer_id=customer.id, wallet_id=wallet.id if wallet else None, kind=kind,
        mobile_enc=crypto.encrypt(mobile, context="notification.mobile"), mobile_masked=mask_mobile(mobile),
        body_enc=crypto.encrypt(text, context="notification.body"), carries_secret=secret,
        status="pending", attempts=0, next_attempt_at=now, created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def message_text(row: Notification) -> str:
    return crypto.decrypt(row.body_enc, context="notification.body")


def _due(session: Session, limit: int):
    query = (select(Notification)
             .where(Notification.status == "pending", Notification.next_attempt_at <= utcnow())
             .order_by(Notification.id).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)  # several workers never send one twice
    return session.scalars(query).all()


def deliver_due(session: Session, gateway, *, limit: int = 100) -> dict:
    """Send what is due; commits after each message so a crash never resends a delivered one."""
    counts = {"sent": 0, "retry": 0, "failed": 0}
    max_attempts = policy.current().sms.max_attempts
    base = policy.current().sms.retry_base_seconds
    for row in _due(session, limit):
        now = utcnow()
        row.attempts += 1
        message = SmsMessage(ref=f"N{row.id}", mobile=crypto.decrypt(row.mobile_enc, context="notification.mobile"),
                             text=message_text(row), kind=row.kind)
        try:
            row.gateway_ref = gateway.send(message)
        except DeliveryError as exc:
            final = exc.permanent or row.attempts >= max_attempts
            outcome = "failed" if final else "retry"
            row.status = "failed" if final else "pending"
            row.last_error = str(exc)[:500]
            row.next_attempt_at = now + timedelta(seconds=base * 2 ** (row.attempts - 1))
            log.warning("sms %s ref=N%s to=%s: %s", outcome, row.id, row.mobile_masked, row.last_error)
        else:
            outcome = "sent"
            row.status, row.sent_at, row.last_error = "sent", now, None
        session.add(NotificationAttempt(notification_id=row.id, at=now, gateway=gateway.name, outcome=outcome,
                                        error=row.last_error if outcome != "sent" else None))
        session.commit()
        counts[outcome] += 1
    return counts
