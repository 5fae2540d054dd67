"""The emulator's own data: the packaged realistic instance, and JSON printed as IMDS does."""

from __future__ import annotations

import json
from importlib import resources

from .._document import InstanceDocument

__all__ = ["default_document", "jackson_dumps"]


def default_document() -> InstanceDocument:
    """A fresh copy of the packaged realistic instance (``default-instance.json``)."""
    text = resources.files(__package__).joinpath("default-instance.json").read_bytes()
    return InstanceDocument.from_json(text, source="default-instance.json")


def jackson_dumps(value: object) -> str:
    """JSON the way IMDS prints it (Java Jackson's default pretty printer).

    Objects: one member per line, 2-space indent, ``"Key" : value``. Arrays stay on one line
    with spaces inside the brackets, so a list of events reads ``[ {\\n  ...\\n} ]``.
    """
    return _jackson(value, 0)


def _jackson(value: object, depth: int) -> str:
    if isinstance(value, dict):
        if not value:
            return "{ }"
        inner = "  " * (depth + 1)
        members = [f"{inner}{json.dumps(k)} : {_jackson(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(members) + "\n" + "  " * depth + "}"
    if isinstance(value, list):
        # Jackson's array indenter is inline: it does not add a nesting level.
        return "[ " + ", ".join(_jackson(item, depth) for item in value) + " ]" if value else "[ ]"
    return json.dumps(value)
