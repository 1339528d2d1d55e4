"""The search space: training-config keys and the distributions their values are drawn from.

```yaml
space:
  training.learning_rate: {log_uniform: [1.0e-4, 3.0e-3]}   # floats, uniform in log space
  training.warmup_steps: {uniform: [0.0, 0.1]}              # floats
  training.grad_accum: {int: [1, 4]}                        # integers, both ends included
  lora.r: {choice: [8, 16, 32]}                             # any YAML values, lists too
  lora.target_modules: {choice: [[q_proj, v_proj], all-linear]}
```

Keys are dotted training-config keys (nested mappings mean the same: ``lora: {r: {choice: ...}}``).
Each :class:`Param` maps onto one Optuna distribution; choices that Optuna cannot store (lists,
mappings) are stored under a label (their JSON text) and decoded back here, so a trial's params
always turn into the exact YAML values of the training config.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dialogtune.errors import ConfigError

KINDS = ("choice", "uniform", "log_uniform", "int")
_SCALAR = (type(None), bool, int, float, str)  # what Optuna's CategoricalDistribution stores


@dataclass(frozen=True)
class Param:
    """One searched key: ``kind`` is choice, uniform, log_uniform or int."""

    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    @property
    def labels(self) -> tuple[Any, ...]:
        """The choices as Optuna stores them: the values themselves when all are scalars, else JSON."""
        if all(isinstance(c, _SCALAR) for c in self.choices):
            return self.choices
        return tuple(json.dumps(c, separators=(",", ":")) for c in self.choices)

    def distribution(self) -> Any:
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "choice":
            return CategoricalDistribution(self.labels)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high))
        return FloatDistribution(self.low, self.high, log=self.kind == "log_uniform")

    def suggest(self, trial: Any) -> Any:
        """Draw this key's value for an Optuna trial (the decoded config value)."""
        if self.kind == "choice":
            return self.decode(trial.suggest_categorical(self.key, list(self.labels)))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "log_uniform")

    def decode(self, stored: Any) -> Any:
        """The config value of what Optuna stored for this key."""
        if self.kind != "choice":
            return stored
        for label, value in zip(self.labels, self.choices, strict=True):
            if label == stored and type(label) is type(stored):
                return value
        if isinstance(stored, str) and not all(isinstance(c, _SCALAR) for c in self.choices):
            try:  # a label written with other JSON spacing
                parsed = json.loads(stored)
            except ValueError:
                parsed = None
            for value in self.choices:
                if _same(value, parsed):
                    return value
        raise ConfigError(f"space.{self.key}: the study holds {stored!r}, which is not one of its choices")

    def encode(self, value: Any) -> Any:
        """What Optuna stores for config value ``value`` (checked against the distribution)."""
        if self.kind == "choice":
            for label, choice in zip(self.labels, self.choices, strict=True):
                if _same(choice, value):
                    return label
            raise ConfigError(f"{value!r} is not one of the choices of space.{self.key}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"space.{self.key} takes numbers, got {value!r}")
        if self.kind == "int" and not isinstance(value, int):
            raise ConfigError(f"space.{self.key} takes integers, got {value!r}")
        if not self.low <= value <= self.high:
            raise ConfigError(f"{value!r} is outside space.{self.key} [{self.low:g}, {self.high:g}]")
        return value

    def probes(self) -> list[Any]:
        """Values that must all make a valid training config: every choice, or both ends."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]

    def spec(self) -> dict[str, Any]:
        """The distribution as written in a sweep file (saved with the study to detect changes)."""
        if self.kind == "choice":
            return {"choice": list(self.choices)}
        return {self.kind: [self.low, self.high]}


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) and type(a) is type(b)


def parse_space(raw: Any) -> list[Param]:
    """The searched keys of a sweep file's ``space`` mapping, each checked on its own terms.

    Every problem is a one-line :class:`ConfigError` naming ``space.<key>``.
    """
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise ConfigError(f"space must be a mapping of config keys to distributions, got {raw!r}")
    params: dict[str, Param] = {}
    for key, spec in _flatten(raw).items():
        params[key] = _param(key, spec)  # a later spelling of the same key (--set) wins
    return list(params.values())


def _flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{lora: {r: {choice: [..]}}}`` -> ``{"lora.r": {choice: [..]}}``; a mapping whose values
    are all mappings is a section, anything else is one key's distribution."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            if set(value) & set(KINDS):  # {choice: {a: 1}}: a distribution with a bad value
                flat[path] = value
            else:
                flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _param(key: str, spec: Any) -> Param:
    where = f"space.{key}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(
            f"{where} must be one distribution, e.g. {{choice: [8, 16]}} or {{log_uniform: [1e-4, 1e-2]}} "
            f"(fixed values go in set:), got {spec!r}"
        )
    ((kind, values),) = spec.items()
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown distribution '{kind}' (use one of {', '.join(KINDS)})")
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: choice needs a non-empty list of values, got {values!r}")
        texts = [json.dumps(v, sort_keys=True) for v in values]
        if len(set(texts)) != len(texts):
            raise ConfigError(f"{where}: choice lists a value twice: {values!r}")
        return Param(key, kind, choices=tuple(values))
    if (
        not isinstance(values, list)
        or len(values) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values)
    ):
        raise ConfigError(f"{where}: {kind} needs [low, high] (two numbers), got {values!r}")
    low, high = values
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"{where}: {kind} bounds must be finite, got {values!r}")
    if kind == "int" and not (isinstance(low, int) and isinstance(high, int)):
        raise ConfigError(f"{where}: int needs integer bounds, got {values!r}")
    if low >= high:
        raise ConfigError(f"{where}: low must be below high, got [{low}, {high}]")
    if kind == "log_uniform" and low <= 0:
        raise ConfigError(f"{where}: log_uniform needs low > 0 (a log scale), got [{low}, {high}]")
    if kind != "int":
        low, high = float(low), float(high)
    return Param(key, kind, low=low, high=high)


def check_against(params: list[Param], build: Callable[[dict[str, Any]], Any]) -> None:
    """Build a training config with every probe value of every key (``build`` raises
    :class:`ConfigError`): an unknown key or a value the config refuses fails here, before any
    trial, with one line naming ``space.<key>``."""
    for param in params:
        for value in param.probes():
            try:
                build({param.key: value})
            except ConfigError as exc:
                message = str(exc)
                if message.startswith("unknown key"):
                    raise ConfigError(f"space.{param.key}: {message}") from None
                raise ConfigError(
                    f"space.{param.key}: the value {value!r} does not make a valid training config ({message})"
                ) from None


def short_names(keys: list[str]) -> dict[str, str]:
    """Display names: the last part of each key where that is unambiguous (``learning_rate``)."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


def format_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
