"""The report as data: sections of paragraphs, tables, images and examples.

Builders (tables, examples, faithfulness, plots) produce these blocks; ``render`` turns the same
document into Markdown and HTML, so the two formats cannot say different things.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Paragraph:
    """Plain text (escaped by the renderer); ``kind="warning"`` is shown as a highlighted note."""

    text: str
    kind: str = "text"


@dataclass
class Table:
    """A table of already-formatted cells; ``align`` holds ``"l"`` or ``"r"`` per column."""

    headers: list[str]
    rows: list[list[str]]
    title: str = ""
    note: str = ""
    align: list[str] | None = None

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.headers):
                raise ValueError(
                    f"table '{self.title}': row has {len(row)} cells for {len(self.headers)} headers"
                )
        if self.align is None:
            # Numbers read best right-aligned; the first column names the row.
            self.align = ["l"] + ["r"] * (len(self.headers) - 1)


@dataclass
class Image:
    """A PNG: written next to ``report.md`` as ``filename``, embedded in the HTML as a data URI."""

    filename: str
    png: bytes
    alt: str
    caption: str = ""


@dataclass
class ExampleOutput:
    model: str
    prediction: str
    scores: dict[str, float]


@dataclass
class ExampleBlock:
    """One dialogue side by side: references, then each model's summary with its ROUGE."""

    id: str
    reason: str
    dialogue: str
    references: list[str]
    outputs: list[ExampleOutput]


@dataclass
class Preformatted:
    """Verbatim text (settings, versions) shown in a monospace block."""

    text: str


Block = Paragraph | Table | Image | ExampleBlock | Preformatted


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)

    def images(self) -> list[Image]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Image)]
