"""Streaming speech recognition with pocketsphinx 5 and its bundled US English model.

A :class:`StreamingRecognizer` decodes one utterance at a time: the policy starts it when speech begins
(feeding the audio it kept from just before the onset), feeds each micro-turn and reads the partial
hypothesis back, and finishes it when the user stops. :class:`RecognizerPool` is the batch-shaped front the
model worker calls once per tick with the chunks of all sessions that are inside an utterance; a
GPU-batched recogniser can replace it behind the same four calls.

Tuning (``python -m bench.asr_bench``: 16 flite requests x 4 voices in faint room noise, pocketsphinx's
defaults vs :data:`FAST_DECODER_CONFIG`). Most of the cost per chunk is a floor -- acoustic scoring and
re-entering the lexicon tree every frame, ~10 ms per 200 ms even on silence -- that no search setting
removes; what the settings can remove is the tail. On unclear audio the default search lets the active HMMs
explode (its slowest chunks took 150-220 ms of CPU, a whole micro-turn), and its second, flat-lexicon pass
costs 60 ms at finish() on clean speech and 160 ms in noise, stalling every session's tick. Capping active
HMMs (``maxhmmpf``) and word exits (``maxwpf``) per frame and skipping that pass cut the p95 per chunk by
~45 %, the worst chunk by ~80 % and finish() to under 10 ms, for about one point of word accuracy on
wideband voices. Scoring fewer Gaussians (``topn`` 2 or 3), narrower beams (``beam``, ``pbeam``,
``wbeam``) and frame downsampling (``ds``) saved 1-3 ms a chunk but cost several points each; the phone-loop
lookahead (``pl_window``) is fastest at its default. Capping HMMs at 3000 instead of 5000 was cheaper but
lost words on the narrowband (8 kHz) voice.

pocketsphinx holds the GIL while it decodes (its extension never calls ``PyEval_SaveThread``; two threads
decode no faster than one), so the pool decodes sessions one after the other on the calling thread:
threads would only add switching.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeAlias

import numpy as np
from pocketsphinx import Decoder

from service.microturn import PcmArray

DecoderConfig: TypeAlias = Mapping[str, str | int | float | bool]

# Overrides of pocketsphinx's defaults, measured on flite speech (see the module docstring).
FAST_DECODER_CONFIG: DecoderConfig = {
    "maxhmmpf": 5000,  # active HMMs per frame (default 30000): bounds the worst-case cost per chunk
    "maxwpf": 10,  # distinct word exits per frame (default unlimited): keeps the lattice small
    "fwdflat": False,  # no second pass at finish() (default on): ~60-160 ms once per utterance saved
}
# pocketsphinx logs every utterance at INFO and model quirks at WARN to stderr; errors still show.
QUIET_LOGGING: DecoderConfig = {"loglevel": "ERROR"}
# Unigram probability of a word taught with ``extra_words``, relative to a uniform one (1 / vocabulary size,
# log10 -4.9 for the 72k-word en-us LM). Measured with 150 of model/lexicon.py's foreign words, each
# spoken by flite slt inside an English sentence: weight 1 recognised 62, 10: 88, 30: 99 (and 555 of 848
# for all 424 candidate words in two sentences each), with no taught word appearing in 8 plain English
# sentences at 1-30, and 2 homophones ("sel", "soupe", since left out of the lexicon) in 24 at 30.
EXTRA_WORD_WEIGHT = 30.0


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation: how pocketsphinx spells its hypotheses."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_accuracy(reference: str, hypothesis: str) -> float:
    """1 - word error rate: word-level edit distance over the reference length (negative when the
    hypothesis inserts more words than the reference has)."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return 1.0 if not hyp else 0.0
    # distances[j]: edits turning the first i reference words into the first j hypothesis words
    distances = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        diagonal, distances[0] = distances[0], i
        for j, hyp_word in enumerate(hyp, start=1):
            substitution = diagonal + (ref_word != hyp_word)
            diagonal = distances[j]
            distances[j] = min(distances[j] + 1, distances[j - 1] + 1, substitution)
    return 1.0 - distances[-1] / len(ref)


def _pcm_bytes(pcm: PcmArray) -> bytes:
    if pcm.dtype != np.int16 or pcm.ndim != 1:
        raise TypeError(f"expected 1-D int16 audio, got {pcm.dtype} {pcm.shape}")
    # pocketsphinx reads little-endian 16-bit samples (its input_endian default).
    return pcm.astype("<i2", copy=False).tobytes()


# Suffix of the dictionary entry of a taught word that the dictionary already has; stripped from hypotheses.
TAUGHT_MARK = "_"


def teach_words(decoder: Decoder, words: Mapping[str, str], weight: float = EXTRA_WORD_WEIGHT) -> None:
    """Add ``words`` (word -> space-separated CMU phones, e.g. ``{"gato": "G EY T OW"}``) to the decoder's
    dictionary and language model.

    Each word enters the LM as a unigram of ``weight`` times the uniform probability: with no n-gram
    context it is recognised from its sound and that prior alone. A word the dictionary already has (many
    foreign words are there as rare names: "verde", "mesa") would keep its own, usually far lower, LM
    probability -- pocketsphinx neither redefines nor reweights a word -- so it is added a second time,
    spelled with :data:`TAUGHT_MARK`, which :func:`strip_taught_marks` removes from hypotheses.
    """
    lm = decoder.get_lm()
    entries = [
        (word if decoder.lookup_word(word) is None else f"{word}{TAUGHT_MARK}", phones)
        for word, phones in words.items()
    ]
    for entry, _ in entries:
        # Entered into the LM first, at our weight: ps_add_word keeps an LM word that is already there.
        lm.add_word(entry, weight)
    for i, (entry, phones) in enumerate(entries):
        # Rebuilding the search once, after the last word, instead of after each.
        decoder.add_word(entry, phones, update=i == len(entries) - 1)


def strip_taught_marks(hypothesis: str) -> str:
    return hypothesis.replace(f"{TAUGHT_MARK} ", " ").removesuffix(TAUGHT_MARK)


class StreamingRecognizer:
    """Recognises one utterance at a time from 16 kHz mono int16 audio fed in chunks.

    Building one loads the acoustic model, the 135k-word dictionary and the trigram LM: about 0.3 s of CPU
    and 90 MiB of private memory, so build them ahead of need and reuse them (see :class:`RecognizerPool`).
    The live cepstral mean carries over between utterances, so later utterances of the same speaker start
    already adapted to their voice and microphone.
    """

    def __init__(
        self, decoder_config: DecoderConfig | None = None, extra_words: Mapping[str, str] | None = None
    ) -> None:
        """``decoder_config`` overrides pocketsphinx options on top of :data:`FAST_DECODER_CONFIG`;
        ``extra_words`` teaches the recogniser more words (see :func:`teach_words`)."""
        options = {**QUIET_LOGGING, **FAST_DECODER_CONFIG, **(decoder_config or {})}
        self._decoder = Decoder(**options)
        self._taught = bool(extra_words)
        if extra_words:
            teach_words(self._decoder, extra_words)
        self._active = False

    @property
    def active(self) -> bool:
        """True between :meth:`start` and :meth:`finish`: inside an utterance."""
        return self._active

    def start(self, preroll: PcmArray | None = None) -> None:
        """Begin an utterance, decoding ``preroll`` first: the audio from just before speech was detected,
        which holds the word onset that the detector's delay would otherwise cut off."""
        if self._active:
            raise RuntimeError("an utterance is already active; finish() it first")
        self._decoder.start_utt()
        self._active = True
        if preroll is not None:
            self.accept(preroll)

    def accept(self, pcm: PcmArray) -> str:
        """Decode more audio of the current utterance; return the partial hypothesis ("" if none yet)."""
        if not self._active:
            raise RuntimeError("no active utterance; start() one first")
        data = _pcm_bytes(pcm)
        if data:  # pocketsphinx rejects an empty buffer
            self._decoder.process_raw(data)
        return self._hypothesis()

    def finish(self) -> str:
        """End the utterance and return the final hypothesis; the recogniser is idle afterwards.

        The final text is the best path through the whole utterance's word lattice, rescored with the
        trigram LM, so it can differ from the last partial.
        """
        if not self._active:
            raise RuntimeError("no active utterance; start() one first")
        self._active = False
        self._decoder.end_utt()
        return self._hypothesis()

    def _hypothesis(self) -> str:
        hyp = self._decoder.hyp()
        if hyp is None:
            return ""
        return strip_taught_marks(hyp.hypstr) if self._taught else hyp.hypstr

    def reset(self) -> None:
        """Abandon any utterance and forget the speaker adaptation, ready to serve a new session."""
        if self._active:
            self._active = False
            self._decoder.end_utt()
        self._decoder.set_cmn(self._decoder.config["cmninit"])


class RecognizerPool:
    """Per-session streaming recognisers behind a batch-shaped interface.

    A session gets a recogniser at its first :meth:`start`; :meth:`close` returns it to a small set of
    spares (at most ``max_spares``, each 90 MiB) that new sessions take before anything is built, because
    building one stalls the calling thread for ~0.3 s -- more than a micro-turn. :meth:`warmup` fills the
    spares ahead of the first sessions.
    """

    def __init__(
        self,
        decoder_config: DecoderConfig | None = None,
        max_spares: int = 2,
        extra_words: Mapping[str, str] | None = None,
    ) -> None:
        if max_spares < 0:
            raise ValueError(f"max_spares must be >= 0, got {max_spares}")
        self._decoder_config = dict(decoder_config or {})
        self._extra_words = dict(extra_words or {})
        self._max_spares = max_spares
        self._sessions: dict[str, StreamingRecognizer] = {}
        self._spares: list[StreamingRecognizer] = []

    def warmup(self, count: int = 1) -> None:
        """Build spare recognisers until ``count`` (at most ``max_spares``) are ready."""
        while len(self._spares) < min(count, self._max_spares):
            self._spares.append(self._build())

    def _build(self) -> StreamingRecognizer:
        return StreamingRecognizer(self._decoder_config, self._extra_words)

    def is_active(self, session_id: str) -> bool:
        """True while ``session_id`` is inside an utterance."""
        recognizer = self._sessions.get(session_id)
        return recognizer is not None and recognizer.active

    def start(self, session_id: str, preroll: PcmArray | None = None) -> None:
        """Begin an utterance for ``session_id`` (see :meth:`StreamingRecognizer.start`)."""
        recognizer = self._sessions.get(session_id)
        if recognizer is None:
            recognizer = self._spares.pop() if self._spares else self._build()
            self._sessions[session_id] = recognizer
        recognizer.start(preroll)

    def accept_batch(self, chunks: Mapping[str, PcmArray]) -> dict[str, str]:
        """Feed one chunk to each listed session's active utterance; return each one's partial hypothesis."""
        inactive = [sid for sid in chunks if not self.is_active(sid)]
        if inactive:
            raise RuntimeError(f"no active utterance for sessions {inactive}; start() them first")
        return {sid: self._sessions[sid].accept(pcm) for sid, pcm in chunks.items()}

    def finish(self, session_id: str) -> str:
        """End ``session_id``'s utterance and return its final hypothesis."""
        if not self.is_active(session_id):
            raise RuntimeError(f"no active utterance for session {session_id!r}")
        return self._sessions[session_id].finish()

    def close(self, session_id: str) -> None:
        """Release ``session_id``'s recogniser (abandoning any utterance); unknown ids are ignored."""
        recognizer = self._sessions.pop(session_id, None)
        if recognizer is not None and len(self._spares) < self._max_spares:
            recognizer.reset()
            self._spares.append(recognizer)
