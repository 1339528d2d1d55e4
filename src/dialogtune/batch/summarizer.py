"""One model, loaded once, summarizing batches of rows: the unit both engines run.

The local engine calls a :class:`Summarizer` in this process; the Ray engine hands the
class to ``Dataset.map_batches``, which builds one per actor and calls it with each
shard's rows. Same class, same calls, so the outputs are the same row for row.

It works on any batch of columns (a ``pyarrow.Table`` or a mapping of column name to
values), so it also fits into a Ray pipeline of your own::

    ds = ray.data.read_parquet("s3://bucket/transcripts/")
    ds = ds.map_batches(Summarizer, fn_constructor_kwargs={"job": ModelJob(model=...)},
                        compute=ray.data.ActorPoolStrategy(size=8), batch_format="pyarrow")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from dialogtune.batch.config import ModelJob
from dialogtune.batch.inputs import dialogue_problem


class Summarizer:
    """``__call__(batch)`` returns the batch without its dialogue column, plus ``summary`` and ``error``.

    Rows whose ``error`` is already set (by the shard reader) or whose dialogue is empty
    or not a string get a null summary and an ``error`` saying why; the others are
    summarized in one :func:`dialogtune.generation.generate` call (batched, length-sorted).
    """

    def __init__(self, job: ModelJob, threads: int | None = None, dialogue_column: str = "dialogue") -> None:
        import torch

        from dialogtune.models.inference import load_for_inference

        if threads is not None:  # before any model work: intra-op pools are sized on first use
            torch.set_num_threads(threads)
        self.job = job
        self.dialogue_column = dialogue_column
        self.loaded = load_for_inference(
            job.model,
            adapter=job.adapter,
            precision=job.generation.precision,
            device=job.device,
            merge=job.merge,
        )

    def __call__(self, batch: pa.Table | Mapping[str, Sequence[Any]]) -> pa.Table | dict[str, list[Any]]:
        from dialogtune.generation import generate

        columns = batch.to_pydict() if isinstance(batch, pa.Table) else {k: list(v) for k, v in batch.items()}
        dialogues = columns.pop(self.dialogue_column, None)
        if dialogues is None:
            raise KeyError(f"no column '{self.dialogue_column}' in the batch (found: {', '.join(columns)})")
        n = len(dialogues)
        errors: list[str | None] = list(columns.get("error") or [None] * n)
        for i, dialogue in enumerate(dialogues):
            if errors[i] is None:
                errors[i] = dialogue_problem(dialogue, self.dialogue_column)
        good = [i for i in range(n) if errors[i] is None]
        summaries: list[str | None] = [None] * n
        if good:
            texts = generate(
                self.loaded,
                [str(dialogues[i]) for i in good],
                self.job.generation,
                self.job.prompt,
                progress=False,
            ).texts
            for i, text in zip(good, texts):
                summaries[i] = text
        columns["summary"] = summaries
        columns["error"] = errors
        if not isinstance(batch, pa.Table):
            return columns
        # Explicit types: an all-null column must not become Arrow's null type, or
        # the blocks of different shards would not concatenate.
        kept = set(batch.schema.names) - {"summary", "error"}
        schema = pa.schema(
            [batch.schema.field(name) if name in kept else pa.field(name, pa.string()) for name in columns]
        )
        return pa.table(columns, schema=schema)
