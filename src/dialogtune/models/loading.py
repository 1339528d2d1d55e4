"""Model specs → a loaded model + tokenizer, on the right device and dtype.

:class:`~dialogtune.models.loaded.LoadedModel` lives in its own module; it is importable from
here too, where callers have always found it.

Safety defaults: ``trust_remote_code=False`` always, and only safetensors or GGUF
weights (``use_safetensors=True``): a pickled ``pytorch_model.bin`` is refused. Every file
is checked on the way (:mod:`dialogtune.models.files`): a corrupt or mismatched one is a
one-line :class:`ModelSpecError` naming it, and the tokenizer loads before the weights so
that a broken one fails in a second, not after the weights.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from dialogtune.errors import ConfigError, ModelSpecError
from dialogtune.hub import go_offline_if_unreachable, hub_host
from dialogtune.io import atomic_dir, read_json_file
from dialogtune.models.adapters import attach_adapter
from dialogtune.models.files import (
    check_chat_template,
    check_loading_info,
    check_model_dir,
    check_token_ids,
    first_line,
    loading,
)
from dialogtune.models.kinds import kind_for_config
from dialogtune.models.loaded import LoadedModel
from dialogtune.models.precision import DTYPES, resolve_precision
from dialogtune.models.random_configs import RANDOM_CONFIGS, build_config, byte_tokenizer
from dialogtune.models.specs import ModelSpec, resolve_spec

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where converted models are kept (``$DIALOGTUNE_CACHE`` or ``~/.cache/dialogtune``)."""
    root = os.environ.get("DIALOGTUNE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "dialogtune"
    )
    return Path(root)


def choose_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ModelSpecError(f"unknown device '{device}'") from exc


def choose_dtype(dtype: str, device: torch.device, model_type: str) -> torch.dtype:
    """The torch dtype for precision ``dtype`` (auto, fp32, bf16, fp16) on ``device``: the rule of
    :mod:`dialogtune.models.precision` (bf16 where the hardware has it natively; never fp16 for T5)."""
    try:
        return DTYPES[resolve_precision(dtype, device=device, model_type=model_type)]
    except ConfigError as exc:
        raise ModelSpecError(str(exc)) from None


def _auto_class(config: Any) -> Any:
    return kind_for_config(config).auto_model_class()


def untie_lm_head(model: PreTrainedModel) -> None:
    """Give a T5 v1.1 model (FLAN-T5) its own ``lm_head`` like the real checkpoints.

    transformers 5 ties ``lm_head`` to the shared embeddings whenever a T5 is built
    from a config, which undercounts FLAN-T5-base (222.9M instead of 247.6M).
    """
    if getattr(model.config, "scale_decoder_outputs", True):
        return  # original T5 really is tied
    head = model.get_output_embeddings()
    if head is None or head.weight is not model.get_input_embeddings().weight:
        return
    head.weight = torch.nn.Parameter(head.weight.detach().clone())
    tied = getattr(model, "all_tied_weights_keys", None)
    if isinstance(tied, dict):
        tied.pop("lm_head.weight", None)


def random_config(spec: ModelSpec) -> Any:
    """The transformers config of a ``random:`` spec: a built-in name or a config.json file."""
    if spec.location in RANDOM_CONFIGS:
        return build_config(spec.location)
    read_json_file(spec.location, ModelSpecError)  # malformed JSON: one line naming the file
    with loading(f"a config from {spec.location}"):
        return AutoConfig.from_pretrained(spec.location, trust_remote_code=False)


def _build_random(
    spec: ModelSpec, seed: int = 0, empty: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    config = random_config(spec)
    torch.manual_seed(seed)  # random weights, but the same ones every time
    if empty:  # shapes only (parameter counts): no memory, no init time
        with torch.device("meta"):
            model = _auto_class(config).from_config(config)
    else:
        model = _auto_class(config).from_config(config)
    untie_lm_head(model)
    tokenizer = byte_tokenizer(append_eos=kind_for_config(config).appends_eos)
    return model, tokenizer


def _embedded_cache_path(spec: ModelSpec) -> Path:
    gguf = Path(spec.location)
    stat = gguf.stat()
    return cache_dir() / "models" / f"{spec.raw}-{stat.st_size}"


def _load_gguf(spec: ModelSpec, torch_dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a GGUF file; the embedded model is converted once to safetensors in the cache.

    De-quantising the GGUF takes ~17 s; the safetensors copy loads in ~1 s.
    """
    gguf = Path(spec.location)
    cached = _embedded_cache_path(spec) if spec.source == "embedded" else None
    if cached is not None and (cached / "config.json").is_file():
        try:
            return _load_dir(str(cached), torch_dtype)
        except ModelSpecError as exc:  # a damaged cache costs one conversion, not an error
            log.warning("converting again: the cached copy is unusable (%s)", exc)
    log.info("de-quantising %s (first load only)", gguf.name)
    tokenizer = _gguf_tokenizer(gguf)
    with loading(f"GGUF file {gguf} (cut off, or not a model transformers can read)"):
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    _forget_gguf_quantization(model)
    if cached is not None:
        try:
            with atomic_dir(cached) as tmp:
                model.save_pretrained(tmp, safe_serialization=True)
                tokenizer.save_pretrained(tmp)
        except OSError as exc:  # a read-only cache only costs time
            log.warning("could not cache converted model: %s", exc)
    return model.to(torch_dtype), tokenizer


def _gguf_tokenizer(gguf: Path) -> PreTrainedTokenizerBase:
    # A file that is not GGUF, or is cut off, fails here first: gguf's reader raises
    # ValueError/IndexError/struct.error, the tokenizer conversion anything.
    with loading(f"GGUF file {gguf} (cut off, or not a GGUF model file)", any_error=True):
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    check_chat_template(tokenizer, str(gguf))
    return tokenizer


def _forget_gguf_quantization(model: PreTrainedModel) -> None:
    """GGUF weights arrive fully de-quantised (plain fp32 tensors), but transformers
    keeps the GGUF "quantizer" attached, which blocks save_pretrained and makes the
    Trainer treat the model as quantized. Nothing quantized is left, so drop it."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _load_dir(location: str, torch_dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A transformers model folder or hub id: config, then tokenizer, then weights (all checked)."""
    if Path(location).is_dir():
        check_model_dir(Path(location))
    with loading(f"the config of {location}"):
        config = AutoConfig.from_pretrained(location, trust_remote_code=False)
    tokenizer = _dir_tokenizer(location)
    with loading(f"model weights from {location}"):
        model, info = _auto_class(config).from_pretrained(
            location,
            dtype=torch_dtype,
            trust_remote_code=False,
            use_safetensors=True,
            output_loading_info=True,
        )
    check_loading_info(location, info)
    return model, tokenizer


def _dir_tokenizer(location: str) -> PreTrainedTokenizerBase:
    with loading(f"the tokenizer of {location}", any_error=True):
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False)
    check_chat_template(tokenizer, location)
    return tokenizer


def _peek_model_type(spec: ModelSpec) -> str:
    if spec.source == "random" and spec.location in RANDOM_CONFIGS:
        return str(RANDOM_CONFIGS[spec.location]["kind"])
    if spec.source == "dir":
        return str(read_json_file(Path(spec.location) / "config.json", ModelSpecError).get("model_type", ""))
    return spec.location.lower()  # hub ids like google/flan-t5-base carry the family name


def load_model(
    spec: str | ModelSpec,
    *,
    dtype: str = "auto",
    device: str = "auto",
    adapter: str | None = None,
    seed: int = 0,
    empty_weights: bool = False,
) -> LoadedModel:
    """Load a model spec (and optionally a LoRA adapter, frozen) for use.

    ``empty_weights`` builds ``random:`` models on the meta device (for counting only).
    """
    spec = resolve_spec(spec) if isinstance(spec, str) else spec
    target = choose_device(device)
    model_type = _peek_model_type(spec)
    torch_dtype = choose_dtype(dtype, target, "t5" if "t5" in model_type else model_type)
    if spec.source == "random":
        model, tokenizer = _build_random(spec, seed=seed, empty=empty_weights)
        model = model.to(torch_dtype)
        if empty_weights:
            target = torch.device("meta")
    elif spec.source in ("gguf", "embedded"):
        model, tokenizer = _load_gguf(spec, torch_dtype)
    elif spec.source == "dir":
        model, tokenizer = _load_dir(spec.location, torch_dtype)
    else:
        model, tokenizer = _load_hub(spec, torch_dtype)
    _ensure_pad_token(tokenizer, model)
    embeddings = model.get_input_embeddings()
    check_token_ids(f"{spec.raw}: generation config", model.generation_config, embeddings.num_embeddings)
    kind = kind_for_config(model.config)
    tokenizer.padding_side = kind.padding_side
    model.to(target)
    model.eval()
    loaded = LoadedModel(model=model, tokenizer=tokenizer, kind=kind, spec=spec, seed=seed)
    if adapter is not None:
        attach_adapter(loaded, adapter, trainable=False)
    return loaded


def _load_hub(spec: ModelSpec, torch_dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    offline = go_offline_if_unreachable()
    try:
        return _load_dir(spec.location, torch_dtype)
    except ModelSpecError as exc:
        cause = exc.__cause__
        if not isinstance(cause, (OSError, ValueError)):
            raise
        if offline:
            raise ModelSpecError(
                f"cannot load '{spec.location}': the hub ({hub_host()}) is unreachable and it is not in the "
                "local Hugging Face cache; use a local directory, a .gguf file or smollm2-135m-instruct"
            ) from cause
        raise ModelSpecError(
            f"cannot load '{spec.location}' from the hub ({first_line(cause)[:160]}); "
            "offline, use a local directory, a .gguf file or smollm2-135m-instruct"
        ) from cause


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    # Many causal tokenizers have no pad token; EOS is the usual stand-in. Padding is
    # always masked (attention_mask, labels=-100), so its id never matters for the math.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def load_tokenizer(spec: str | ModelSpec) -> PreTrainedTokenizerBase:
    """Only the tokenizer (for ``data inspect``); builds/loads the model only when needed."""
    spec = resolve_spec(spec) if isinstance(spec, str) else spec
    if spec.source == "random":
        return byte_tokenizer(append_eos=kind_for_config(random_config(spec)).appends_eos)
    cached = _embedded_cache_path(spec) if spec.source == "embedded" else None
    if cached is not None and (cached / "config.json").is_file():
        try:
            check_model_dir(cached)
            return _dir_tokenizer(str(cached))
        except ModelSpecError as exc:  # a damaged cache: the GGUF file still has the tokenizer
            log.warning("reading the tokenizer from the GGUF file: the cached copy is unusable (%s)", exc)
    if spec.source in ("gguf", "embedded"):
        return _gguf_tokenizer(Path(spec.location))
    if spec.source == "dir":
        check_model_dir(Path(spec.location))
    else:
        go_offline_if_unreachable()
    try:
        return _dir_tokenizer(spec.location)
    except ModelSpecError as exc:
        cause = exc.__cause__ or exc
        raise ModelSpecError(f"cannot load tokenizer for '{spec.raw}': {first_line(cause)[:160]}") from cause
