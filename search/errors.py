"""Search errors: every bad parameter is a 422 problem naming it."""

from __future__ import annotations

from core.errors import ValidationFailed


class InvalidParameter(ValidationFailed):
    """422 `validation_error` naming one query parameter (`param`, and `errors[]` in the
    shape of `api/errors.py::validation_problem`)."""

    def __init__(self, param: str, message: str, *, type_: str = "value_error") -> None:
        super().__init__(
            f"Invalid request parameter(s): {param}",
            param=param,
            errors=[{"param": param, "in": "query", "message": message, "type": type_}],
        )
        self.param = param
