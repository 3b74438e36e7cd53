"""The trained interaction model: a small causal transformer that lives in 200 ms micro-turns.

Every micro-turn is a short run of tokens (the contract is :mod:`model.ticks`)::

    <tick> [<user>] [<agent>] word ... <act> ACTION [word ... <end>]

The network reads the input part and writes the output part -- the action, and for ``<say>`` the words --
and what it wrote is fed back, so that it knows what it said and when (the rhythm of "every four seconds
say breathe" is in its own past output). Three choices make it fit a 200 ms loop:

- **Positions are time.** Rotary positions are the *micro-turn index*, shared by every token of a tick,
  so the attention score between two tokens depends on how many micro-turns lie between them, not on how
  many words. Order inside a tick comes from a learned embedding of the token's offset within its tick.
- **Bounded memory.** A token attends to the last ``window`` tokens plus *pinned* tokens: the newest
  ``pin_budget`` *instruction* pins (typed text, the opening words of a spoken utterance that contains an
  instruction word: ``say``, ``every`` ...) and the newest ``event_pin_budget`` *event* pins (background
  result markers, the model's own ``<stop>/<answer>/<ask>/<news>`` decisions), so that events, which matter
  for a few minutes, cannot push out an instruction given at the start. The rule is the same in training
  (an attention mask) and in streaming (the KV cache keeps exactly what the mask can reach), so a 30-minute
  session steps at a constant cost and streaming reproduces the training-time computation exactly.
- **Copy through hash buckets.** Words outside the known vocabulary share ``n_buckets`` hash buckets.
  Input and output embeddings are tied, and a pointer head (:class:`CopyHead`) puts probability on the
  ids of the words the model can see, so repeating a word the user said is "point at it, emit its id";
  the session remembers which word it last heard in each bucket, and that is the word said.

Runtime API: :class:`TickModel` (``load``, ``new_session``, ``step``), one :class:`SessionStream` per
session. Training lives in :mod:`model.train`.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.ticks import (
    ACT,
    AGENT,
    END,
    MAX_SAY_WORDS,
    RESULT,
    RESULT_END,
    SPECIAL_TOKENS,
    SPECIAL_TOKENS_V1,
    TICK,
    TYPED,
    TYPED_END,
    USER,
    Act,
    Scenario,
    TickInput,
    TickOutput,
)

DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "microturn.pt"
CHECKPOINT_FORMAT = 1  # bump when the layout of the saved dict changes

PAD = "<pad>"  # fills ragged batches; never attended to by a real token, never a target


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Number words as the recogniser spells them ("twenty one" is two words): counts, countdowns, durations.
NUMBER_WORDS = _words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred"
)

# Frequent English words: known ids for them spare hash buckets for the open-class words worth copying.
COMMON_WORDS = _words(
    "a about after again all also always am an and any are as ask at away back be because been before "
    "begin being between both but by call can come could count day did do does done down each else end "
    "enough every first for from get give go going good got had has have he hear hello her here hey hi "
    "him his how i if in into is it its just keep know last later let like listen long look make me "
    "mention mine minute minutes more most much must my need never new next no not now number of off "
    "ok okay on once one only or other our out over please quiet remind repeat right said same say "
    "second seconds see she should show so some soon speak start stay still stop sure talk tell than "
    "thank thanks that the their them then there these they thing think this those time times to too "
    "until up us wait want was we well were what when whenever where which while who why will with word "
    "words would yes yet you your"
)

# Words that make an utterance an instruction worth keeping beyond the window ("every four seconds say
# breathe until I say stop", "in ten seconds tell me ...", "whenever I mention a colour ..."). Chosen from
# how people phrase timed and cued requests, not from any one template set, and leaving out words as
# frequent in chatter as in requests ("when", "time"); stored in the checkpoint.
PIN_WORDS = _words("say tell remind count every whenever until stop repeat translate mention seconds minutes")

# Tokens a session's cache holds beyond window + pin budget before unreachable ones are dropped: ~20
# quiet micro-turns between compactions.
CACHE_SLACK = 64

# Decisions worth remembering beyond the window: whether news was already said, a question asked ...
PINNED_ACTS = frozenset({Act.STOP.value, Act.ANSWER.value, Act.ASK.value, Act.NEWS.value})

# Pin classes, a token's pin flag: each class keeps its newest pinned tokens beyond the window under a budget
# of its own (InteractionConfig.pin_budgets), so that decisions and result markers, which matter for a few
# minutes, cannot push out an instruction that holds for the whole session.
NOT_PINNED = 0
INSTRUCTION_PIN = 1  # typed text, utterances with a pin word, SessionStream.pin
EVENT_PIN = 2  # PINNED_ACTS, <result> markers (INSTRUCTION_PIN when the config has no event budget)

FAR_GIDX = 1 << 40  # gidx of padding: far before (-) or after (+) every real token, so masks drop it


@dataclass
class InteractionConfig:
    """Shape of the network and of its memory; saved inside every checkpoint."""

    n_buckets: int = 4096  # hash buckets for words outside the known list (the copy slots)
    d_model: int = 128  # width of the residual stream
    n_layers: int = 4  # transformer blocks
    n_heads: int = 4  # attention heads; d_model / n_heads is the rotary head size (must be even)
    d_ff: int = 512  # hidden width of each block's MLP
    window: int = 384  # tokens every token attends to (~100 micro-turns, ~20 s at ~4 tokens a tick)
    pin_budget: int = 192  # pinned instruction tokens kept beyond the window, newest first
    # Pinned event tokens (PINNED_ACTS, <result> markers) kept beyond the window, newest first, apart from
    # the instructions. None: events are pinned as instructions and share pin_budget, the rule of the v1
    # checkpoint (a config saved without this field loads with it); there conversation's ~13 events a minute
    # (of ~22 pinned tokens) pushed an instruction given at the start out after ~7 minutes. Presets set it.
    event_pin_budget: int | None = None
    max_offset: int = 48  # tokens: later offsets within one tick share the last offset embedding
    rope_base: float = 10_000.0  # rotary base; period of the slowest pair ~ 2 pi * base micro-turns
    copy_dim: int = 64  # query/key width of the copy head (even: it is rotary too)
    dropout: float = 0.0  # synthetic data is unlimited: regularise with more data, not dropout
    crop: int = 768  # tokens per training sequence (plus the pinned tokens from before it)
    utterance_gap: int = 8  # micro-turns (1.6 s) without a recognised word end a spoken utterance
    # Tokens of an utterance that can be pinned, from its start: an instruction is short, and a long
    # monologue that happens to contain "say" must not push the instructions out of the pin budget.
    pin_utterance_tokens: int = 32
    pin_words: tuple[str, ...] = tuple(PIN_WORDS)  # words that pin their utterance
    seed: int = 0  # training seed
    data_version: str = ""  # model.scenarios.DATA_VERSION the weights were trained on

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def pin_budgets(self) -> tuple[int, int]:
        """Pinned tokens kept beyond the window per pin class: (INSTRUCTION_PIN, EVENT_PIN)."""
        return self.pin_budget, self.event_pin_budget or 0

    @property
    def cache_bound(self) -> int:
        """Tokens any query can attend to: the window and every class's pins."""
        return self.window + sum(self.pin_budgets)

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads or self.head_dim % 2:
            raise ValueError(f"d_model {self.d_model} / n_heads {self.n_heads} must be an even integer")
        self.pin_words = tuple(self.pin_words)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InteractionConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def preset(name: str, **overrides: Any) -> InteractionConfig:
    """Named shapes: ``tiny`` (tests, seconds), ``small`` (2 CPU cores, <= 60 min), ``gpu`` (bigger)."""
    presets = {
        "tiny": InteractionConfig(
            n_buckets=256,
            d_model=64,
            n_layers=2,
            n_heads=2,
            d_ff=256,
            window=64,
            pin_budget=32,
            event_pin_budget=16,
            crop=256,
            copy_dim=32,
        ),
        # Instruction pins: ~9-11 tokens a minute of conversation have a pin word ("can you tell me ...", "set
        # a timer for ten seconds"), so 384 keep an instruction given at the start for 35-40 minutes. Event
        # pins: ~13 a minute, so 48 keep the last ~4 minutes of decisions and results.
        "small": InteractionConfig(pin_budget=384, event_pin_budget=48),
        "gpu": InteractionConfig(  # ~12 M parameters: still <= 25 MB in fp16
            n_buckets=6144,
            d_model=320,
            n_layers=8,
            n_heads=5,
            d_ff=1280,
            window=1024,
            pin_budget=384,
            event_pin_budget=64,
            crop=2048,
        ),
    }
    if name not in presets:
        raise ValueError(f"unknown config {name!r}; choose one of: {', '.join(presets)}")
    return replace(presets[name], **overrides)


# ----------------------------------------------------------------------------------------------------
# Vocabulary


def word_bucket(word: str, n_buckets: int) -> int:
    """Stable bucket of a word: the same in every process (Python's ``hash`` is salted per process)."""
    digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n_buckets


# Ids below this are <pad> and special tokens in every vocabulary, whichever list of model/ticks.py it was
# built with (new tokens are appended: SPECIAL_TOKENS starts with SPECIAL_TOKENS_V1), so that the copy head
# (which never copies below it) computes for a version 1 checkpoint exactly what it was trained with. The
# video tokens of later versions lie above it: the copy head may point at them, but decoding never emits
# them (Vocab.word_mask). A vocabulary's own boundary between specials and words is Vocab.n_special.
N_SPECIAL = 1 + len(SPECIAL_TOKENS_V1)


class Vocab:
    """``<pad>``, special tokens (default: those of :mod:`model.ticks`), known words, then ``n_buckets``
    hash buckets. A checkpoint keeps the specials it was trained with (:func:`load_checkpoint`)."""

    def __init__(
        self, known_words: Iterable[str], n_buckets: int, specials: Sequence[str] = SPECIAL_TOKENS
    ) -> None:
        if tuple(specials[: len(SPECIAL_TOKENS_V1)]) != SPECIAL_TOKENS_V1:
            raise ValueError("special tokens must start with model.ticks.SPECIAL_TOKENS_V1, in order")
        self.specials: tuple[str, ...] = tuple(specials)
        special_set = {PAD, *specials}
        words = sorted({w.lower() for w in known_words} - special_set)
        self.tokens: list[str] = [PAD, *specials, *words]  # id -> token, buckets excluded
        self.ids: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        self.n_special = 1 + len(specials)
        self.n_buckets = n_buckets
        self.bucket_base = len(self.tokens)  # first bucket id
        self.size = self.bucket_base + n_buckets
        self.pad_id = self.ids[PAD]
        self.end_id = self.ids[END]
        self.act_ids: dict[Act, int] = {a: self.ids[a.value] for a in Act}

    @classmethod
    def build(cls, template_words: Iterable[str], n_buckets: int) -> Vocab:
        """The known words: the scenario templates' closed-class words, number words, common words."""
        return cls([*template_words, *NUMBER_WORDS, *COMMON_WORDS], n_buckets)

    @property
    def known_words(self) -> list[str]:
        return self.tokens[self.n_special :]

    def knows(self, token: str) -> bool:
        """Whether ``token`` has an id of its own (a special token or a known word), not a hash bucket:
        the runtime leaves out tokens an older checkpoint was never trained with."""
        return token in self.ids

    def encode(self, token: str) -> int:
        """Id of a token: special or known word as is, any other word through its hash bucket."""
        found = self.ids.get(token)
        if found is not None:
            return found
        lower = token.lower()
        found = self.ids.get(lower)
        if found is not None:
            return found
        return self.bucket_base + word_bucket(lower, self.n_buckets)

    def is_bucket(self, token_id: int) -> bool:
        return token_id >= self.bucket_base

    def is_word(self, token_id: int) -> bool:
        return token_id >= self.n_special

    def word_mask(self) -> Tensor:
        """[V] bool: known words (buckets are allowed per session, once a word was heard in them)."""
        mask = torch.zeros(self.size, dtype=torch.bool)
        mask[self.n_special : self.bucket_base] = True
        return mask

    def act_mask(self) -> Tensor:
        mask = torch.zeros(self.size, dtype=torch.bool)
        mask[list(self.act_ids.values())] = True
        return mask


# ----------------------------------------------------------------------------------------------------
# Tokens of a session, in order: ids, times, and which tokens outlive the window


class Pins(NamedTuple):
    """Tokens pinned at once, all of one pin class."""

    kind: int  # INSTRUCTION_PIN or EVENT_PIN
    gidx: tuple[int, ...]


NO_PINS = Pins(NOT_PINNED, ())


class Pinner:
    """Decides which tokens stay visible after they leave the sliding window, and in which pin class.

    Causal by construction: a token is pinned at the latest while it is still inside the window of the
    token that decides it (an instruction word pins the earlier words of its utterance only as far back as
    ``window``). So at any moment, every token that has left the window has its final pin flag, and the
    training mask (which sees all flags at once) and the streaming cache (which sees them as they come)
    keep exactly the same tokens.
    """

    def __init__(
        self,
        window: int,
        utterance_gap: int,
        pin_words: Iterable[str],
        max_tokens: int,
        events_apart: bool,
    ) -> None:
        self.window = window
        self.utterance_gap = utterance_gap
        self.pin_words = frozenset(pin_words)
        self.max_tokens = max_tokens  # tokens from an utterance's start that can be pinned
        # Without a budget of their own (the v1 rule), events are pinned as instructions.
        self.event = EVENT_PIN if events_apart else INSTRUCTION_PIN
        self._region = ""  # TYPED or RESULT while inside one, else ""
        self._region_len = 0  # tokens inside it so far
        self._in_output = False
        self._utterance: list[int] = []  # gidx of the current utterance's word (and annotation) tokens
        self._utterance_len = 0  # its length so far, in tokens
        self._utterance_pinned = False
        self._last_word_tick = -(1 << 30)

    def push(self, token: str, gidx: int, tick: int) -> Pins:
        """Take the next token of the stream; return the tokens to pin now (this one, or earlier)."""
        if token == TICK:
            self._in_output = False
            self._region = ""  # a typed text or result never spans micro-turns, even if left unclosed
            return NO_PINS
        if token == ACT:
            self._in_output = True
            return NO_PINS
        if self._in_output:
            return Pins(self.event, (gidx,)) if token in PINNED_ACTS else NO_PINS
        if token == RESULT:
            self._region, self._region_len = token, 0
            return Pins(self.event, (gidx,))
        if token == TYPED:
            self._region, self._region_len = token, 0
            return Pins(INSTRUCTION_PIN, (gidx,))
        if token in (TYPED_END, RESULT_END):
            self._region = ""
            return Pins(self.event if token == RESULT_END else INSTRUCTION_PIN, (gidx,))
        if self._region == TYPED:
            # Typed text is nearly always an instruction or a question: keep it, up to the same length
            # as a spoken one, so that a pasted paragraph cannot push every instruction out.
            self._region_len += 1
            return Pins(INSTRUCTION_PIN, (gidx,)) if self._region_len <= self.max_tokens else NO_PINS
        if self._region == RESULT or token in (USER, AGENT):
            return NO_PINS  # a result's content is the runtime's to say; its markers are pinned above
        # A recognised word or its annotation.
        if tick - self._last_word_tick > self.utterance_gap:
            self._utterance, self._utterance_len, self._utterance_pinned = [], 0, False
        self._last_word_tick = tick
        self._utterance_len += 1
        if self._utterance_len > self.max_tokens:
            return NO_PINS  # the tail of a long utterance: chatter, not the instruction
        self._utterance = [g for g in self._utterance if gidx - g < self.window]
        self._utterance.append(gidx)
        if self._utterance_pinned:
            return Pins(INSTRUCTION_PIN, (gidx,))
        if token in self.pin_words:
            self._utterance_pinned = True
            return Pins(INSTRUCTION_PIN, tuple(self._utterance))
        return NO_PINS


@dataclass(slots=True)
class Token:
    """One token of a session's stream."""

    id: int
    pos: int  # micro-turn index: the rotary position
    offset: int  # index within its micro-turn
    gidx: int  # index in the session's whole token stream
    output: bool  # written by the model (after <act>), so a training target
    pinned: int = NOT_PINNED  # pin class


class TokenStream:
    """Turns a session's token strings into :class:`Token` s: the one tokenizer of training and runtime."""

    def __init__(self, vocab: Vocab, cfg: InteractionConfig) -> None:
        self.vocab = vocab
        self.pinner = Pinner(
            cfg.window,
            cfg.utterance_gap,
            cfg.pin_words,
            cfg.pin_utterance_tokens,
            events_apart=cfg.event_pin_budget is not None,
        )
        self.tick = -1  # index of the current micro-turn; the first <tick> makes it 0
        self.offset = 0
        self.next_gidx = 0
        self.in_output = False
        self.bucket_words: dict[int, str] = {}  # bucket id -> the most recent input word hashed there

    def push(self, token: str) -> tuple[Token, Pins]:
        """Next token; also returns the tokens the pinner pins now (may include this one)."""
        if token == TICK:
            self.tick += 1
            self.offset = 0
            self.in_output = False
        elif self.tick < 0:
            raise ValueError(f"a session's stream starts with {TICK}, got {token!r}")
        token_id = self.vocab.encode(token)
        if not self.in_output and self.vocab.is_bucket(token_id):
            self.bucket_words[token_id] = token.lower()
        tok = Token(token_id, self.tick, self.offset, self.next_gidx, self.in_output)
        if token == ACT:
            self.in_output = True  # what follows <act> is the model's own
        pins = self.pinner.push(token, tok.gidx, self.tick)
        if tok.gidx in pins.gidx:
            tok.pinned = pins.kind
        self.offset += 1
        self.next_gidx += 1
        return tok, pins

    def word(self, token_id: int) -> str | None:
        """The word an output id stands for in this session (None: a bucket no input word fell into)."""
        if self.vocab.is_bucket(token_id):
            return self.bucket_words.get(token_id)
        return self.vocab.tokens[token_id]


def tick_tokens(tick_input: TickInput, output: TickOutput | None = None) -> list[str]:
    return [*tick_input.to_tokens(), *(output.to_tokens() if output is not None else ())]


@dataclass
class EncodedScenario:
    """A whole scenario as arrays over its token stream (index = gidx)."""

    ids: npt.NDArray[np.int64]
    pos: npt.NDArray[np.int64]
    offset: npt.NDArray[np.int64]
    pinned: npt.NDArray[np.int8]  # pin class (NOT_PINNED, INSTRUCTION_PIN, EVENT_PIN)
    output: npt.NDArray[np.bool_]  # token written by the model: predicting it is a training target
    tick_starts: npt.NDArray[np.int64]  # gidx of each micro-turn's <tick>

    def __len__(self) -> int:
        return len(self.ids)


def encode_scenario(scenario: Scenario, vocab: Vocab, cfg: InteractionConfig) -> EncodedScenario:
    stream = TokenStream(vocab, cfg)
    toks: list[Token] = []
    starts: list[int] = []
    for tick in scenario:
        starts.append(stream.next_gidx)
        for s in tick_tokens(tick.input, tick.output):
            tok, pins = stream.push(s)
            toks.append(tok)
            for g in pins.gidx:
                toks[g].pinned = pins.kind

    def arr(values: list[int]) -> npt.NDArray[np.int64]:
        return np.asarray(values, dtype=np.int64)

    return EncodedScenario(
        ids=arr([t.id for t in toks]),
        pos=arr([t.pos for t in toks]),
        offset=arr([t.offset for t in toks]),
        pinned=np.asarray([t.pinned for t in toks], dtype=np.int8),
        output=np.asarray([t.output for t in toks], dtype=np.bool_),
        tick_starts=arr(starts),
    )


# ----------------------------------------------------------------------------------------------------
# The network


def attention_mask(
    q_gidx: Tensor, k_gidx: Tensor, k_pins: Tensor, window: int, pin_budgets: Sequence[int]
) -> Tensor:
    """Who may attend to whom: causal, the last ``window`` tokens, and of each pin class the newest
    pinned tokens older than that, ``pin_budgets[kind - INSTRUCTION_PIN]`` of them.

    q_gidx [B, Tq], k_gidx [B, Tk] (ascending in each row; padding at -/+FAR_GIDX), k_pins [B, Tk] pin class
    -> [B, 1, Tq, Tk] bool, True where query may attend key. Pure function of stream indices, so the
    training forward and the streaming cache compute the same thing.
    """
    q = q_gidx[:, :, None]  # [B, Tq, 1]
    k = k_gidx[:, None, :]  # [B, 1, Tk]
    causal = k <= q
    keep = (q - k) < window  # near
    edge = torch.searchsorted(k_gidx, q_gidx - window, right=True)  # [B, Tq] keys with gidx <= q - window
    for kind, budget in enumerate(pin_budgets, start=INSTRUCTION_PIN):
        if budget == 0:
            continue  # a class without a budget (events under the v1 rule) costs nothing
        pinned = k_pins == kind  # [B, Tk]
        pins = pinned.long().cumsum(-1)  # [B, Tk] pinned keys of this class at or before each key
        pins0 = F.pad(pins, (1, 0))  # [B, Tk + 1], pins0[:, n] = pinned among the first n keys
        pins_to_edge = pins0.gather(-1, edge)  # [B, Tq] pinned keys outside the query's window
        newer = pins_to_edge[:, :, None] - pins[:, None, :]  # [B, Tq, Tk] pinned keys in (k, q - window]
        keep = keep | (pinned[:, None, :] & (newer < budget))
    return (causal & keep).unsqueeze(1)


class Rotary(nn.Module):
    """Rotary position embedding over micro-turn indices (angles in float64: sessions reach ~10^4 ticks)."""

    inv_freq: Tensor

    def __init__(self, head_dim: int, base: float) -> None:
        super().__init__()
        inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)  # [hd / 2]

    def forward(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        angles = pos.to(torch.float64)[..., None] * self.inv_freq  # [B, T, hd / 2]
        return angles.cos().float()[:, None], angles.sin().float()[:, None]  # [B, 1, T, hd / 2] each


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, H, T, hd] rotated pairwise (first half with second half) by the token's angles."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


KV = tuple[Tensor, Tensor]  # keys (already rotated), values: [B, H, S, hd] each


class Attention(nn.Module):
    def __init__(self, cfg: InteractionConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, past: KV | None
    ) -> tuple[Tensor, KV]:
        b, t, d = x.shape  # [B, T, D]
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).unbind(2)  # [B, T, H, hd] each
        q = rotate(q.transpose(1, 2), cos, sin)  # [B, H, T, hd]
        k = rotate(k.transpose(1, 2), cos, sin)
        v = v.transpose(1, 2)
        k_all = k if past is None else torch.cat([past[0], k], dim=2)  # [B, H, S + T, hd]
        v_all = v if past is None else torch.cat([past[1], v], dim=2)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, dropout_p=drop)  # [B, H, T, hd]
        return self.proj(y.transpose(1, 2).reshape(b, t, d)), (k, v)


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg: InteractionConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff, bias=False),
            nn.GELU(),
            nn.Linear(cfg.d_ff, cfg.d_model, bias=False),
            nn.Dropout(cfg.dropout),
        )

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, past: KV | None
    ) -> tuple[Tensor, KV]:
        a, kv = self.attn(self.norm1(x), cos, sin, mask, past)
        x = x + a
        return x + self.mlp(self.norm2(x)), kv


class CopyHead(nn.Module):
    """A pointer to a word the model can see: how "say breathe" or a cue's meaning is learned fast.

    Tied embeddings alone can copy (attend to the word, emit its id), but only once an induction-like
    circuit has formed, and until then the copy targets teach next to nothing: the first checkpoint
    trained without this head said "week" for every word after 6.7 M tokens. This head's attention is
    trained directly by *which visible token carries the target id*. A "generate" slot, scored from the
    query alone, hands the rest of the probability to the tied-embedding softmax::

        P(y) = p_generate * softmax(h E^T)(y) + sum over visible word tokens j with id_j = y of p_j

    Keys are the final hidden states of word tokens (not specials), rotary over micro-turn indices, under
    the same window-and-pins mask as the attention, so streaming stays exact.
    """

    def __init__(self, cfg: InteractionConfig) -> None:
        super().__init__()
        self.scale = 1.0 / math.sqrt(cfg.copy_dim)
        self.query = nn.Linear(cfg.d_model, cfg.copy_dim, bias=False)
        self.key = nn.Linear(cfg.d_model, cfg.copy_dim, bias=False)
        self.generate = nn.Linear(cfg.d_model, 1)  # score of the generate slot
        self.rotary = Rotary(cfg.copy_dim, cfg.rope_base)

    def _rotated(self, proj: nn.Linear, h: Tensor, pos: Tensor) -> Tensor:
        cos, sin = self.rotary(pos)  # [B, 1, T, dc / 2]
        return rotate(proj(h)[:, None], cos, sin)[:, 0]  # [B, T, dc]

    def keys(self, h: Tensor, pos: Tensor) -> Tensor:
        """h [B, T, D], pos [B, T] -> copy keys [B, T, dc]."""
        return self._rotated(self.key, h, pos)

    def weights(self, h: Tensor, pos: Tensor, keys: Tensor, key_ids: Tensor, mask: Tensor) -> Tensor:
        """h [B, Tq, D], pos [B, Tq], keys [B, S, dc], key_ids [B, S], mask [B, 1, Tq, S]
        -> [B, Tq, S + 1]: probability of copying each key's token, and (last) of generating."""
        q = self._rotated(self.query, h, pos)  # [B, Tq, dc]
        scores = (q @ keys.transpose(1, 2)) * self.scale  # [B, Tq, S]
        visible = mask[:, 0] & (key_ids >= N_SPECIAL)[:, None, :]
        scores = scores.masked_fill(~visible, float("-inf"))
        return torch.softmax(torch.cat([scores, self.generate(h)], dim=-1), dim=-1)


CopyState = tuple[Tensor, Tensor]  # copy keys [B, S, dc] and token ids [B, S] of earlier tokens


class InteractionNet(nn.Module):
    def __init__(self, cfg: InteractionConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(vocab_size, cfg.d_model)  # tied with the output head
        self.off_emb = nn.Embedding(cfg.max_offset, cfg.d_model)  # order of tokens inside a micro-turn
        self.rotary = Rotary(cfg.head_dim, cfg.rope_base)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.copy = CopyHead(cfg)
        self.apply(self._init)
        # Residual branches scaled down with depth, so the stream starts near the embedding.
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def hidden(
        self,
        tokens: Tensor,
        pos: Tensor,
        offset: Tensor,
        mask: Tensor,
        past: Sequence[KV] | None = None,
    ) -> tuple[Tensor, list[KV]]:
        """tokens/pos/offset [B, T] long, mask [B, 1, T, S + T], past per layer [B, H, S, hd]
        -> final hidden states [B, T, D] and each layer's keys/values of these T tokens."""
        x = self.tok_emb(tokens) + self.off_emb(offset.clamp(max=self.cfg.max_offset - 1))  # [B, T, D]
        cos, sin = self.rotary(pos)
        # One additive mask for all layers: SDPA would convert a boolean one again in every layer.
        bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill_(~mask, float("-inf"))
        new_kv: list[KV] = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cos, sin, bias, None if past is None else past[i])
            new_kv.append(kv)
        return self.norm(x), new_kv

    def logits(self, h: Tensor) -> Tensor:
        """[..., D] -> [..., V] through the tied embedding (the generate part of the output)."""
        return h @ self.tok_emb.weight.t()

    def forward(
        self,
        tokens: Tensor,
        pos: Tensor,
        offset: Tensor,
        mask: Tensor,
        past: Sequence[KV] | None = None,
        past_copy: CopyState | None = None,
    ) -> tuple[Tensor, list[KV], Tensor]:
        """Log-probabilities of the next token at every position [B, T, V], each layer's keys/values of
        these T tokens, and their copy keys [B, T, dc]. ``past``/``past_copy``: the S earlier tokens."""
        h, new_kv = self.hidden(tokens, pos, offset, mask, past)  # [B, T, D]
        ck = self.copy.keys(h, pos)  # [B, T, dc]
        keys, ids = (
            (ck, tokens)
            if past_copy is None
            else (torch.cat([past_copy[0], ck], 1), torch.cat([past_copy[1], tokens], 1))
        )
        p = self.copy.weights(h, pos, keys, ids, mask)  # [B, T, S + T + 1]
        probs = torch.softmax(self.logits(h), dim=-1) * p[..., -1:]  # [B, T, V]
        probs = probs.scatter_add(-1, ids[:, None, :].expand(-1, h.shape[1], -1), p[..., :-1])
        return probs.clamp_min(1e-30).log(), new_kv, ck


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ----------------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(
    path: Path, net: InteractionNet, vocab: Vocab, meta: dict[str, Any] | None = None, fp16: bool = True
) -> None:
    """Weights (fp16 by default: a few MB), config, special tokens, known words and a metadata dict, in
    one file."""
    state = {
        k: (v.half() if fp16 and v.is_floating_point() else v).cpu() for k, v in net.state_dict().items()
    }
    blob = {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(net.cfg),
        "special_tokens": list(vocab.specials),
        "known_words": vocab.known_words,
        "state_dict": state,
        "meta": meta or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(blob, tmp)
    tmp.replace(path)  # readers never see half a file


def load_checkpoint(path: Path, device: str = "cpu") -> tuple[InteractionNet, Vocab, dict[str, Any]]:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {blob.get('format')}, expected {CHECKPOINT_FORMAT}")
    cfg = InteractionConfig.from_dict(blob["config"])
    # The ids are laid out with the special tokens the weights were trained with: those saved with them,
    # or for a checkpoint saved before they were (data version 1), the version 1 list.
    vocab = Vocab(blob["known_words"], cfg.n_buckets, blob.get("special_tokens", SPECIAL_TOKENS_V1))
    net = InteractionNet(cfg, vocab.size)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    return net.to(device).eval(), vocab, cast(dict[str, Any], blob["meta"])


# ----------------------------------------------------------------------------------------------------
# Streaming


@dataclass
class StepTiming:
    """What the last :meth:`TickModel.step` cost, for logs."""

    ms: float = 0.0  # wall time of the whole step
    forwards: int = 0  # batched network calls (1 per step, plus one per said word)
    sessions: int = 0
    tokens: int = 0  # tokens fed to the network, all sessions
    max_cache: int = 0  # largest per-session KV length seen in this step, in tokens


# Rows of a new CachePool: the CPU runtime steps a few sessions; a GPU's pool doubles up to its load.
POOL_ROWS = 8


def _grown(buf: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``buf`` copied into the leading corner of a zero tensor of ``shape`` (each dim at least as large)."""
    out = buf.new_zeros(shape)
    out[tuple(slice(0, n) for n in buf.shape)] = buf
    return out


class CachePool:
    """The KV caches of all of a :class:`TickModel`'s sessions: one set of preallocated buffers, a row
    (slot) per session.

    Why: with a buffer per session, a batched forward cost O(B) small tensor ops (each cache copied into
    a padded batch, each session's new keys written back, its token fields built one by one), and that
    Python and kernel-launch overhead, not the network, set the price of a step: ~0.7 ms a session on an
    H200 whatever the model size. With every cache in the same buffers, a forward gathers its batch with
    one ``index_select`` per buffer and writes all new tokens with one indexed assignment per buffer.

    A row holds its session's cache in stream order at [0, length) (the session keeps ``length``);
    what lies beyond is stale (a previous occupant's, or evicted) and the reader masks it out. A freed
    row goes to the next new session; when none is free the rows double. A micro-turn longer than a
    row's slack (pasted text) grows ``capacity``, the tokens a row holds, for every row.
    """

    def __init__(self, cfg: InteractionConfig, n_buckets: int, device: torch.device) -> None:
        self.cfg = cfg
        self.rows = 0
        self.capacity = cfg.cache_bound + CACHE_SLACK
        self._free: list[int] = []  # a heap: the lowest free row first, so the rows in use stay dense
        c = self.capacity
        # All buffers start with no rows and grow to POOL_ROWS below. Keys are stored rotated.
        # [L, P, H, C, hd]
        self.k = torch.zeros((cfg.n_layers, 0, cfg.n_heads, c, cfg.head_dim), device=device)
        self.v = torch.zeros_like(self.k)
        self.ck = torch.zeros((0, c, cfg.copy_dim), device=device)  # [P, C, dc] copy-head keys
        self.ids = torch.zeros((0, c), dtype=torch.long, device=device)  # [P, C] token ids
        self.gidx = torch.zeros_like(self.ids)  # stream index, ascending along a row's [0, length)
        self.pos = torch.zeros_like(self.ids)  # micro-turn index, for SessionStream.pin
        self.pinned = torch.zeros((0, c), dtype=torch.int8, device=device)  # pin class
        self.seen = torch.zeros((0, n_buckets), dtype=torch.bool, device=device)  # buckets a session heard
        self._resize(POOL_ROWS, c)

    def acquire(self) -> int:
        """A free row for a new session (its ``seen`` cleared; its stale tokens lie beyond length 0)."""
        if not self._free:
            self._resize(2 * self.rows, self.capacity)
        row = heapq.heappop(self._free)
        self.seen[row] = False
        return row

    def release(self, row: int) -> None:
        heapq.heappush(self._free, row)

    def fit(self, tokens: int) -> None:
        """Make every row hold at least ``tokens`` tokens (and some slack)."""
        if tokens > self.capacity:
            self._resize(self.rows, tokens + CACHE_SLACK)

    def _resize(self, rows: int, capacity: int) -> None:
        cfg = self.cfg
        kv = (cfg.n_layers, rows, cfg.n_heads, capacity, cfg.head_dim)
        # One buffer at a time, so that at most one old buffer is alive beside the new ones.
        self.k = _grown(self.k, kv)
        self.v = _grown(self.v, kv)
        self.ck = _grown(self.ck, (rows, capacity, cfg.copy_dim))
        self.ids = _grown(self.ids, (rows, capacity))
        self.gidx = _grown(self.gidx, (rows, capacity))
        self.pos = _grown(self.pos, (rows, capacity))
        self.pinned = _grown(self.pinned, (rows, capacity))
        self.seen = _grown(self.seen, (rows, self.seen.shape[1]))
        for row in range(self.rows, rows):
            heapq.heappush(self._free, row)
        self.rows, self.capacity = rows, capacity


class SessionStream:
    """One session's state: its token stream, its bounded KV cache (a row of the model's
    :class:`CachePool`), what it heard in each bucket.

    The cache is written in place; tokens no future query can reach are dropped only when the row is
    full, every few dozen micro-turns, rather than copied out every step. Holding a few unreachable tokens
    a little longer changes nothing: the attention mask, not the cache, decides what is seen.
    :meth:`close` hands the row to the next session (garbage collection does too, if close is never called).
    """

    def __init__(self, pool: CachePool, vocab: Vocab) -> None:
        self.cfg = pool.cfg
        self.pool = pool
        self.stream = TokenStream(vocab, pool.cfg)
        self.slot = pool.acquire()  # this session's row of the pool; -1 once closed
        self.length = 0  # tokens in the cache
        # The finalizer holds the pool and the row, not the session, so that collecting it frees the row.
        self._release = weakref.finalize(self, pool.release, self.slot)
        # Tokens pushed but not yet through the network: a quiet tick's action (and a <say>'s <end>) wait
        # here to be fed with the next micro-turn's input, so a quiet tick costs one forward.
        self.pending: list[Token] = []
        self.ticks = 0  # micro-turns stepped

    def close(self) -> None:
        """Give the cache row back to the pool; the session cannot be stepped any more."""
        self._release()
        self.slot = -1

    # Views of the filled part of the session's row: [L, H, S, hd] and [S].
    @property
    def k(self) -> Tensor:
        return self.pool.k[:, self.slot, :, : self.length]

    @property
    def v(self) -> Tensor:
        return self.pool.v[:, self.slot, :, : self.length]

    @property
    def copy_keys(self) -> Tensor:
        return self.pool.ck[self.slot, : self.length]

    @property
    def ids(self) -> Tensor:
        return self.pool.ids[self.slot, : self.length]

    @property
    def gidx(self) -> Tensor:
        return self.pool.gidx[self.slot, : self.length]

    @property
    def pinned(self) -> Tensor:
        return self.pool.pinned[self.slot, : self.length]

    @property
    def pos(self) -> Tensor:
        return self.pool.pos[self.slot, : self.length]

    @property
    def bucket_seen(self) -> Tensor:
        """[n_buckets] bool: buckets an input word of this session fell into (written as it is fed)."""
        return self.pool.seen[self.slot]

    @property
    def cache_len(self) -> int:
        return self.length

    @property
    def capacity(self) -> int:
        return self.pool.capacity

    @property
    def bucket_words(self) -> dict[int, str]:
        return self.stream.bucket_words

    def push(self, token: str) -> Token:
        """Append a token to the stream; it waits in ``pending`` until the next :meth:`TickModel.feed`."""
        tok, pins = self.stream.push(token)
        self.pending.append(tok)
        self._pin_gidx(pins.kind, [g for g in pins.gidx if g != tok.gidx])
        return tok

    def _pin_gidx(self, kind: int, gidxs: Sequence[int]) -> None:
        if not gidxs:
            return
        for tok in self.pending:
            if tok.gidx in gidxs:
                tok.pinned = kind
        if self.length:
            wanted = torch.as_tensor(gidxs, dtype=torch.long, device=self.pool.gidx.device)
            self.pinned[torch.isin(self.gidx, wanted)] = kind

    def pin(self, ticks: int = 1) -> None:
        """Keep every token of the last ``ticks`` micro-turns beyond the window: the runtime's way to say
        "that was an instruction" when the pin words missed it. Beyond training's rule, so use sparingly."""
        first = self.stream.tick - ticks + 1
        for tok in self.pending:
            if tok.pos >= first:
                tok.pinned = INSTRUCTION_PIN
        self.pinned[self.pos >= first] = INSTRUCTION_PIN

    def _evict(self, last: int) -> None:
        """Drop what no query after stream index ``last`` can attend to: those see keys newer than
        last + 1 - window, and of each pin class the newest pinned keys older than that, up to the class's
        budget (their pin flags are final by then: see Pinner)."""
        in_window = self.gidx > last - self.cfg.window
        kept = in_window
        for kind, budget in enumerate(self.cfg.pin_budgets, start=INSTRUCTION_PIN):
            old_pinned = (self.pinned == kind) & ~in_window
            n_old = int(old_pinned.sum())
            if n_old > budget:
                rank = old_pinned.long().cumsum(0)  # the oldest pinned key of the class has rank 1
                old_pinned &= rank > n_old - budget
            kept = kept | old_pinned
        keep = kept.nonzero().squeeze(1)  # [kept], ascending
        m = int(keep.numel())
        pool, row = self.pool, self.slot
        for kv in (pool.k[:, row], pool.v[:, row]):  # [L, H, C, hd] views of the row
            kv[:, :, :m] = kv[:, :, keep]
        for buf in (pool.ck, pool.ids, pool.gidx, pool.pinned, pool.pos):
            buf[row, :m] = buf[row, keep]
        self.length = m


class TickModel:
    """The interaction network behind the runtime: per-session streams, stepped in batches."""

    def __init__(
        self, net: InteractionNet, vocab: Vocab, device: str = "cpu", meta: dict[str, Any] | None = None
    ) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.cfg = net.cfg
        self.vocab = vocab
        self.meta = meta or {}
        self.timing = StepTiming()
        self._act_mask = vocab.act_mask().to(self.device)  # [V]
        self._word_mask = vocab.word_mask()[: vocab.bucket_base].to(self.device)  # [bucket_base]
        self._act_by_id = {i: a for a, i in vocab.act_ids.items()}
        self.pool = CachePool(self.cfg, vocab.n_buckets, self.device)  # every session's KV cache

    @classmethod
    def load(cls, path: Path | None = None, device: str = "cpu", warmup: bool = True) -> TickModel:
        """Load a checkpoint (default: the committed model/checkpoints/microturn.pt); ``device="auto"``
        picks CUDA when present. Warm-up runs a throw-away session so that the first real tick is fast."""
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        net, vocab, meta = load_checkpoint(path or DEFAULT_CHECKPOINT, device)
        model = cls(net, vocab, device, meta)
        if warmup:
            model.warmup()
        return model

    def new_session(self) -> SessionStream:
        return SessionStream(self.pool, self.vocab)

    def warmup(self, ticks: int = 8, sessions: int = 2) -> None:
        """Step throw-away sessions (words, a said word, silence) through every code path once."""
        streams = [self.new_session() for _ in range(sessions)]
        for i in range(ticks):
            words = ("hello", "there") if i % 3 == 0 else ()
            self.step(streams, [TickInput(user_speaking=bool(words), tokens=words)] * sessions)
        self.timing = StepTiming()

    @torch.no_grad()
    def feed(self, sessions: Sequence[SessionStream]) -> list[Tensor]:
        """Run one batched forward over each session's pending tokens; return the log-probabilities of
        the next token after each of them ([n_b, V] per session)."""
        logp, _, _, counts = self._forward(sessions)
        return [logp[i, :m] for i, m in enumerate(counts)]

    @torch.no_grad()
    def _forward(self, sessions: Sequence[SessionStream]) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        """:meth:`feed`, batch-shaped and with O(1) tensor ops whatever the batch size: the
        log-probabilities after every fed token [B, N, V] (right-padded), those after each session's last
        token [B, V], the sessions' pool rows [B], and how many tokens each session fed.

        The keys of a batch row are the session's cache (its pool row, gathered) and then its new tokens::

            [ cache_b | stale .. | new_b | pad .. ]    gidx: ascending | first new | ascending | +FAR_GIDX ..

        :func:`attention_mask` needs every row's gidx ascending (it binary-searches the window's edge), so
        the stale tail of a shorter cache takes the gidx of its row's first new token, is never pinned (so
        it adds no pins to count) and is masked out explicitly. Cheaper than left-aligning each row with a
        shifted gather, and one session (or equal cache lengths) needs neither.
        """
        chunks = [s.pending for s in sessions]
        if not all(chunks):
            raise ValueError("every session fed needs at least one pending token")
        if min(s.slot for s in sessions) < 0:
            raise ValueError("a closed session cannot be stepped")
        pool, cfg, dev = self.pool, self.cfg, self.device
        # Room for the new tokens. Rarely (every few dozen micro-turns) a full row drops what neither these
        # tokens nor later ones can reach; a micro-turn longer than a row's slack then grows every row.
        for s, chunk in zip(sessions, chunks, strict=True):
            if s.length + len(chunk) > pool.capacity:
                s._evict(chunk[0].gidx - 1)
        pool.fit(max(s.length + len(c) for s, c in zip(sessions, chunks, strict=True)))
        slots, lens, counts = [s.slot for s in sessions], [s.length for s in sessions], list(map(len, chunks))
        b, n, s_max = len(sessions), max(counts), max(lens)
        # Everything this forward needs from the host, built in Python and sent as one tensor.
        fields: list[int] = []  # [B, N, 5]: id, pos, offset, gidx, pinned of each token, right-padded
        writes: list[int] = []  # [T, 4]: pool row, column, batch row, index in the row of each new token
        heard: list[int] = []  # [K, 2]: pool row, bucket of each input word that fell into a bucket
        vocab = self.vocab
        for i, (s, chunk) in enumerate(zip(sessions, chunks, strict=True)):
            for j, t in enumerate(chunk):
                fields += (t.id, t.pos, t.offset, t.gidx, t.pinned)
                writes += (s.slot, s.length + j, i, j)
                if vocab.is_bucket(t.id) and not t.output:
                    heard += (s.slot, t.id - vocab.bucket_base)
            for j in range(len(chunk), n):  # padding: far after every real token, so no query sees it
                fields += (vocab.pad_id, 0, 0, FAR_GIDX + j, NOT_PINNED)
        packed = torch.tensor([*fields, *writes, *heard, *slots, *lens, *counts], dtype=torch.long).to(dev)
        tok, wr, hb, rows, lens_t, counts_t = packed.split([5 * b * n, len(writes), len(heard), b, b, b])
        tokens, pos, offset, q_gidx, new_pinned = tok.view(b, n, 5).unbind(-1)  # [B, N] each
        w_row, w_col, w_b, w_j = wr.view(-1, 4).unbind(-1)  # [T] each

        # Sessions in the order of their rows, without gaps (one session; a runtime stepping every session
        # it opened): the batch is a view of the pool, no copy.
        dense = slots == list(range(slots[0], slots[0] + b))

        def gather(buf: Tensor, row_dim: int, col_dim: int) -> Tensor:
            """The batch's rows of a pool buffer, their first s_max tokens. Whole rows are gathered, then
            cut: index_select from a strided view copies several times more slowly (on CPU)."""
            buf = buf.narrow(row_dim, slots[0], b) if dense else buf.index_select(row_dim, rows)
            return buf.narrow(col_dim, 0, s_max)

        past_k, past_v = gather(pool.k, 1, 3), gather(pool.v, 1, 3)  # [L, B, H, S, hd]
        past_ck, k_ids = gather(pool.ck, 0, 1), gather(pool.ids, 0, 1)  # [B, S, dc], [B, S]
        k_gidx, k_pinned = gather(pool.gidx, 0, 1), gather(pool.pinned, 0, 1)  # [B, S]
        # Stale ids need no masking: the mask gives their keys probability 0, so they are never copied.
        valid = None
        if min(lens) < s_max:
            valid = torch.arange(s_max, device=dev) < lens_t[:, None]  # [B, S]
            k_gidx = torch.where(valid, k_gidx, q_gidx[:, :1])
            k_pinned = k_pinned.masked_fill(~valid, NOT_PINNED)
        mask = attention_mask(
            q_gidx,
            torch.cat([k_gidx, q_gidx], dim=1),
            torch.cat([k_pinned, new_pinned.to(k_pinned.dtype)], dim=1),
            cfg.window,
            cfg.pin_budgets,
        )  # [B, 1, N, S + N]
        if valid is not None:
            mask = mask & torch.cat([valid, valid.new_ones((b, n))], dim=1)[:, None, None, :]
        past = [(past_k[layer], past_v[layer]) for layer in range(cfg.n_layers)]
        logp, new_kv, ck = self.net(tokens, pos, offset, mask, past, (past_ck, k_ids))  # [B, N, V]
        new_k = torch.stack([kv[0] for kv in new_kv])  # [L, B, H, N, hd]
        new_v = torch.stack([kv[1] for kv in new_kv])
        pool.k[:, w_row, :, w_col] = new_k[:, w_b, :, w_j]  # [T, L, H, hd] on both sides
        pool.v[:, w_row, :, w_col] = new_v[:, w_b, :, w_j]
        pool.ck[w_row, w_col] = ck[w_b, w_j]  # [T, dc]
        meta = ((pool.ids, tokens), (pool.pos, pos), (pool.gidx, q_gidx), (pool.pinned, new_pinned))
        for buf, field in meta:
            buf[w_row, w_col] = field[w_b, w_j].to(buf.dtype)  # [T]
        if heard:
            h_row, h_bucket = hb.view(-1, 2).unbind(-1)
            pool.seen[h_row, h_bucket] = True
        for s, m in zip(sessions, counts, strict=True):
            s.length += m
            s.pending = []
        self.timing.max_cache = max(self.timing.max_cache, *(s.length for s in sessions))
        self.timing.forwards += 1
        self.timing.tokens += sum(counts)
        last = logp[torch.arange(b, device=dev), counts_t - 1]  # [B, V]
        return logp, last, rows, counts

    def _choose(self, last: Tensor, rows: Tensor, n_words: int) -> list[int]:
        """Greedy next output token of each session (from the log-probabilities after its last fed token,
        [B, V]; ``rows``: the sessions' pool rows) among those that make sense here: an action right after
        <act>; then words the session can say (known words, buckets it heard a word in), and <end> once
        there is a word. One batched argmax."""
        if n_words < 0:
            allowed = self._act_mask.expand_as(last)
        else:
            seen = self.pool.seen.index_select(0, rows)  # [B, n_buckets]
            allowed = torch.cat([self._word_mask.expand(len(rows), -1), seen], dim=1)  # [B, V]
            if n_words > 0:
                allowed[:, self.vocab.end_id] = True
        return cast(list[int], last.masked_fill(~allowed, float("-inf")).argmax(-1).tolist())

    @torch.no_grad()
    def step(self, sessions: Sequence[SessionStream], inputs: Sequence[TickInput]) -> list[TickOutput]:
        """One micro-turn for each session: feed its input, decide, and feed back what it decided."""
        if len(sessions) != len(inputs):
            raise ValueError(f"{len(sessions)} sessions but {len(inputs)} inputs")
        if len({id(s) for s in sessions}) != len(sessions):
            raise ValueError("a session appears twice in one step")
        started = time.perf_counter()
        self.timing = StepTiming(sessions=len(sessions))
        if not sessions:
            return []
        for s, tick_input in zip(sessions, inputs, strict=True):
            for t in tick_input.to_tokens():
                s.push(t)
        acts: list[Act] = [Act.WAIT] * len(sessions)
        words: list[list[str]] = [[] for _ in sessions]
        active = list(range(len(sessions)))  # sessions still writing their output
        n_words = -1  # -1: the action comes next; then words said so far (the same for all active)
        while active:
            _, last, rows, _ = self._forward([sessions[i] for i in active])
            choices = self._choose(last, rows, n_words)
            still: list[int] = []
            for i, choice in zip(active, choices, strict=True):
                s = sessions[i]
                if n_words < 0:
                    acts[i] = self._act_by_id[choice]
                    s.push(acts[i].value)
                    if acts[i] is Act.SAY:
                        still.append(i)
                    continue  # any other action waits in pending: fed with the next micro-turn
                if choice == self.vocab.end_id:
                    s.push(END)
                    continue
                words[i].append(s.stream.word(choice) or "")
                s.push(words[i][-1])
                if len(words[i]) == MAX_SAY_WORDS:
                    s.push(END)  # no room for more: <end> needs no forward
                else:
                    still.append(i)
            active = still
            n_words += 1
        for s in sessions:
            s.ticks += 1
        self.timing.ms = (time.perf_counter() - started) * 1000.0
        return [TickOutput(a, tuple(w)) for a, w in zip(acts, words, strict=True)]
