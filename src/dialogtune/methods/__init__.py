"""Fine-tuning methods, one module each: full, LoRA, DoRA, IA3, prompt tuning (all PEFT's own).

``get_method("lora")`` returns the method object that the recipe, the runner, config validation,
``params``, ``merge`` and the report ask (see :mod:`dialogtune.methods.base`). Torch-free to import.
"""

from dialogtune.methods.base import Method, count_trainable, default_settings
from dialogtune.methods.registry import (
    BUILTIN,
    all_methods,
    find_method,
    get_method,
    method_for_adapter_config,
    method_names,
    method_of_adapter,
    method_of_model,
    register,
    settings_section,
    unregister,
)

__all__ = [
    "BUILTIN",
    "Method",
    "all_methods",
    "count_trainable",
    "default_settings",
    "find_method",
    "get_method",
    "method_for_adapter_config",
    "method_names",
    "method_of_adapter",
    "method_of_model",
    "register",
    "settings_section",
    "unregister",
]
