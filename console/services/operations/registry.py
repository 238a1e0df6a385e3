"""The registry of wallet operations: each module of this package declares one ``Operation``.

Everything that lists operations reads this registry at call time: the engine, the case page and
the staff API, the OpenAPI enum, SMS templates, receipt labels, the auditor's dashboard. Adding an
operation is adding its module (and, if it needs new state, a migration; its translations; its tests).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ... import codes

if TYPE_CHECKING:
    from ...models.customer import Wallet
    from ...models.service import Case
    from ..actor import Actor

CHANNELS = codes.SERVICE_CHANNELS  # a case is served at a counter or by phone
STRONG = frozenset({codes.STRONG})
STRONG_OR_MEDIUM = frozenset({codes.STRONG, codes.MEDIUM})


def no_approval(actor: Actor, case: Case) -> bool:
    return False


def supervisor_approval(actor: Actor, case: Case) -> bool:
    return True


@dataclass(frozen=True, eq=False)
class Operation:
    """One wallet operation, whole (DESIGN.md section 3, "What each operation needs")."""

    code: str
    position: int  # where the case page lists it (and the OpenAPI enum), ascending
    permission: str  # lets the actor start it (and run it, unless ``needs_approval`` says otherwise)
    # Verification strengths accepted, per case channel; None: needs no verification (protective).
    verification: Mapping[str, frozenset[str]] | None
    needs_approval: Callable[[Actor, Case], bool]  # the maker-checker rule
    applies: Callable[[Wallet], bool]  # whether it makes sense for the wallet's present state
    # The change itself: change(session, actor, case, wallet, *, reason_code, verification_id, now).
    # The engine records the audit event and queues the SMS around it, in the same transaction.
    change: Callable[..., None]
    sms_kind: str  # Notification.kind of the customer's notice
    sms_template: str  # Chinese; {bank}, {hotline}, {time} and {branch} are filled in
    label: str  # English msgid (marked with N_), shown on the case page and in approvals
    help: str  # English msgid: what it does, under the label
    receipt_label: tuple[str, str]  # (Chinese, English): receipts carry both, whatever the UI language
    counts_as_reset: bool  # counted by the dashboard's "unusually many unlocks or resets" lists
    request_permission: str | None = None  # lets the actor file it for a supervisor's approval instead
    # The reason the case page chooses for it (one of ``codes.REASON_CODES``), where one reason is
    # what brings a customer for it; None: staff choose, nothing is chosen for them.
    default_reason: str | None = None

    @property
    def action(self) -> str:
        """Its audit action (and refusals')."""
        return f"wallet.{self.code}"

    @property
    def needs_verification(self) -> bool:
        return self.verification is not None


REGISTRY: dict[str, Operation] = {}


def register(operation: Operation) -> Operation:
    if operation.code in REGISTRY:
        raise ValueError(f"operation {operation.code!r} is registered twice")
    REGISTRY[operation.code] = operation
    return operation


def get(code: str) -> Operation:
    """The operation, or KeyError."""
    return REGISTRY[code]


def all_operations() -> list[Operation]:
    """Every operation, in the order the case page lists them."""
    return sorted(REGISTRY.values(), key=lambda op: (op.position, op.code))


def codes() -> list[str]:
    return [op.code for op in all_operations()]


def by_action(action: str) -> Operation | None:
    return next((op for op in REGISTRY.values() if op.action == action), None)


def by_sms_kind(kind: str) -> Operation | None:
    return next((op for op in REGISTRY.values() if op.sms_kind == kind), None)


def reset_actions() -> tuple[str, ...]:
    """Audit actions of the operations that count as a reset."""
    return tuple(op.action for op in all_operations() if op.counts_as_reset)


class RegistryView(Mapping):
    """The registry read-only, by code, in the case page's order (``operations.RULES``)."""

    def __getitem__(self, code: str) -> Operation:
        return REGISTRY[code]

    def __iter__(self):
        return iter(codes())

    def __len__(self) -> int:
        return len(REGISTRY)
