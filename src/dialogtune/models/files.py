"""Model and adapter files, checked before (and while) the libraries read them.

transformers, PEFT, safetensors, gguf and tokenizers report a corrupt or mismatched file
with whatever their code hit first: ``JSONDecodeError``, ``SafetensorError: header too
large``, ``cannot reshape array``, a bare ``Exception`` from the tokenizers library, or
nothing at all (a model whose weights file lacks a layer loads with that layer random).
Here every such file is read first with :mod:`dialogtune.io` (JSON that parses, is an
object, is UTF-8), safetensors headers are opened (a cut-off file fails there), and what
the libraries still raise while loading is turned into one :class:`ModelSpecError` line
that names the file or folder.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dialogtune.errors import ModelSpecError, os_error_reason
from dialogtune.io import read_json_file

# JSON files transformers reads from a model folder, besides config.json; each must parse.
MODEL_JSON_FILES = (
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "chat_template.json",
    "model.safetensors.index.json",
)

# What transformers/PEFT/gguf raise on a file that is not what it claims: a scoped list for the
# loading calls below, never a catch-all around the program.
LOAD_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    RuntimeError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    struct.error,
)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type), at most 200 characters."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return (text or type(exc).__name__)[:200]


def _safetensor_error() -> type[BaseException]:
    from safetensors import SafetensorError

    return SafetensorError


@contextmanager
def loading(what: str, *, any_error: bool = False) -> Iterator[None]:
    """Turn what a library raises while loading ``what`` into one :class:`ModelSpecError` line.

    ``any_error``: also catch a bare ``Exception``, which is how the tokenizers library reports a
    ``tokenizer.json`` it cannot use ("data did not match any variant of untagged enum ...").
    """
    try:
        yield
    except ModelSpecError:
        raise
    except (*LOAD_ERRORS, _safetensor_error()) as exc:
        raise ModelSpecError(f"cannot load {what}: {first_line(exc)}") from exc
    except Exception as exc:
        if not any_error:
            raise
        raise ModelSpecError(f"cannot load {what}: {first_line(exc)}") from exc


def check_safetensors(path: Path) -> list[str]:
    """The tensor names of a safetensors file; a garbage, empty or cut-off file is one line.

    Opening reads only the header, and safetensors checks there that the file is as long as
    the header says, so a truncated download fails here rather than deep inside loading.
    """
    from safetensors import safe_open

    if path.is_dir():
        raise ModelSpecError(f"{path}: is a directory, not a file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except OSError as exc:
        raise ModelSpecError(f"{path}: cannot read ({os_error_reason(exc)})") from None
    except _safetensor_error() as exc:
        raise ModelSpecError(f"{path}: not a complete safetensors file ({first_line(exc)})") from None


def check_model_dir(folder: Path) -> dict[str, Any]:
    """Read a transformers model folder's JSON files and safetensors headers; return config.json.

    Raises:
        ModelSpecError: naming the first file that is unreadable, malformed or incomplete.
    """
    config = read_json_file(folder / "config.json", ModelSpecError)
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type.strip():
        raise ModelSpecError(f"{folder / 'config.json'}: no model_type, so this is not a transformers config")
    for name in MODEL_JSON_FILES:
        if (folder / name).exists():
            read_json_file(folder / name, ModelSpecError)
    if (folder / "generation_config.json").exists():
        generation = read_json_file(folder / "generation_config.json", ModelSpecError)
        check_token_ids(str(folder / "generation_config.json"), generation, config.get("vocab_size"))
    for weights in sorted(folder.glob("*.safetensors")):
        check_safetensors(weights)
    return config


def check_loading_info(location: str, info: dict[str, Any]) -> None:
    """Refuse a model whose weights files lack some of its parameters.

    transformers would initialise those randomly and only log a warning: the model would load
    and write plausible-looking nonsense, e.g. from a weights file of a smaller sibling model.
    """
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise ModelSpecError(
            f"{location}: the weights files lack {len(missing)} of the model's parameters ({shown}); "
            "they do not belong to this config.json"
        )


_SPECIAL_IDS = ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id")


def check_token_ids(where: str, settings: Any, vocab: Any) -> None:
    """Special-token ids (``eos_token_id``, ...) in a generation config must be ids of the vocabulary.

    ``"eos_token_id": "</s>"`` loads without complaint and fails inside ``generate``.
    ``settings``: a mapping (generation_config.json) or a ``GenerationConfig``.
    """
    for key in _SPECIAL_IDS:
        value = settings.get(key) if isinstance(settings, dict) else getattr(settings, key, None)
        for token_id in value if isinstance(value, list) else [value]:
            if token_id is None:
                continue
            is_id = isinstance(token_id, int) and not isinstance(token_id, bool) and token_id >= 0
            if not is_id or (isinstance(vocab, int) and token_id >= vocab):
                raise ModelSpecError(
                    f"{where}: {key} is {value!r}, not a token id of this model's vocabulary"
                )


def check_chat_template(tokenizer: Any, name: str) -> None:
    """A chat template that does not render fails at the first prompt; find out at load time."""
    if getattr(tokenizer, "chat_template", None):
        with loading(f"the chat template of {name}", any_error=True):
            tokenizer.apply_chat_template(
                [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
            )
