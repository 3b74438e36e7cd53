"""A light interaction model for model-worker process tests, and a ``microturn`` entry point that knows it.

``python -m tests.worker_models worker --model echo ...`` is ``microturn worker`` with the ``echo`` model
registered (``model.catalog.register``): it starts in a second, with no weights, and can be made slow.

- Typed text is answered in the same micro-turn with ``heard: <text>`` (200 ms of tone with it).
- ``what did I say`` is answered with everything the user typed in this session so far, *including* what
  they typed on another worker before the session moved here (:meth:`EchoModel.restore_session`).
- ``go slow`` makes every later step of this worker process take ``SLOW_STEP_S``: a worker that is alive
  (it heartbeats) but misses every deadline.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from model.base import PerSessionModel
from model.catalog import register
from service.cli import main
from service.microturn import (
    MICRO_TURN,
    Action,
    ConversationContext,
    MicroTurn,
    MicroTurnOutput,
)
from tests.fakes import tone

ECHO_MODEL = "echo"
SLOW_STEP_S = 2.5 * MICRO_TURN  # 500 ms: every micro-turn misses its deadline, whatever the machine
RECALL = "what did i say"
GO_SLOW = "go slow"


class EchoModel(PerSessionModel):
    name = ECHO_MODEL

    def __init__(self) -> None:
        self.typed: dict[str, list[str]] = {}  # session -> what the user typed, oldest first
        self.slow = False
        self._voice = tone(MICRO_TURN)

    def step(self, batch: Sequence[MicroTurn]) -> list[MicroTurnOutput]:
        if self.slow:
            time.sleep(SLOW_STEP_S)
        return super().step(batch)

    def step_session(self, mt: MicroTurn) -> MicroTurnOutput:
        typed = self.typed.setdefault(mt.session_id, [])
        out = MicroTurnOutput(session_id=mt.session_id, index=mt.index)
        for text in mt.texts:
            if RECALL in text.text.lower():
                out.text = "you said: " + "; ".join(typed)
            else:
                typed.append(text.text)
                out.text = f"heard: {text.text}"
                self.slow = self.slow or GO_SLOW in text.text.lower()
            out.action = Action.SPEAK
            out.pcm = self._voice
        return out

    def restore_session(self, session_id: str, context: ConversationContext) -> None:
        self.typed[session_id] = [m["content"] for m in context.messages
                                  if m["role"] == "user" and RECALL not in m["content"].lower()]

    def close_session(self, session_id: str) -> None:
        self.typed.pop(session_id, None)


def register_test_models() -> None:
    register(ECHO_MODEL, EchoModel)


if __name__ == "__main__":
    register_test_models()
    sys.exit(main())
