"""The background model's tools: calculator (and spoken arithmetic), clock and timers, document search."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from model.tools import (
    DOCS_ENV,
    MAX_EXPRESSION_CHARS,
    MAX_TIMER_S,
    PASSAGE_MAX_WORDS,
    BM25Index,
    Calculator,
    Clock,
    DocumentSearch,
    Timer,
    ToolError,
    chunk_document,
    evaluate_expression,
    parse_duration,
    parse_timer_label,
    spoken_to_expression,
    terms,
    words_to_numbers,
)

# ----------------------------------------------------------------------------------------------------
# Calculator


@pytest.mark.parametrize(
    ("expression", "answer"),
    [
        ("12 * 13", "12 times 13 is 156."),
        ("2 + 3 * 4", "2 plus 3 times 4 is 14."),
        ("(2 + 3) * 4", "(2 plus 3) times 4 is 20."),
        ("10 - (2 - 3)", "10 minus (2 minus 3) is 11."),
        ("7 / 2", "7 divided by 2 is 3.5."),
        ("1 / 3", "1 divided by 3 is 0.3333333333."),
        ("7 // 2", "7 divided by 2 rounded down is 3."),
        ("-7 % 3", "Minus 7 modulo 3 is 2."),
        ("2 ** 10", "2 to the power of 10 is 1024."),
        ("2 ^ 10", "2 to the power of 10 is 1024."),  # what people type for a power
        ("(-2) ** 2", "(minus 2) to the power of 2 is 4."),
        ("sqrt(144)", "The square root of 144 is 12."),
        ("abs(-3.5)", "The absolute value of minus 3.5 is 3.5."),
        ("round(2.675, 1)", "2.675 rounded to 1 decimal places is 2.7."),
        ("floor(2.5) + ceil(2.5)", "2.5 rounded down plus 2.5 rounded up is 5."),
        ("20 / 100 * 80", "20 percent of 80 is 16."),
        ("0.1 + 0.2", "0.1 plus 0.2 is 0.3."),  # float noise is not read out
        ("2 ** 0.5", "2 to the power of 0.5 is 1.414213562."),
    ],
)
def test_calculator_values_and_wording(expression: str, answer: str) -> None:
    assert Calculator().run({"expression": expression}) == answer


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('true')", "not an allowed function"),
        ("open('/etc/passwd')", "not an allowed function"),
        ("(1).__class__", "Attribute is not allowed"),
        ("x + 1", "'x' is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("[1] * 9", "List is not allowed"),
        ("'a' * 3", "is not a number"),
        ("True + 1", "is not a number"),
        ("sqrt(x=4)", "Wrong arguments"),
        ("2 ** 100000", "Exponents are limited"),
        ("9 ** 9 ** 9", "Exponents are limited"),  # the inner power alone is too big an exponent
        ("10 ** 1000", "too large"),  # refused before computing, not after
        ("(2 ** 1000) * (2 ** 1000)", "too large"),
        ("10.0 ** 400", "too large"),
        ("1e308 * 10", "too large"),
        ("1 / 0", "divide by zero"),
        ("5 % 0", "divide by zero"),
        ("5 // 0.0", "divide by zero"),
        ("0 ** -1", "divide by zero"),
        ("sqrt(-1)", "no real answer"),
        ("(-8) ** 0.5", "not a real number"),
        ("1 +", "can't read"),
        ("1" + " + 1" * MAX_EXPRESSION_CHARS, "limited to"),
    ],
)
def test_calculator_rejects_unsafe_or_impossible_input(expression: str, message: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ToolError, match=message):
        Calculator().run({"expression": expression})
    assert time.perf_counter() - started < 0.1  # huge powers are refused, not computed


def test_calculator_needs_an_expression_argument() -> None:
    for args in ({}, {"expression": ""}, {"expression": 12}):
        with pytest.raises(ToolError, match="'expression' argument"):
            Calculator().run(args)


@pytest.mark.parametrize(
    ("spoken", "digits"),
    [
        ("twelve times thirteen", "12 times 13"),
        ("twenty-one", "21"),
        ("one hundred and five", "105"),
        ("a hundred", "100"),
        ("two thousand and twenty four", "2024"),
        ("one million two hundred thousand", "1200000"),
        ("5 thousand", "5000"),
        ("1.5 million", "1500000"),
        ("three point one four", "3.14"),
        ("1,000 and 12", "1000 and 12"),
        ("twelve and thirteen", "12 and 13"),  # "and" joins only after hundred/thousand
        ("five six", "5 6"),
        ("set a timer", "set a timer"),  # "a" is one only before hundred/thousand/...
        ("a well-known fact", "a well-known fact"),
    ],
)
def test_words_to_numbers(spoken: str, digits: str) -> None:
    assert words_to_numbers(spoken) == digits


@pytest.mark.parametrize(
    ("spoken", "value"),
    [
        ("what is twelve times thirteen", 156),
        ("17 plus 25", 42),
        ("square root of 144", 12),
        ("what's the square root of two hundred and twenty five?", 15),
        ("twenty percent of 80", 16),
        ("what is 15% of 200", 30),
        ("what's 7 x 8?", 56),
        ("what is one hundred and five minus twenty-one", 84),
        ("a hundred divided by eight", 12.5),
        ("what is 2 to the power of 10", 1024),
        ("five squared", 25),
        ("three cubed", 27),
        ("what is negative five plus 3", -2),
        ("add 5 and 3", 8),
        ("subtract 3 from 10", 7),
        ("multiply 4 by 6", 24),
        ("divide 10 by 4", 2.5),
        ("10 mod 3", 1),
        ("half of 80", 40),
        ("calculate (2 + 3) * 4 please", 20),
    ],
)
def test_spoken_arithmetic(spoken: str, value: float) -> None:
    expression = spoken_to_expression(spoken)
    assert expression is not None, spoken
    assert evaluate_expression(expression)[0] == pytest.approx(value)


@pytest.mark.parametrize(
    "text",
    [
        "what is the capital of France",
        "how many days are in 2 weeks",  # a number, but also words that are not arithmetic
        "what time is it",
        "set a timer for 10 minutes",
        "I have 3 kids",
        "call me at 555-1234",
        "twelve and thirteen",
        "",
    ],
)
def test_text_that_is_not_arithmetic(text: str) -> None:
    assert spoken_to_expression(text) is None


# ----------------------------------------------------------------------------------------------------
# Clock and timers

# Tuesday 4 June 2024, 15:07:30 UTC
FIXED = datetime(2024, 6, 4, 15, 7, 30, tzinfo=UTC).timestamp()


def test_clock_time_and_date_in_a_configured_zone() -> None:
    clock = Clock("Europe/Paris", now=lambda: FIXED)  # UTC+2 in summer
    assert clock.run({"action": "time"}) == "It's 5:07 PM."
    assert clock.run({"action": "date"}) == "Today is Tuesday, June 4, 2024."
    assert Clock("UTC", now=lambda: FIXED - 15 * 3600).run({"action": "time"}) == "It's 12:07 AM."
    assert Clock("UTC", now=lambda: FIXED - 3 * 3600).run({"action": "time"}) == "It's 12:07 PM."


def test_clock_in_another_place() -> None:
    clock = Clock("Europe/Paris", now=lambda: FIXED)
    assert clock.run({"action": "time", "place": "Tokyo"}) == "In Tokyo it's 12:07 AM on Wednesday."
    assert clock.run({"action": "time", "place": "new york"}) == "In New York it's 11:07 AM on Tuesday."
    assert clock.run({"action": "date", "place": "tokyo"}) == "In Tokyo it is Wednesday, June 5, 2024."
    with pytest.raises(ToolError, match="I don't know the time zone of Atlantis"):
        clock.run({"action": "time", "place": "Atlantis"})


def test_clock_defaults_to_the_machine_zone_and_real_time() -> None:
    answer = Clock().run({"action": "time"})
    assert re.fullmatch(r"It's (1[0-2]|[1-9]):[0-5]\d [AP]M\.", answer), answer
    local = datetime.now().astimezone()
    assert Clock().run({"action": "date"}).endswith(f"{local.year}.")


def test_clock_rejects_bad_actions_and_zones() -> None:
    with pytest.raises(ToolError, match="Unknown clock action"):
        Clock().run({"action": "alarm"})
    with pytest.raises(ToolError, match="'action' argument"):
        Clock().run({})
    with pytest.raises(KeyError):  # a misconfigured zone fails at start-up, not on the first question
        Clock("Mars/Olympus_Mons")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("set a timer for 10 seconds", 10),
        ("set a timer for ten seconds", 10),
        ("timer for five minutes", 300),
        ("set a 2 minute timer", 120),
        ("set a timer for 1 hour and 30 minutes", 5400),
        ("timer for 1 hour 30 minutes", 5400),
        ("set a timer for a minute and a half", 90),
        ("set a timer for one and a half minutes", 90),
        ("set a timer for an hour and a half", 5400),
        ("half an hour timer", 1800),
        ("set a timer for 2.5 mins", 150),
        ("set a timer for ninety secs", 90),
        ("set a timer", None),
    ],
)
def test_timer_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("set a timer for 10 minutes", ""),
        ("set a pasta timer for 8 minutes", "pasta"),
        ("set a 10 minute pasta timer", "pasta"),
        ("set a timer for 5 minutes for the eggs please", "eggs"),
        ("set a timer called green tea for three minutes", "green tea"),
        ("set a timer for a minute and a half", ""),
        ("set a kitchen timer for 5 minutes", ""),
    ],
)
def test_timer_labels(text: str, label: str) -> None:
    assert parse_timer_label(text) == label


def test_timers_are_validated_and_spoken() -> None:
    timer = Timer.from_args({"seconds": 90, "label": "tea"})
    assert timer == Timer(seconds=90.0, label="tea")
    assert timer.confirmation() == "Tea timer set for 1 minute and 30 seconds."
    assert timer.done_message() == "Your 1 minute and 30 seconds tea timer is done."
    assert Timer(3661).confirmation() == "Timer set for 1 hour, 1 minute and 1 second."
    assert Clock().run({"action": "timer", "seconds": 10}) == "Timer set for 10 seconds."
    cases: list[tuple[dict[str, object], str]] = [
        ({}, "How long should the timer run"),
        ({"seconds": 0}, "Timers can run from"),
        ({"seconds": MAX_TIMER_S + 1}, "Timers can run from"),
        ({"seconds": True}, "must be a number"),
        ({"seconds": "10"}, "must be a number"),
        ({"seconds": 10, "label": 3}, "label must be a string"),
    ]
    for args, message in cases:
        with pytest.raises(ToolError, match=message):
            Clock().run({"action": "timer", **args})


# ----------------------------------------------------------------------------------------------------
# Document search

DOCS = {
    "kettle.md": "# Acme kettle\n\nThe Acme kettle boils a litre in three minutes.\n\n"
    "## Warranty\n\nThe kettle comes with a warranty of two years from the date of purchase. "
    "The warranty does not cover damage from limescale.",
    "office.txt": "Guests can use the network OfficeGuest. The wifi password is maple-42-river and it "
    "changes every month.\n\nThe printer is on the second floor.",
    "pool.md": "Opening hours: Monday to Friday 6 am to 10 pm. Saturday 8 am to 8 pm. "
    "Sunday 9 am to 6 pm.\n\nTowels can be rented at the desk.",
    "notes/handbook.txt": "Every employee is entitled to a paid lunch break of 45 minutes. Lunch is served "
    "in the canteen between noon and 2 pm.",
    "image.png": "not a document",
}


def write_docs(folder: Path, docs: dict[str, str]) -> None:
    for name, text in docs.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    write_docs(tmp_path, DOCS)
    return tmp_path


@pytest.mark.parametrize(
    ("query", "file"),
    [
        ("how long is the warranty", "kettle.md"),
        ("what is the wifi password", "office.txt"),
        ("when does the pool open on sundays", "pool.md"),
        ("how long are lunch breaks", "notes/handbook.txt"),
        ("where is the printer", "office.txt"),
    ],
)
def test_document_search_ranks_the_right_file_first(docs: Path, query: str, file: str) -> None:
    passages = DocumentSearch(docs).search(query)
    assert passages and passages[0].file == file, passages


def test_document_search_result_lists_passages_with_file_names(docs: Path) -> None:
    result = DocumentSearch(docs, top_k=2).run({"query": "warranty limescale"})
    lines = result.splitlines()
    # The heading starts its own passage: the warranty passage is not the kettle's introduction.
    assert lines[0] == (
        "[kettle.md] Warranty. The kettle comes with a warranty of two years from the date of purchase. "
        "The warranty does not cover damage from limescale."
    )
    assert len(lines) == 1  # only passages that share a term with the query
    assert DocumentSearch(docs).run({"query": "quantum chromodynamics"}) == (
        "Nothing in the documents matches 'quantum chromodynamics'."
    )


def test_document_search_reindexes_changed_added_and_removed_files(docs: Path) -> None:
    search = DocumentSearch(docs)
    assert search.search("espresso") == []
    (docs / "office.txt").write_text("The espresso machine is next to the printer.")
    # Same-second writes can leave the mtime unchanged on coarse file systems; the index also keys on
    # size, but make the change unambiguous.
    os.utime(docs / "office.txt", ns=(time.time_ns(), time.time_ns() + 10**9))
    assert [p.file for p in search.search("espresso")] == ["office.txt"]
    assert search.search("wifi password") == []  # the old text is gone from the index

    write_docs(docs, {"new/recipes.md": "Espresso needs finely ground coffee."})
    assert {p.file for p in search.search("espresso")} == {"office.txt", "new/recipes.md"}
    (docs / "office.txt").unlink()
    assert [p.file for p in search.search("espresso")] == ["new/recipes.md"]


def test_document_search_empty_missing_and_unconfigured_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden.md").write_text("hidden files are not documents")
    with pytest.raises(ToolError, match="There are no text or markdown documents in"):
        DocumentSearch(tmp_path / "empty").run({"query": "anything"})
    with pytest.raises(ToolError, match="does not exist"):
        DocumentSearch(tmp_path / "missing").run({"query": "anything"})
    monkeypatch.delenv(DOCS_ENV, raising=False)
    with pytest.raises(ToolError, match=f"No document folder is configured \\(set {DOCS_ENV}\\)"):
        DocumentSearch().run({"query": "anything"})
    write_docs(tmp_path / "env", {"a.md": "The answer is forty-two."})
    monkeypatch.setenv(DOCS_ENV, str(tmp_path / "env"))
    assert DocumentSearch().run({"query": "answer"}) == "[a.md] The answer is forty-two."


def test_chunking_keeps_headings_with_their_text_and_cuts_long_paragraphs() -> None:
    long_paragraph = "word " * (PASSAGE_MAX_WORDS + 10)
    text = "# Title\n\nIntro.\n\n## Setup\n\n- plug it in\n- press start\n\n" + long_paragraph
    passages = chunk_document(text)
    assert passages[0] == "Title. Intro."
    assert passages[1].startswith("Setup. plug it in. press start. word word")
    assert all(len(p.split()) <= PASSAGE_MAX_WORDS for p in passages)
    assert sum(p.count("word") for p in passages) == PASSAGE_MAX_WORDS + 10


def test_bm25_prefers_rare_terms_and_short_passages() -> None:
    passages = ["the kettle boils water", "kettle warranty", "kettle " * 3]
    index = BM25Index([Counter(terms(p)) for p in passages])
    assert index.scores(terms("kettle warranty")).argmax() == 1  # the rare term decides
    assert terms("Opening the pools, timers") == ["open", "pool", "timer"]
    index = BM25Index([Counter(["warranty"]), Counter(["warranty", *["filler"] * 20])])
    short, long = index.scores(["warranty"])
    assert short > long > 0
