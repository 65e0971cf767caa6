"""Between HTML forms and the API's request bodies: read fields, show the API's errors.

Validation itself stays in the API's pydantic models and route functions; this module only
turns form strings into the shapes those models take and their errors into per-field text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData

from app.api.problems import Problem

# Fields never echoed back into a re-rendered form.
SECRET_FIELDS = frozenset({"password", "csrf_token"})

FRIENDLIER = {
    "string_pattern_mismatch": {
        "name": "Use letters, digits, spaces and . _ @ -, starting with a letter or digit.",
        "trusted_thumbprint": "Give the certificate's SHA-256 fingerprint: 32 hex byte pairs, "
        "with or without colons.",
    },
    "string_too_short": {"name": "Give a name."},
}


@dataclass
class FormState:
    """What a form shows: entered values, an error per field, and one for the whole form."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    message: str | None = None
    details: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.errors or self.message)

    def add(self, name: str, message: str) -> None:
        self.errors.setdefault(name, message)


def values_of(form: FormData) -> dict[str, Any]:
    """The submitted values to re-fill the form with: secrets left out, lists kept."""
    values: dict[str, Any] = {}
    for key in form:
        if key in SECRET_FIELDS:
            continue
        items = [v for v in form.getlist(key) if isinstance(v, str)]
        values[key] = items if len(items) > 1 or key.endswith("[]") else (items or [""])[0]
    return values


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def optional(form: FormData, name: str) -> str | None:
    """A blank field means 'not given'."""
    return text(form, name) or None


def checkbox(form: FormData, name: str) -> bool:
    return form.get(name) not in (None, "", "0", "false", "off")


def _message(error: dict[str, Any], name: str) -> str:
    better = FRIENDLIER.get(error.get("type", ""), {}).get(name)
    if better:
        return better
    msg = str(error.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return msg[:1].upper() + msg[1:]


def apply_validation_error(state: FormState, exc: ValidationError, *, model_field: str) -> None:
    """Put each pydantic error next to its field; errors about the whole model go to
    ``model_field`` (the field the model-level rule is about)."""
    for error in exc.errors(include_input=False, include_url=False):
        loc = [str(p) for p in error.get("loc", ())]
        name = loc[0] if loc else model_field
        state.add(name, _message(error, name))


def apply_problem(state: FormState, problem: Problem) -> None:
    """An API refusal: next to its field when it names one, else above the form."""
    fields = [
        str(e["loc"][-1])
        for e in problem.extra.get("errors", [])
        if isinstance(e, dict) and e.get("loc")
    ]
    listed = problem.extra.get("problems")
    if isinstance(listed, list) and listed:
        # Several reasons (e.g. what each target's layout cannot give): one line each.
        state.message = problem.title if problem.title else "The change was refused"
        state.details = [str(p) for p in listed]
    elif fields:
        for name in fields:
            state.add(name, problem.detail[:1].upper() + problem.detail[1:])
    else:
        state.message = problem.detail[:1].upper() + problem.detail[1:]


def parse_options(raw: str, state: FormState, name: str = "options") -> dict[str, Any]:
    """``key = value`` lines. A value that reads as JSON (number, true/false, list) is taken
    as such, anything else as text."""
    options: dict[str, Any] = {}
    for number, line in enumerate(raw.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            state.add(name, f"Line {number}: write 'key = value'.")
            continue
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        if isinstance(parsed, float | dict) or parsed is None:
            parsed = value
        options[key] = parsed
    return options


def format_options(options: dict[str, Any] | None) -> str:
    lines = []
    for key, value in (options or {}).items():
        shown = value if isinstance(value, str) else json.dumps(value)
        lines.append(f"{key} = {shown}")
    return "\n".join(lines)
