"""Loading a model (and adapter) to generate with, at full speed.

Two things make generation fast on a CPU with native bf16 and cost nothing in quality (both
checked on the whole validation split, docs/generation.md):

* **bf16 weights** (``precision: auto``): matmuls at ~2.5x fp32 speed and half the memory
  traffic.
* **a merged adapter**: an adapter used alone (evaluate, generate, summarize, a server with
  one adapter) is folded into a private copy of the base weights, W + B·A·alpha/r, so every
  layer is one matmul instead of three; the merge is done in fp32 and the result then cast,
  so it rounds once. The multi-adapter server keeps adapters unmerged (each row picks its own).

In bf16 only the matrix products are bf16: the residual stream, norms and attention stay fp32 and
the output layer's top candidates are recomputed in fp32 (:mod:`~dialogtune.models.mixed`), which
is what keeps even the zero-shot model's greedy summaries at fp32's ROUGE.
"""

from __future__ import annotations

from peft import PeftModel

from dialogtune.errors import ModelSpecError
from dialogtune.models.adapters import attach_adapter
from dialogtune.models.loaded import LoadedModel
from dialogtune.models.loading import choose_device, load_model
from dialogtune.models.logits import refine_logits
from dialogtune.models.lora_rows import pad_adapter_rows
from dialogtune.models.mixed import mix_precision
from dialogtune.models.packed import pack_linears
from dialogtune.models.precision import DTYPES, resolve_precision
from dialogtune.models.specs import resolve_spec

MERGE_CHOICES = ("auto", "yes", "no")


def load_for_inference(
    model: str,
    *,
    adapter: str | None = None,
    precision: str = "auto",
    device: str = "auto",
    merge: str = "auto",
) -> LoadedModel:
    """``model`` (+ ``adapter``) in ``precision``, the adapter merged unless ``merge="no"``.

    ``merge="auto"`` merges adapters PEFT can merge (LoRA, DoRA, IA3); prompt tuning, which adds
    virtual tokens rather than changing weights, stays as it is.
    """
    if merge not in MERGE_CHOICES:
        raise ModelSpecError(f"merge must be one of {', '.join(MERGE_CHOICES)}, got '{merge}'")
    target = choose_device(device)
    # fp32 first: a merge rounds once, and bf16 is applied per layer afterwards (_cast).
    base = load_model(resolve_spec(model), dtype="fp32", device=str(target))
    resolved = resolve_precision(precision, device=target, model_type=base.model.config.model_type)
    if adapter is not None:
        attach_adapter(base, adapter, trainable=False)
        if merge != "no" and mergeable(base.model):
            base.model = base.model.merge_and_unload()
            base.model.eval()
            base.adapter_merged = True
        elif merge == "yes":
            raise ModelSpecError(f"adapter {adapter} cannot be merged into the base weights; use --merge no")
    return _cast(base, resolved)


def mergeable(model: object) -> bool:
    """Whether this model's adapter can be folded into the base weights: its method says
    (:mod:`dialogtune.methods`; LoRA, DoRA and IA3 can, prompt tuning cannot)."""
    from dialogtune.methods import method_of_model

    if not isinstance(model, PeftModel):
        return False
    method = method_of_model(model)
    return method is not None and method.mergeable


def _cast(loaded: LoadedModel, precision: str) -> LoadedModel:
    """bf16/fp16: the products in that format over an fp32 residual stream (models/mixed.py)."""
    if precision != "fp32":
        mix_precision(loaded.model, DTYPES[precision])
    return loaded


def load_for_adapters(
    model: str, *, adapter: str | None = None, precision: str = "auto", device: str = "auto"
) -> LoadedModel:
    """A base that PEFT adapters will be attached to later (a server holding several, loading
    them at run time): PEFT needs the plain linear layers, so the whole model is cast to
    ``precision`` instead of the fp32 residual stream, and only the top logits are refined.
    ``adapter``: one attached now, unmerged, as the server attaches its adapters."""
    loaded = load_model(model, dtype=precision, device=device, adapter=adapter)
    refine_logits(loaded.model)
    pack_linears(loaded.model)  # bf16 weights laid out once for the CPU kernel (models/packed.py)
    pad_adapter_rows(loaded.model)  # fp32 LoRA products whose rows do not depend on the row count
    return loaded
