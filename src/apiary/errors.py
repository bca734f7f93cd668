"""The exception tree every layer raises and the API turns into structured errors.

ApiaryError
├── BadRequest (400)
│   └── Invalid (422)            — carries field details
├── Unauthorized (401)
├── Forbidden (403)
│   └── QuotaExceeded (403)
├── NotFound (404)
├── Conflict (409)
│   └── AlreadyExists (409)
├── Gone (410)                  — watch from a compacted resourceVersion
├── PayloadTooLarge (413)
├── TooManyRequests (429)       — a hive's queue is at its routing.queueLimit
└── Unavailable (503)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldDetail:
    """One problem with one field, named by its path (``spec.stages[1].agentRef``)."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class ApiaryError(Exception):
    status: int = 500
    code: str = "InternalError"

    def __init__(self, message: str, details: list[FieldDetail] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details or [])

    def as_dict(self) -> dict[str, object]:
        body: dict[str, object] = {
            "code": self.status,
            "reason": self.code,
            "message": self.message,
        }
        if self.details:
            body["details"] = [d.as_dict() for d in self.details]
        return body


class BadRequest(ApiaryError):
    status = 400
    code = "BadRequest"


class Invalid(BadRequest):
    status = 422
    code = "Invalid"


class Unauthorized(ApiaryError):
    status = 401
    code = "Unauthorized"


class Forbidden(ApiaryError):
    status = 403
    code = "Forbidden"


class QuotaExceeded(Forbidden):
    code = "QuotaExceeded"


class NotFound(ApiaryError):
    status = 404
    code = "NotFound"


class Conflict(ApiaryError):
    status = 409
    code = "Conflict"


class AlreadyExists(Conflict):
    code = "AlreadyExists"


class Gone(ApiaryError):
    status = 410
    code = "Gone"


class PayloadTooLarge(ApiaryError):
    status = 413
    code = "PayloadTooLarge"


class TooManyRequests(ApiaryError):
    status = 429
    code = "TooManyRequests"


class Unavailable(ApiaryError):
    status = 503
    code = "Unavailable"
