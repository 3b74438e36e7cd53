"""The lexicon annotator, its train/benchmark split, and teaching the recogniser foreign words."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from model.asr import StreamingRecognizer, strip_taught_marks
from model.lexicon import (
    BENCH_CATEGORY_WORDS,
    BENCH_ENTRIES,
    BENCH_WORDS,
    CATEGORY_WORDS,
    FOREIGN_ENTRIES,
    TRAIN_CATEGORY_WORDS,
    TRAIN_ENTRIES,
    UNSPLIT_CATEGORIES,
    Lexicon,
    english_words,
    is_bench,
    number_words,
    pronunciation,
    recogniser_words,
    spoken_words,
)
from model.ticks import CATEGORIES, MEANS, category_token

from .conftest import silence, speech

needs_flite = pytest.mark.skipif(shutil.which("t2p") is None, reason="flite is not installed")


def test_annotations_follow_the_ticks_contract() -> None:
    lexicon = Lexicon()
    assert lexicon.annotate(["rojo", "y", "red"]) == ("rojo", MEANS, "red", "y", "red", "<cat:colour>")
    assert lexicon.annotations("orange") == (category_token("colour"), category_token("fruit"))
    assert lexicon.annotations("perro") == (MEANS, "dog")
    assert lexicon.annotations("chien") == (), "left out: flite says it like \"chen\""
    assert lexicon.annotations("table") == ()
    assert lexicon.meaning("fromage") == "cheese"
    assert lexicon.categories("thursday") == ("day",)


def test_the_lexicon_is_large_and_covers_every_category() -> None:
    assert len(FOREIGN_ENTRIES) >= 300
    assert {e.language for e in FOREIGN_ENTRIES} == {"spanish", "french"}
    assert set(CATEGORY_WORDS) == set(CATEGORIES)
    words = [e.word for e in FOREIGN_ENTRIES]
    assert len(words) == len(set(words)), "one entry per foreign word"
    for entry in FOREIGN_ENTRIES:
        assert entry.word.isascii() and entry.word.isalpha() and entry.word.islower(), entry
        assert len(entry.meaning.split()) == 1, entry


def test_train_and_bench_parts_are_disjoint_and_deterministic() -> None:
    assert TRAIN_ENTRIES and BENCH_ENTRIES
    assert set(TRAIN_ENTRIES).isdisjoint(BENCH_ENTRIES)
    assert set(TRAIN_ENTRIES) | set(BENCH_ENTRIES) == set(FOREIGN_ENTRIES)
    assert 0.15 < len(BENCH_ENTRIES) / len(FOREIGN_ENTRIES) < 0.35
    assert all(is_bench(e.word) for e in BENCH_ENTRIES) and not any(is_bench(e.word) for e in TRAIN_ENTRIES)
    for category in CATEGORIES:
        train = set(TRAIN_CATEGORY_WORDS.get(category, ()))
        bench = set(BENCH_CATEGORY_WORDS.get(category, ()))
        assert train.isdisjoint(bench), category
        if category not in UNSPLIT_CATEGORIES:
            assert bench, f"benchmark cue words for {category}"
            assert train | bench == set(CATEGORY_WORDS[category])
    assert BENCH_WORDS.isdisjoint(e.word for e in TRAIN_ENTRIES)
    # The split is by a fixed hash, not by position: these never move.
    assert is_bench("gato") is is_bench("gato")


def test_foreign_words_are_not_english_words() -> None:
    english = set(english_words())
    assert len(english) > 10_000
    assert english.isdisjoint(e.word for e in FOREIGN_ENTRIES)
    assert {"the", "every", "seconds", "breathe"} <= english


def test_text_is_spelled_as_the_recogniser_would() -> None:
    assert spoken_words("Every 2 seconds, say \"hop\"!") == ["every", "two", "seconds", "say", "hop"]
    assert " ".join(spoken_words("12 times 13 is 156.")) == "twelve times thirteen is one hundred fifty six"
    assert spoken_words("That's 2.5 kg") == ["that's", "two", "point", "five", "kg"]
    assert number_words(0) == "zero"
    assert number_words(45) == "forty five"
    assert number_words(1_002_003) == "one million two thousand three"


@needs_flite
def test_pronunciations_come_from_flite_in_cmu_phones() -> None:
    assert pronunciation("gato") == "G EY T OW"
    words = recogniser_words()
    assert len(words) >= 0.95 * len(FOREIGN_ENTRIES)
    phones = {p for pron in words.values() for p in pron.split()}
    cmu = "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y"
    cmu += " Z ZH"
    assert phones <= set(cmu.split())


def test_taught_marks_are_stripped() -> None:
    assert strip_taught_marks("the verde_ car") == "the verde car"
    assert strip_taught_marks("verde_") == "verde"


@needs_flite
def test_flite_spoken_foreign_words_in_english_sentences_are_recognised() -> None:
    """A quick check of the recogniser hook (``python -m model.lexicon check`` measures all words)."""
    recognizer = StreamingRecognizer(extra_words=recogniser_words())
    plain = StreamingRecognizer()
    sentences = {
        "fromage": "we ate fromage yesterday",
        "manzana": "she bought a manzana for lunch",
        "mariposa": "there was a mariposa in the garden",
    }
    heard = 0
    for word, sentence in sentences.items():
        pcm = np.concatenate([silence(0.2), speech(sentence), silence(0.2)])
        recognizer.start()
        recognizer.accept(pcm)
        heard += word in recognizer.finish().split()
        plain.start()
        plain.accept(pcm)
        assert word not in plain.finish().split(), "the untaught recogniser cannot know it"
    assert heard >= 2, heard
