"""Text in templates rendered with sandboxed Jinja2: messages, and arguments such as
``{{ event.payload.item }}``. Undefined names are errors, nothing in the sandbox can reach Python
internals, and what a message may show of a patient is masked as for the role the workflow runs
as (see ``masked_patient`` in actions.py)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

_environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class RenderError(ValueError):
    """A template text that names what is not there, or does not parse."""


@lru_cache(maxsize=2048)
def _compiled(text: str) -> Any:
    return _environment.from_string(text)


def render(text: str, values: dict[str, Any]) -> str:
    try:
        return str(_compiled(text).render(values))
    except TemplateError as exc:
        raise RenderError(f"cannot render {text!r}: {exc.message or type(exc).__name__}") from exc
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:  # e.g. text times a number
        raise RenderError(f"cannot render {text!r}: {type(exc).__name__}") from exc


def render_value(value: Any, values: dict[str, Any]) -> Any:
    """Strings holding ``{{`` rendered; lists and mappings rendered item by item; others as they are."""
    if isinstance(value, str):
        return render(value, values) if "{{" in value else value
    if isinstance(value, list):
        return [render_value(v, values) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, values) for k, v in value.items()}
    return value


def check_syntax(text: str) -> str | None:
    """What is wrong with a template text's syntax, or None."""
    try:
        _environment.parse(text)
    except TemplateError as exc:
        return str(exc.message)
    return None
