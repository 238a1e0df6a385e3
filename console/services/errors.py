"""Domain errors raised by services and mapped to pages, JSON and exit codes at the edge."""


class DomainError(Exception):
    """``audit``, when given, is the refusal's audit event: the caller rolls the transaction
    back (nothing changes) and then records it, so the refusal is on the chain on its own."""

    code = "domain_error"

    def __init__(self, message: str = "", *, audit: dict | None = None, **details):
        super().__init__(message or self.code)
        self.message = message or self.code
        self.audit = audit
        self.details = details


class NotAllowed(DomainError):
    code = "not_allowed"


class Forbidden(NotAllowed):
    """The actor may not use this at all (their role, or not their case): a 403, not a message
    on the page."""

    code = "forbidden"


class NotFound(DomainError):
    code = "not_found"


class InvalidInput(DomainError):
    code = "invalid_input"


class Conflict(DomainError):
    code = "conflict"
