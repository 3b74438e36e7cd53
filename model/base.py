"""The contract every interaction model implements."""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from typing import ClassVar

from service.microturn import ConversationContext, MicroTurn, MicroTurnOutput

log = logging.getLogger(__name__)


class InteractionModel(abc.ABC):
    """Steps a batch of micro-turns -- at most one per session -- and decides what each session does.

    Per-session state (recogniser, reply being spoken, ...) is keyed by ``session_id``; it is created on a
    session's first micro-turn (or rebuilt by :meth:`restore_session` when the session comes from another
    worker) and released on a micro-turn with ``closing=True`` or by :meth:`close_session`. ``step`` runs
    on a worker thread, never on the asyncio event loop, and one call at a time: implementations need no
    locking of their per-session state.
    """

    name: ClassVar[str]

    def warmup(self, max_sessions: int) -> None:  # noqa: B027 - optional hook, empty by default
        """Load weights, build per-session resources for up to ``max_sessions`` sessions and run a
        throw-away step, so that neither the first tick nor a new session's first words are slow."""

    @abc.abstractmethod
    def step(self, batch: Sequence[MicroTurn]) -> list[MicroTurnOutput]:
        """Return one output per micro-turn, in the order of ``batch``."""

    @abc.abstractmethod
    def close_session(self, session_id: str) -> None:
        """Release everything held for ``session_id``; unknown ids are ignored."""

    def restore_session(self, session_id: str, context: ConversationContext) -> None:  # noqa: B027
        """Rebuild ``session_id``'s state from the conversation the media node kept, replacing any state
        held for it: the session was stepped elsewhere meanwhile (its worker died or was too slow), so what
        this model remembers of it is missing or stale. Called on the model's thread, between steps, right
        before the session's next micro-turn is stepped; that micro-turn already carries the typed text and
        background news no model answered (:meth:`ConversationContext.replay`). The default does nothing:
        the session goes on with whatever state this model has, fresh if none."""

    def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release background threads and resources at shutdown."""


class PerSessionModel(InteractionModel):
    """A model that steps each session's micro-turn on its own, so one session's fault stays its own.

    The failing session gets an output with ``error`` set and keeps its media; the others of the batch
    are stepped as if nothing happened.
    """

    @abc.abstractmethod
    def step_session(self, mt: MicroTurn) -> MicroTurnOutput: ...

    def step(self, batch: Sequence[MicroTurn]) -> list[MicroTurnOutput]:
        outputs = []
        for mt in batch:
            try:
                outputs.append(self.step_session(mt))
            except Exception as exc:
                log.exception(
                    "model %s failed on session %s micro-turn %d", self.name, mt.session_id, mt.index
                )
                outputs.append(
                    MicroTurnOutput(
                        session_id=mt.session_id, index=mt.index, error=f"{type(exc).__name__}: {exc}"
                    )
                )
        return outputs
