"""Regional compilation: ``torch.compile`` of the model's repeated blocks, for training steps only.

Why regional: a transformer is N copies of one block. Compiling each block with
``nn.Module.compile`` lets dynamo trace the block's code once and reuse the compiled graph for
every copy (parameters are graph inputs), so the cold compile of SmolLM2's 30 layers took
43 s on the 2-core dev box instead of 272 s for the whole model, for most of the gain
(LoRA step 1.34x faster vs 1.45x whole-model; see docs/training.md).

Why training steps only: generation (the ROUGE probe at evaluation) and the eval loss run
under ``no_grad`` with other shapes and a KV cache; compiling those would cost more compile
time than it saves. So the compiled blocks are switched on only inside
:meth:`RegionalCompile.active`, which the Trainer wraps around ``training_step`` (forward
*and* backward, so gradient checkpointing recomputes with the same compiled code).

``dynamic=True``: length-grouped batches change the sequence length every step; with static
shapes each new length would recompile.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from dialogtune.errors import ConfigError
from dialogtune.models.loaded import innermost


def repeated_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's transformer blocks: modules of the classes transformers lists in
    ``_no_split_modules`` (``LlamaDecoderLayer``, ``T5Block``, ...), which every model
    family defines for device-map sharding and which are exactly its repeated layers."""
    base = innermost(model)
    names = set(getattr(base, "_no_split_modules", None) or [])
    return [module for module in base.modules() if type(module).__name__ in names]


class RegionalCompile:
    """Compiles the repeated blocks of ``model`` once; :meth:`active` switches them on."""

    def __init__(self, model: torch.nn.Module, dynamic: bool = True) -> None:
        self.blocks = repeated_blocks(model)
        if not self.blocks:  # a model class without _no_split_modules: a config choice, not a bug
            raise ConfigError(
                f"training.compile: found no repeated blocks to compile in {type(innermost(model)).__name__}"
            )
        self._compiled = []
        for block in self.blocks:
            # nn.Module.compile stores torch.compile(block._call_impl) in _compiled_call_impl,
            # which Module.__call__ uses when set. We keep it and install it only while active.
            block.compile(dynamic=dynamic)
            self._compiled.append(block._compiled_call_impl)
            block._compiled_call_impl = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        for block, compiled in zip(self.blocks, self._compiled, strict=True):
            block._compiled_call_impl = compiled
        try:
            yield
        finally:
            for block in self.blocks:
                block._compiled_call_impl = None
