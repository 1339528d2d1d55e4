"""ROUGE per example, behind one scorer: google-research's ``rouge_score``.

We score every (prediction, reference) pair with ``rouge_scorer.RougeScorer`` and combine the
references of one dialogue ourselves (mean and max), because the two common recipes disagree:
``RougeScorer.score_multi`` keeps the best reference, while the notebook's ``evaluate.load("rouge")``
on the hub's flattened test split (one row per reference) effectively averages over references.

Behaviours of ``rouge_score`` 0.1.2 that shape this module (see ``rouge_scorer.py``/``tokenize.py``):

- ``scorer.score(target, prediction)``: the reference comes first.
- The default tokenizer lowercases and keeps only ``[a-z0-9]+`` tokens; with ``use_stemmer`` the
  Porter stemmer is applied to tokens longer than 3 characters.
- ``rougeLsum`` splits sentences on ``"\\n"`` only (``split_summaries=True`` would need nltk's punkt
  data, which is not available offline). So a one-line summary is one "sentence" and rougeLsum
  equals rougeL. :func:`prepare_for_lsum` puts sentences on their own lines first when asked to.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dialogtune.errors import ConfigError, DataError

DEFAULT_ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL", "rougeLsum")
LSUM_SPLITS: tuple[str, ...] = ("sentences", "newline", "none")
MULTI_REFERENCE: tuple[str, ...] = ("mean", "max")

_LSUM_DESCRIPTIONS = {
    "sentences": "regex sentence splitter (dialogtune.evaluation.rouge.split_sentences), one sentence per line",
    "newline": "text as is: rouge_score splits on newlines only",
    "none": "newlines replaced by spaces: whole text is one sentence, rougeLsum ~= rougeL (like `evaluate`)",
}
_ROUGE_TYPE_RE = re.compile(r"rouge[1-9]|rougeL|rougeLsum")

# A sentence ends at ., ! or ? (possibly repeated, possibly followed by closing quotes/brackets) that
# is followed by whitespace. The candidate is rejected when the word before it is an abbreviation.
_BOUNDARY_RE = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s)")
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "mt"})
# "J.", "U.S.", "a.m.", "e.g.": letters each followed by a dot are initials or abbreviations.
_INITIALS_RE = re.compile(r"(?:[A-Za-z]\.)+")


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences with a small, documented regex rule (no nltk data needed).

    Rule: existing newlines always end a sentence; otherwise a sentence ends after ``.``, ``!`` or
    ``?`` (plus closing quotes/brackets) followed by whitespace, unless the word before it is a
    title/abbreviation (``Mr.``, ``Mrs.``, ``Dr.``, ``St.``, ...) or a run of initials
    (``J.``, ``U.S.``, ``a.m.``, ``e.g.``). Empty sentences are dropped.
    """
    sentences: list[str] = []
    for line in text.splitlines():
        start = 0
        for match in _BOUNDARY_RE.finditer(line):
            candidate = line[start : match.end()]
            words = candidate.split()
            last_word = words[-1] if words else ""
            if _is_abbreviation(last_word):
                continue
            sentences.append(candidate.strip())
            start = match.end()
        sentences.append(line[start:].strip())
    return [sentence for sentence in sentences if sentence]


def _is_abbreviation(word: str) -> bool:
    core = word.rstrip("\"'\u201d\u2019)]")
    if not core.endswith("."):
        return False  # "!" and "?" always end a sentence
    if _INITIALS_RE.fullmatch(core):
        return True
    return core.rstrip(".").lower() in _ABBREVIATIONS


def prepare_for_lsum(text: str, lsum_split: str) -> str:
    """Lay out ``text`` so that rouge_score's newline-only rougeLsum splitting does what we asked.

    Safe for the other ROUGE types: the default tokenizer treats newlines like any other
    non-alphanumeric character, so rouge1/rouge2/rougeL see the same tokens either way.
    """
    if lsum_split == "sentences":
        return "\n".join(split_sentences(text))
    if lsum_split == "none":
        return " ".join(text.splitlines())
    return text


def _rouge_score_version() -> str:
    try:
        return importlib.metadata.version("rouge_score")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - it is a dependency
        return "unknown"


@dataclass(frozen=True)
class RougeSettings:
    """How ROUGE is computed; recorded next to every number (:meth:`to_dict`)."""

    rouge_types: tuple[str, ...] = field(
        default=DEFAULT_ROUGE_TYPES,
        metadata={"help": "rouge_score types: rougeN (N=1..9), rougeL, rougeLsum"},
    )
    use_stemmer: bool = field(
        default=True, metadata={"help": "Porter stemming, as the notebook's evaluate rouge(use_stemmer=True)"}
    )
    lsum_split: str = field(
        default="sentences", metadata={"help": "rougeLsum sentence splitting: " + ", ".join(LSUM_SPLITS)}
    )
    multi_reference: str = field(
        default="mean",
        metadata={"help": "headline combination over references: mean or max (max is always kept)"},
    )

    def __post_init__(self) -> None:
        types = (self.rouge_types,) if isinstance(self.rouge_types, str) else tuple(self.rouge_types)
        object.__setattr__(self, "rouge_types", types)
        if not types:
            raise ConfigError("rouge_types: give at least one ROUGE type")
        for rouge_type in types:
            if not isinstance(rouge_type, str) or not _ROUGE_TYPE_RE.fullmatch(rouge_type):
                raise ConfigError(
                    f"rouge_types: unknown ROUGE type {rouge_type!r} (expected rouge1..rouge9, rougeL, rougeLsum)"
                )
        if len(set(types)) != len(types):
            raise ConfigError(f"rouge_types: duplicate entries in {list(types)}")
        if not isinstance(self.use_stemmer, bool):
            raise ConfigError(f"use_stemmer: expected true or false, got {self.use_stemmer!r}")
        if self.lsum_split not in LSUM_SPLITS:
            raise ConfigError(f"lsum_split: {self.lsum_split!r} is not one of {', '.join(LSUM_SPLITS)}")
        if self.multi_reference not in MULTI_REFERENCE:
            raise ConfigError(
                f"multi_reference: {self.multi_reference!r} is not one of {', '.join(MULTI_REFERENCE)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Everything a reader needs to reproduce (or distrust) a ROUGE number."""
        return {
            "implementation": "rouge_score",
            "implementation_version": _rouge_score_version(),
            "rouge_types": list(self.rouge_types),
            "score": "fmeasure",
            "use_stemmer": self.use_stemmer,
            "stemmer": "porter (tokens longer than 3 characters)" if self.use_stemmer else "none",
            "tokenizer": "rouge_score default: lowercase, [a-z0-9] tokens",
            "lsum_split": self.lsum_split,
            "lsum_split_description": _LSUM_DESCRIPTIONS[self.lsum_split],
            "multi_reference": self.multi_reference,
            "multi_reference_description": (
                f"per example, the {self.multi_reference} F-measure over its references, then the mean over "
                "examples; max over references is reported too"
            ),
        }


@dataclass(frozen=True)
class ExampleScores:
    """ROUGE F-measures (0-1) of one prediction, combined over its references."""

    mean: dict[str, float]
    max: dict[str, float]
    n_references: int

    def headline(self, settings: RougeSettings) -> dict[str, float]:
        """The combination ``settings.multi_reference`` selects."""
        return self.max if settings.multi_reference == "max" else self.mean


def score_examples(
    predictions: Sequence[str], references: Sequence[Sequence[str]], settings: RougeSettings | None = None
) -> list[ExampleScores]:
    """Score each prediction against each of its references with ``rouge_score``.

    Args:
        predictions: one text per example; an empty string is allowed and scores 0.
        references: for each example, one or more reference texts (a bare string counts as one).
        settings: ROUGE settings; defaults to :class:`RougeSettings`.

    Raises:
        DataError: lengths differ, a text is not a string, or an example has no reference.
    """
    settings = settings or RougeSettings()
    if len(predictions) != len(references):
        raise DataError(f"{len(predictions)} predictions but {len(references)} reference lists")
    # Imported here: rouge_score pulls in nltk (~1 s), which `dialogtune --help` should not pay for.
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(settings.rouge_types), use_stemmer=settings.use_stemmer)
    results: list[ExampleScores] = []
    for index, (prediction, refs) in enumerate(zip(predictions, references, strict=True)):
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not isinstance(prediction, str):
            raise DataError(f"example {index}: prediction is {type(prediction).__name__}, expected text")
        if not refs:
            raise DataError(f"example {index}: no reference summary to score against")
        if not all(isinstance(ref, str) for ref in refs):
            raise DataError(f"example {index}: every reference must be text")
        prepared = prepare_for_lsum(prediction, settings.lsum_split)
        # rouge_score's order is score(target, prediction): swapping it swaps precision and recall.
        pair_scores = [scorer.score(prepare_for_lsum(ref, settings.lsum_split), prepared) for ref in refs]
        mean = {t: sum(s[t].fmeasure for s in pair_scores) / len(pair_scores) for t in settings.rouge_types}
        best = {t: max(s[t].fmeasure for s in pair_scores) for t in settings.rouge_types}
        results.append(ExampleScores(mean=mean, max=best, n_references=len(refs)))
    return results
