"""The ``events`` data channel: validation of client messages and construction of server events.

See docs/protocol.md for the message catalogue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_TEXT_CHARS = 2000  # one typed message; longer input is a client bug or abuse
MAX_INSTRUCTIONS_CHARS = 8000  # instructions are pinned in the model's context: keep them bounded
MAX_MESSAGE_BYTES = 64 * 1024  # anything larger on the events channel is rejected unparsed


class ProtocolError(Exception):
    """A client message was rejected; ``code`` is the ``error`` event's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class InputText:
    text: str


@dataclass(frozen=True)
class SessionUpdate:
    instructions: str


ClientMessage = InputText | SessionUpdate


def parse_client_message(raw: str | bytes) -> ClientMessage:
    """Validate one message from the client; raise :class:`ProtocolError` saying what is wrong."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ProtocolError("invalid_json", f"message larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("invalid_json", f"message is not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("invalid_json", "message must be a JSON object with a 'type' field")
    kind = msg.get("type")
    if kind == "input.text":
        return InputText(_string_field(msg, "text", MAX_TEXT_CHARS, allow_empty=False))
    if kind == "session.update":
        return SessionUpdate(_string_field(msg, "instructions", MAX_INSTRUCTIONS_CHARS, allow_empty=True))
    raise ProtocolError(
        "unknown_type", f"unknown message type {kind!r}; expected 'input.text' or 'session.update'"
    )


def _string_field(msg: dict[str, Any], name: str, max_chars: int, allow_empty: bool) -> str:
    value = msg.get(name)
    if not isinstance(value, str):
        raise ProtocolError("invalid_field", f"{msg['type']}: field '{name}' must be a string")
    value = value.strip()
    if not value and not allow_empty:
        raise ProtocolError("invalid_field", f"{msg['type']}: field '{name}' must not be empty")
    if len(value) > max_chars:
        raise ProtocolError(
            "invalid_field", f"{msg['type']}: field '{name}' is longer than {max_chars} characters"
        )
    return value


def server_event(kind: str, t_ms: int, **fields: Any) -> str:
    """Serialise a server event; every event carries the session time ``t_ms``."""
    return json.dumps({"type": kind, "t_ms": t_ms, **fields}, separators=(",", ":"))
