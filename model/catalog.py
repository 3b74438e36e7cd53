"""The models ``--model NAME`` can select. Built-ins are imported lazily: naming one loads only it."""

from __future__ import annotations

from collections.abc import Callable

from model.base import InteractionModel

ModelFactory = Callable[[], InteractionModel]


def _reactive() -> InteractionModel:
    from model.speech_agent import ReactiveAgent

    return ReactiveAgent()


def _turn_based() -> InteractionModel:
    from model.speech_agent import TurnBasedAgent

    return TurnBasedAgent()


def _microturn() -> InteractionModel:
    from model.microturn_agent import MicroturnAgent

    return MicroturnAgent()


_MODELS: dict[str, ModelFactory] = {
    "reactive": _reactive,  # micro-turn policy: answers at short pauses, yields within one micro-turn
    "turn-based": _turn_based,  # the baseline harness: endpointing -> recognise -> reply -> speak
    "microturn": _microturn,  # the trained interaction model (model/interaction.py) on live encoders
}


def register(name: str, factory: ModelFactory) -> None:
    """Make another model selectable by name (plugins, tests)."""
    _MODELS[name] = factory


def model_names() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str) -> InteractionModel:
    try:
        factory = _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}") from None
    return factory()
