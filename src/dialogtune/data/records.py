"""The record every block passes around: one dialogue with all its reference summaries."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Record:
    """One dialogue and its reference summaries.

    ``references`` is a tuple so a record can be hashed and shared safely; the hub's
    test split has three references per dialogue, local train/validation files one.
    """

    id: str
    dialogue: str
    references: tuple[str, ...] = field(default_factory=tuple)
    topic: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "dialogue": self.dialogue,
            "references": list(self.references),
            "topic": self.topic,
        }
