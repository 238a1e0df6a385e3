"""Domain operations: take an explicit actor, change state, write their audit event, never commit."""
