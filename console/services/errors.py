"""Domain errors raised by services and mapped to pages, JSON and exit codes at the edge."""


class DomainError(Exception):
    code = "domain_error"

    def __init__(self, message: str = "", **details):
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details = details


class NotAllowed(DomainError):
    code = "not_allowed"


class NotFound(DomainError):
    code = "not_found"


class InvalidInput(DomainError):
    code = "invalid_input"


class Conflict(DomainError):
    code = "conflict"
