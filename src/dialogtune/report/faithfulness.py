"""A dialogue-aware faithfulness check: people in a summary who never appear in its dialogue.

DialogSum writes speakers as ``#Person1#``, ``#Person2#``...; a summary naming ``#Person3#`` in a
two-person dialogue, or "Tom" in a dialogue without a Tom, has invented a person. We flag:

- **speakers**: ``#PersonN#`` tags (also ``Person N`` without hashes, a common model slip) whose
  normalised form does not occur in the dialogue;
- **names**: capitalised words that occur nowhere in the dialogue (case-insensitive, whole word).
  Capitalisation alone is ambiguous, so a word is *not* a name when it is a common English word
  (``_COMMON``), a non-person proper noun we expect (days, months, languages), an acronym, or, at
  the start of a sentence, when it appears in lowercase in the run's texts (``vocabulary``): "After"
  opening a sentence is the word "after", "Tom" opening one is still Tom.

It is a heuristic: the report shows the human references' rate as a calibration line.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass

_SPEAKER_RE = re.compile(r"#\s*([A-Za-z]+)\s*(\d*)\s*#")
_BARE_SPEAKER_RE = re.compile(r"\b(Person)\s?(\d+)\b")
_PERSON_TAG_RE = re.compile(r"#Person\d+#")
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'\u2019]*")  # hyphens split: "T-shirt" is "T" + "shirt"
_SENTENCE_END = ".!?:;\n\"'\u201c\u201d("

# Words that open sentences or carry roles in DialogSum summaries: never names on their own.
_COMMON = frozenset(
    """
a about above after again against all also although always an and another any anyone anything are
as at because before being below between both but by can cannot could did do does doing down during
each either every everyone everything few finally first for from further had has have having he her
here hers herself him himself his how however i if in instead into is it its itself just later let
many may maybe me meanwhile might more most much must my myself neither never next no nobody none
nor not nothing now of off on once one only or other others otherwise our ours ourselves out over
own perhaps please same several she should since so some someone something soon still such than
that the their theirs them themselves then there these they this those though through thus to today
together tomorrow too under unless until up upon us very was we well were what whatever when where
whether which while who whom whose why will with within without would yes yesterday yet you your
yours yourself yourselves
mr mrs ms miss dr sir madam ma'am mom mum dad mother father brother sister son daughter uncle aunt
grandma grandpa baby boss manager doctor nurse teacher professor student customer client clerk
waiter waitress driver officer police guest host receptionist interviewer interviewee applicant
passenger tourist friend friends wife husband girlfriend boyfriend people person speaker speakers
hello hi hey okay ok oh thanks thank sorry good great new old dear
""".split()
)
# Capitalised but not people (a summary that adds one may be wrong, but it invents no person).
_NOT_PEOPLE = frozenset(
    """
monday tuesday wednesday thursday friday saturday sunday january february march april may june july
august september october november december christmas easter halloween thanksgiving internet
english chinese american british french japanese german spanish italian korean russian indian
canadian australian european asian african mexican californian god
""".split()
)


def normalise_speaker(label: str, number: str = "") -> str:
    return f"#{label.capitalize()}{number}#"


def speaker_tags(text: str) -> set[str]:
    """Speaker tags in ``text``, normalised to ``#Person1#`` form (hashless ``Person 1`` too)."""
    tags = {normalise_speaker(m.group(1), m.group(2)) for m in _SPEAKER_RE.finditer(text)}
    stripped = _SPEAKER_RE.sub(" ", text)
    tags.update(normalise_speaker(m.group(1), m.group(2)) for m in _BARE_SPEAKER_RE.finditer(stripped))
    return tags


def _strip_possessive(word: str) -> str:
    return re.sub(r"['\u2019][a-z]*$", "", word)  # Tom's, Mom'll -> Tom, Mom


def capitalised_words(text: str) -> list[tuple[str, bool]]:
    """``(word, sentence_initial)`` for capitalised words outside speaker tags; acronyms skipped."""
    text = _BARE_SPEAKER_RE.sub(" ", _SPEAKER_RE.sub(" ", text))
    found = []
    for match in _WORD_RE.finditer(text):
        word = _strip_possessive(match.group(0))
        if len(word) < 2 or not word[0].isupper() or word.isupper():
            continue  # "I", "OK", "TV": not names we can judge
        before = text[: match.start()].rstrip()
        found.append((word, not before or before[-1] in _SENTENCE_END))
    return found


def lowercase_vocabulary(texts: Iterable[str]) -> set[str]:
    """Words seen in lowercase somewhere in ``texts``: evidence a capitalised form is not a name."""
    return {w for text in texts for w in _WORD_RE.findall(text) if w.islower()}


@dataclass(frozen=True)
class Finding:
    """What one summary invents: speaker tags and names absent from its dialogue."""

    speakers: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    @property
    def flagged(self) -> bool:
        return bool(self.speakers or self.names)

    def describe(self) -> str:
        return ", ".join([*self.speakers, *self.names])


def find_hallucinations(summary: str, dialogue: str, vocabulary: Set[str] = frozenset()) -> Finding:
    """Speakers and names in ``summary`` that never occur in ``dialogue`` (see module docstring)."""
    dialogue_words = {w.lower() for w in _WORD_RE.findall(dialogue)}
    dialogue_words |= {_strip_possessive(w) for w in dialogue_words}
    # A tag around a name from the dialogue ("#Rusty#" for the dog Rusty) is a formatting slip, not a
    # new person; "#Person3#" in a two-person dialogue, or "#Twostones#" for a name never said, is.
    speakers = sorted(
        tag
        for tag in speaker_tags(summary) - speaker_tags(dialogue)
        if _PERSON_TAG_RE.fullmatch(tag) or tag.strip("#").lower() not in dialogue_words
    )
    names: list[str] = []
    for word, initial in capitalised_words(summary):
        lower = word.lower()
        if lower in _COMMON or lower in _NOT_PEOPLE or lower in dialogue_words:
            continue
        if initial and (lower in vocabulary or lower in dialogue_words):
            continue
        if word not in names:
            names.append(word)
    return Finding(speakers=tuple(speakers), names=tuple(names))


@dataclass
class FaithfulnessStats:
    """Per-system counts of flagged summaries, with a few examples to read."""

    system: str
    n: int
    flagged: int
    speaker_flagged: int
    name_flagged: int
    examples: list[tuple[str, str]]  # (example id, what was invented)

    @property
    def rate(self) -> float:
        return self.flagged / self.n if self.n else 0.0


def faithfulness_stats(
    system: str,
    ids: Sequence[str],
    summaries: Sequence[str],
    dialogues: Sequence[str],
    vocabulary: Set[str] = frozenset(),
    max_examples: int = 3,
) -> FaithfulnessStats:
    findings = [find_hallucinations(s, d, vocabulary) for s, d in zip(summaries, dialogues, strict=True)]
    flagged = [(i, f) for i, f in zip(ids, findings) if f.flagged]
    return FaithfulnessStats(
        system=system,
        n=len(findings),
        flagged=len(flagged),
        speaker_flagged=sum(1 for f in findings if f.speakers),
        name_flagged=sum(1 for f in findings if f.names),
        examples=[(i, f.describe()) for i, f in flagged[:max_examples]],
    )


@dataclass(frozen=True)
class LengthStats:
    """Summary lengths in words (whitespace tokens)."""

    n: int
    mean: float
    median: float
    minimum: int
    maximum: int
    empty: int


def length_stats(texts: Sequence[str]) -> LengthStats:
    lengths = [len(text.split()) for text in texts]
    if not lengths:
        return LengthStats(0, 0.0, 0.0, 0, 0, 0)
    return LengthStats(
        n=len(lengths),
        mean=statistics.fmean(lengths),
        median=float(statistics.median(lengths)),
        minimum=min(lengths),
        maximum=max(lengths),
        empty=sum(1 for n in lengths if n == 0),
    )
