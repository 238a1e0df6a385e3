"""Operations on a wallet and the maker-checker approvals they may need (DESIGN.md section 3).

| operation         | verification                          | approval              |
| unlock            | medium or strong                      | no                    |
| reset_password    | medium or strong                      | no                    |
| reset_questions   | medium or strong                      | no                    |
| reset_2fa         | strong at a counter; by phone, medium | by phone: supervisor  |
| place_hold        | none (protective)                     | no                    |
| release_hold      | strong or medium                      | supervisor            |
| release_freeze    | strong or medium                      | supervisor            |

Each operation is one module of this package declaring its ``registry.Operation``: permission,
verification per channel, approval rule, when it applies, what it changes, its SMS, its labels and
whether it counts as a reset. Every module of the package is imported here, so a new operation's
module registers itself; ``engine`` runs them and ``approvals`` handles maker-checker requests.
"""
from __future__ import annotations

import importlib
import pkgutil

from . import registry
from .approvals import decide, expire_stale, get_approval, pending_for_branch, request_approval
from .engine import (RULES, OperationAvailability, Result, applicable, availability, execute, may_start,
                     needs_approval, perform, required_strength, verification_gap, wallet_state)
from .registry import Operation

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "RULES", "Operation", "OperationAvailability", "Result", "applicable", "availability", "decide", "execute",
    "expire_stale", "get_approval", "may_start", "needs_approval", "pending_for_branch", "perform", "registry",
    "request_approval", "required_strength", "verification_gap", "wallet_state",
]
