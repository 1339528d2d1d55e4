"""The sweep file: a base training config, the keys to search, the objective and the budget.

```yaml
name: smollm2-cpu                            # the study's name (and its folder: runs/sweeps/NAME)
base: ../configs/smollm2-lora-cpu.yaml       # a training config, relative to this file
set: {training.max_steps: 60}                # fixed overrides for every trial
space:                                       # see dialogtune.sweep.space
  training.learning_rate: {log_uniform: [1.0e-4, 3.0e-3]}
  lora.r: {choice: [8, 16, 32]}
objective: {metric: rouge1, direction: maximize}   # eval_rouge1 from the ROUGE probe; or loss
trials: 12                                   # finished (complete or pruned) trials to reach
budget: {steps: 60}                          # and/or {minutes: 10} per trial
pruner: {kind: median, warmup_evaluations: 1}
sampler: {kind: tpe, seed: 0}
```

Every key is documented in docs/sweeps.md. Problems are one-line :class:`ConfigError` s naming the
key; the search space is also checked against the training config (:func:`check_sweep`).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dialogtune.config import apply_set, build, flatten, read_yaml_file
from dialogtune.errors import ConfigError
from dialogtune.sweep.space import Param, check_against, parse_space
from dialogtune.training.config import ROUGE_METRICS, TrainConfig, load_config

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # the study name is also a folder name
# Keys the sweep decides itself for every trial.
_MANAGED = ("output_dir",)


@dataclass
class Objective:
    """What a trial is judged by: its last evaluation's ``eval_<metric>``."""

    metric: str = field(default="rouge1", metadata={"help": "loss, rouge1, rouge2, rougeL or rougeLsum"})
    direction: str | None = field(
        default=None, metadata={"help": "maximize (ROUGE) or minimize (loss); follows the metric"}
    )

    def __post_init__(self) -> None:
        if self.metric not in ("loss", *ROUGE_METRICS):
            raise ConfigError(
                f"objective.metric must be loss or one of {', '.join(ROUGE_METRICS)}, got '{self.metric}'"
            )
        natural = "minimize" if self.metric == "loss" else "maximize"
        if self.direction is None:
            self.direction = natural
        elif self.direction not in ("maximize", "minimize"):
            raise ConfigError(f"objective.direction must be maximize or minimize, got '{self.direction}'")
        elif self.direction != natural:
            raise ConfigError(f"objective.direction: {self.metric} is to {natural}, not {self.direction}")

    @property
    def eval_key(self) -> str:
        return f"eval_{self.metric}"


@dataclass
class Budget:
    """How long one trial may train: optimizer steps and/or wall-clock minutes."""

    steps: int | None = field(default=None, metadata={"help": "sets training.max_steps for every trial"})
    minutes: float | None = field(
        default=None, metadata={"help": "stop training after this long; a last evaluation then counts"}
    )

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"budget.steps must be a positive integer, got {self.steps}")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"budget.minutes must be positive, got {self.minutes}")


@dataclass
class PrunerSettings:
    """Stopping unpromising trials early, judged at each evaluation of the objective."""

    kind: str = field(default="median", metadata={"help": "median, successive_halving or none"})
    warmup_evaluations: int = field(
        default=1, metadata={"help": "evaluations (after step 0) a trial makes before it can be pruned"}
    )
    startup_trials: int = field(
        default=3, metadata={"help": "median: finished trials before any trial is pruned"}
    )
    reduction_factor: int = field(
        default=3, metadata={"help": "successive_halving: keep the best 1/N at each rung"}
    )
    min_resource: int | None = field(
        default=None, metadata={"help": "successive_halving: steps of the first rung (null: Optuna's auto)"}
    )

    def __post_init__(self) -> None:
        if self.kind not in ("median", "successive_halving", "none"):
            raise ConfigError(f"pruner.kind must be median, successive_halving or none, got '{self.kind}'")
        for key in ("warmup_evaluations", "startup_trials"):
            if getattr(self, key) < 0:
                raise ConfigError(f"pruner.{key} must be >= 0, got {getattr(self, key)}")
        if self.reduction_factor < 2:
            raise ConfigError(f"pruner.reduction_factor must be >= 2, got {self.reduction_factor}")
        if self.min_resource is not None and self.min_resource < 1:
            raise ConfigError(f"pruner.min_resource must be a positive integer, got {self.min_resource}")

    def build(self) -> Any:
        import optuna

        if self.kind == "median":
            # Warm-up is counted in evaluations by the trial callback, not in Optuna's steps.
            return optuna.pruners.MedianPruner(n_startup_trials=self.startup_trials, n_warmup_steps=0)
        if self.kind == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(
                min_resource=self.min_resource or "auto", reduction_factor=self.reduction_factor
            )
        return optuna.pruners.NopPruner()


@dataclass
class SamplerSettings:
    """How the next trial's values are chosen."""

    kind: str = field(default="tpe", metadata={"help": "tpe or random"})
    seed: int | None = field(default=0, metadata={"help": "seed of the sampler (null: not reproducible)"})
    startup_trials: int = field(
        default=10, metadata={"help": "tpe: random trials before TPE models the results"}
    )

    def __post_init__(self) -> None:
        if self.kind not in ("tpe", "random"):
            raise ConfigError(f"sampler.kind must be tpe or random, got '{self.kind}'")
        if self.startup_trials < 0:
            raise ConfigError(f"sampler.startup_trials must be >= 0, got {self.startup_trials}")

    def build(self, offset: int = 0) -> Any:
        """The sampler; ``offset`` (trials already in the study) gives a resumed or added worker
        its own random stream, so it does not repeat the values a first worker drew."""
        import optuna

        seed = None if self.seed is None else self.seed + offset
        if self.kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        # multivariate: learning rate and rank interact; constant_liar: workers running at the
        # same time do not all pick the point the finished trials favour.
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=self.startup_trials, multivariate=True, constant_liar=True
        )


@dataclass
class SweepConfig:
    """A whole hyper-parameter search (``dialogtune sweep SWEEP.yaml``)."""

    name: str = "sweep"
    base: str = field(default="", metadata={"help": "training config path, relative to the sweep file"})
    set: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "{dotted.key: value} for every trial"}
    )
    space: dict[str, Any] = field(default_factory=dict, metadata={"help": "{dotted.key: distribution}"})
    objective: Objective = field(default_factory=Objective)
    trials: int = field(default=20, metadata={"help": "finished (complete or pruned) trials to reach"})
    budget: Budget = field(default_factory=Budget)
    pruner: PrunerSettings = field(default_factory=PrunerSettings)
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    start_with: list[dict[str, Any]] = field(
        default_factory=list, metadata={"help": "trials to run first, {dotted.key: value} (e.g. the base's)"}
    )
    output_dir: str | None = field(default=None, metadata={"help": "default: runs/sweeps/NAME (cwd)"})
    storage: str | None = field(
        default=None, metadata={"help": "Optuna RDB URL (default: sqlite in output_dir; --storage wins)"}
    )
    isolate: bool = field(default=True, metadata={"help": "train each trial in a fresh process"})
    max_failures: int = field(
        default=5, metadata={"help": "stop when this many trials failed (diverged, crashed)"}
    )
    heartbeat_seconds: int = field(
        default=30, metadata={"help": "a running trial records a heartbeat this often"}
    )
    grace_seconds: int = field(
        default=300, metadata={"help": "a trial silent this long is failed and retried (its process died)"}
    )
    base_dir: str = field(default=".", metadata={"help": "set to the sweep file's folder on load"})

    def __post_init__(self) -> None:
        if not _NAME_RE.fullmatch(str(self.name)):
            raise ConfigError(f"name must be letters, digits, '.', '_' or '-', got {self.name!r}")
        if not str(self.base).strip():
            raise ConfigError("base must name a training config (a YAML path relative to the sweep file)")
        if not isinstance(self.set, dict):
            raise ConfigError(f"set must be a mapping of dotted config keys to values, got {self.set!r}")
        self.set = flatten(self.set)
        self.params: list[Param] = parse_space(self.space)
        if not self.params:
            raise ConfigError("space is empty: name at least one config key to search")
        self.space = {p.key: p.spec() for p in self.params}
        keys = {p.key for p in self.params}
        for key in _MANAGED:
            if key in self.set or key in keys:
                raise ConfigError(f"{key} is chosen by the sweep for each trial; remove it from set/space")
        both = sorted(keys & set(self.set))
        if both:
            raise ConfigError(f"{both[0]} is both fixed (set) and searched (space); keep one")
        if self.budget.steps is not None and "training.max_steps" in (keys | set(self.set)):
            raise ConfigError(
                "budget.steps sets training.max_steps; remove training.max_steps from set/space"
            )
        for key, value in (("trials", self.trials), ("max_failures", self.max_failures)):
            if value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value}")
        if self.heartbeat_seconds < 1 or self.grace_seconds <= self.heartbeat_seconds:
            raise ConfigError("heartbeat_seconds must be >= 1 and grace_seconds larger than it")
        by_key = {p.key: p for p in self.params}
        for i, entry in enumerate(self.start_with):
            if not isinstance(entry, dict):
                raise ConfigError(f"start_with[{i}] must be a mapping of space keys to values")
            for key, value in flatten(entry).items():
                if key not in by_key:
                    raise ConfigError(f"start_with[{i}]: {key} is not a key of space")
                try:
                    by_key[key].encode(value)
                except ConfigError as exc:
                    raise ConfigError(f"start_with[{i}]: {exc}") from None

    @property
    def sweep_dir(self) -> Path:
        return Path(self.output_dir or f"runs/sweeps/{self.name}").expanduser().resolve()

    def base_path(self) -> Path:
        """The base training config: relative to the sweep file, else to the working directory."""
        for candidate in (Path(self.base_dir) / self.base, Path(self.base)):
            if candidate.expanduser().is_file():
                return candidate.expanduser().resolve()
        raise ConfigError(
            f"base: training config not found: {self.base} (looked in {self.base_dir} and the cwd)"
        )

    def overrides(self, params: dict[str, Any], output_dir: str | Path) -> list[str]:
        """The ``--set`` list of one trial: ``set``, the budget, the trial's values, its folder."""
        values = {**self.set, **params, "output_dir": str(output_dir)}
        if self.budget.steps is not None:
            values["training.max_steps"] = self.budget.steps
        return [f"{key}={json.dumps(value)}" for key, value in values.items()]

    def trial_config(self, params: dict[str, Any], output_dir: str | Path) -> TrainConfig:
        return load_config(self.base_path(), self.overrides(params, output_dir))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_sweep(config: SweepConfig) -> TrainConfig:
    """Check the sweep against its base training config; returns the config without trial values.

    Every searched key must exist and accept each of its probe values (each choice, both ends),
    and the trials must evaluate the objective.
    """
    placeholder = config.sweep_dir / "trials" / "check"
    fixed = config.trial_config({}, placeholder)
    check_against(config.params, lambda values: config.trial_config(values, placeholder))
    where = f"objective.metric {config.objective.metric}"
    if not fixed.eval.enabled:
        raise ConfigError(f"{where} needs evaluations: set eval.strategy (steps or epoch) in base or set")
    if config.objective.metric != "loss" and fixed.eval.rouge_dialogues < 1:
        raise ConfigError(f"{where} needs the ROUGE probe: set eval.rouge_dialogues >= 1 in base or set")
    return fixed


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """Read a sweep file, apply ``--set`` overrides (``trials=30``, ``sampler.seed=1``,
    ``set.training.max_steps=100``, ``space.lora.r={choice: [8, 16]}``) and validate it."""
    file = Path(path)
    raw = read_yaml_file(file, "sweep file")  # a deep copy that --set may change
    for item in overrides or []:
        apply_set(raw, item)
    if "base_dir" in raw:
        raise ConfigError("unknown key base_dir (it is set from the sweep file's location)")
    raw["base_dir"] = str(file.resolve().parent)
    return build(SweepConfig, raw)
