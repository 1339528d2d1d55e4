"""Batch summarization of many dialogues, in this process or on Ray Data, resumable by shard.

``run_batch(BatchConfig(input=..., output=..., job=ModelJob(model=...)))`` is the one call;
:class:`Summarizer` is the model actor, usable in a Ray pipeline of your own.
"""

from dialogtune.batch.config import BatchConfig, ModelJob
from dialogtune.batch.runner import BatchReport, run_batch
from dialogtune.batch.summarizer import Summarizer

__all__ = ["BatchConfig", "BatchReport", "ModelJob", "Summarizer", "run_batch"]
