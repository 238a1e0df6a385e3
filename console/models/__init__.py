"""Models, one module per area; importing this package registers them all."""
from .audit import AuditCheckpoint, AuditEvent, AuditIntake, AuditStreamCursor, ChainHead  # noqa: F401
from .customer import (Customer, LoginAttempt, RiskAlert, SecurityQuestion, TwoFactorBinding,  # noqa: F401
                       Wallet, WalletLock, WalletPasswordHistory)
from .service import Approval, Case, CaseNote, Receipt, RegistryEntry, Verification  # noqa: F401
from .notification import Notification, NotificationAttempt  # noqa: F401
from .ratelimit import RateLimitCounter  # noqa: F401
from .staff import Branch, BranchKind, Role, Staff, StaffSession  # noqa: F401
from .idempotency import IdempotencyKey  # noqa: F401
from .recovery import Recovery  # noqa: F401
from .passkey import StaffPasskey, WebauthnChallenge  # noqa: F401
