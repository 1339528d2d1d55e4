"""The hallucinated-people check and summary length statistics, on hand-written cases."""

from __future__ import annotations

import pytest

from dialogtune.report.faithfulness import (
    faithfulness_stats,
    find_hallucinations,
    length_stats,
    lowercase_vocabulary,
    speaker_tags,
)

DIALOGUE = (
    "#Person1#: Hi Jimmy, shall we go to the gym after work?\n"
    "#Person2#: Sure. Mary's coming too, she booked the court for Monday.\n"
    "#Person1#: Great, see you at 5."
)


def test_speaker_tags_normalises_spacing_and_bare_forms() -> None:
    assert speaker_tags("#Person1# and # Person 2 # meet Person3.") == {"#Person1#", "#Person2#", "#Person3#"}


def test_invented_speaker_is_flagged() -> None:
    finding = find_hallucinations("#Person3# asks #Person1# to the gym.", DIALOGUE)
    assert finding.speakers == ("#Person3#",)
    assert finding.names == ()
    assert finding.flagged


def test_bare_invented_speaker_is_flagged() -> None:
    assert find_hallucinations("Person3 joins them.", DIALOGUE).speakers == ("#Person3#",)


def test_tag_around_a_name_counts_as_that_name() -> None:
    # Models sometimes wrap names in speaker hashes: a known name is no invention, an unknown one is.
    assert not find_hallucinations("#Person2# tells #Jimmy# about the court.", DIALOGUE).flagged
    assert find_hallucinations("#Person2# drives to #TwoStones#.", DIALOGUE).speakers == ("#Twostones#",)


def test_invented_name_is_flagged_even_at_sentence_start() -> None:
    finding = find_hallucinations("Tom invites #Person2# to the gym. They meet Jimmy there.", DIALOGUE)
    assert finding.names == ("Tom",)
    assert finding.speakers == ()


def test_invented_name_mid_sentence_is_flagged() -> None:
    assert find_hallucinations("#Person1# and Sarah go to the gym.", DIALOGUE).names == ("Sarah",)


@pytest.mark.parametrize(
    "summary",
    [
        "#Person1# and #Person2# will go to the gym after work.",
        "#Person1# invites Jimmy to the gym; Mary is coming too.",  # names from the dialogue
        "Jimmy's friend Mary booked the court.",  # possessive of a known name
        "The two will meet at 5. They booked the court for Monday.",  # common words, days
        "After work, #Person1# and #Person2# go to the gym. Both are happy.",  # sentence-initial common words
        "Mr. Jimmy and Mrs. Mary play on Monday, OK?",  # titles and acronyms
        "#person1# meets #Person2#.",  # tag case differs
    ],
)
def test_faithful_summaries_are_not_flagged(summary: str) -> None:
    finding = find_hallucinations(summary, DIALOGUE)
    assert not finding.flagged, finding


def test_name_matching_is_case_insensitive_and_whole_word() -> None:
    assert not find_hallucinations("JIMMY goes. Jimmy goes.", DIALOGUE).flagged
    # "Jim" is not "Jimmy": a different person.
    assert find_hallucinations("#Person1# meets Jim.", DIALOGUE).names == ("Jim",)


def test_sentence_initial_word_seen_in_lowercase_elsewhere_is_not_a_name() -> None:
    summary = "Discussing the plan, #Person1# agrees."
    assert find_hallucinations(summary, DIALOGUE).names == ("Discussing",)  # no evidence either way
    vocabulary = lowercase_vocabulary(["we are discussing it"])
    assert not find_hallucinations(summary, DIALOGUE, vocabulary).flagged
    # ...but the vocabulary never clears a capitalised word in the middle of a sentence.
    assert find_hallucinations("#Person1# meets Tom.", DIALOGUE, lowercase_vocabulary(["tom"])).names == (
        "Tom",
    )


def test_faithfulness_stats_counts_rate_and_examples() -> None:
    summaries = ["#Person1# goes to the gym.", "#Person3# goes.", "Tom goes.", "#Person3# and Tom go."]
    stats = faithfulness_stats("m", ["a", "b", "c", "d"], summaries, [DIALOGUE] * 4)
    assert (stats.n, stats.flagged, stats.speaker_flagged, stats.name_flagged) == (4, 3, 2, 2)
    assert stats.rate == pytest.approx(0.75)
    assert stats.examples[0] == ("b", "#Person3#")
    assert stats.examples[2] == ("d", "#Person3#, Tom")


def test_length_stats() -> None:
    stats = length_stats(["one two three", "", "one"])
    assert (stats.n, stats.minimum, stats.maximum, stats.empty) == (3, 0, 3, 1)
    assert stats.mean == pytest.approx(4 / 3)
    assert stats.median == 1.0
    assert length_stats([]).n == 0
