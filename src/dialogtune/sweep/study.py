"""The study: its storage, its identity, and what happens to trials whose worker died.

The study storage is the truth: trials are numbered by it, so two workers never train into the
same folder. A trial whose worker died is failed and queued again with the same values (a new
number and folder): at once when the dead process ran on this machine (the runner checks), after
``grace_seconds`` without a heartbeat otherwise (Optuna's heartbeat, set up here).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from dialogtune.errors import ConfigError
from dialogtune.experiments.config import flatten
from dialogtune.ownership import output_kind, remove_tree
from dialogtune.sweep.config import SweepConfig

TRIALS = "trials"
IDENTITY = "dialogtune_sweep"  # study user attribute: what the study searches, to refuse a mix-up


def trial_folder(out: Path, number: int) -> Path:
    return out / TRIALS / f"trial-{number:04d}"


def masked(url: str) -> str:
    """The storage URL without its password (for logs and reports)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported by the storage itself
        return url.split("@")[-1]


def open_study(config: SweepConfig, url: str, out: Path, fixed: dict[str, Any]) -> Any:
    """Create or load the study named ``config.name`` in ``url``, checking it searches the same
    space (``fixed``: the resolved training config without trial values)."""
    import optuna

    study = optuna.create_study(
        study_name=config.name,
        storage=_storage(config, url, out),
        direction=config.objective.direction,
        pruner=config.pruner.build(),
        load_if_exists=True,
    )
    identity = _identity(config, fixed)
    # Look for trial folders before reading the identity: a worker records it before any trial.
    has_trials = any((out / TRIALS).glob("trial-*"))
    saved = study.user_attrs.get(IDENTITY)
    if saved is None:
        if has_trials:
            raise ConfigError(
                f"{out / TRIALS} holds trials of another study (the study '{config.name}' in "
                f"{masked(url)} is new); choose another output_dir or storage (nothing was deleted)"
            )
        study.set_user_attr(IDENTITY, identity)
    elif saved != identity:
        changed = [key for key in identity if saved.get(key) != identity[key]]
        raise ConfigError(
            f"the study '{config.name}' in {masked(url)} was started with another sweep (changed: "
            f"{', '.join(changed)}); keep the sweep file as it was, or give a new name or storage"
        )
    # Its own random stream for each worker and each rerun: trials already in the study shift the seed.
    study.sampler = config.sampler.build(offset=len(study.get_trials(deepcopy=False)))
    by_key = {p.key: p for p in config.params}
    for entry in config.start_with:
        fixed = {key: by_key[key].encode(value) for key, value in flatten(entry).items()}
        study.enqueue_trial(fixed, user_attrs={"start_with": True}, skip_if_exists=True)
    return study


def _identity(config: SweepConfig, fixed: dict[str, Any]) -> dict[str, Any]:
    """What makes trials comparable: the space, the objective and every fixed training setting
    (paths excepted: other machines may keep the data elsewhere)."""
    fixed = {key: value for key, value in fixed.items() if key != "output_dir"}
    fixed["data"] = {key: value for key, value in fixed["data"].items() if key != "source"}
    return json.loads(
        json.dumps(
            {
                "space": config.space,
                "objective": {"metric": config.objective.metric, "direction": config.objective.direction},
                "budget": {"steps": config.budget.steps, "minutes": config.budget.minutes},
                "fixed": fixed,
            },
            default=str,
        )
    )


def _storage(config: SweepConfig, url: str, out: Path) -> Any:
    import sqlalchemy.exc
    from optuna.storages import RDBStorage

    # SQLite: wait for a lock held by another worker instead of failing after 5 s.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(5):
        try:
            return RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=config.heartbeat_seconds,
                grace_period=config.grace_seconds,
                heartbeat_stale_trial_callback=RetryDeadTrial(out, remove_folder=False),
            )
        except sqlalchemy.exc.OperationalError as exc:
            # Two workers creating a new database's tables at once: the later one finds them made.
            if "already exists" not in str(exc) or attempt == 4:
                raise ConfigError(f"storage {masked(url)}: {str(exc).strip().splitlines()[0]}") from None
            time.sleep(0.5)
        except ImportError as exc:
            raise ConfigError(
                f"storage {masked(url)}: its database driver is missing ({exc}); e.g. pip install psycopg2-binary"
            ) from None
        except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"storage {masked(url)}: {first}") from None
    raise AssertionError("unreachable")


class RetryDeadTrial:
    """Queue a dead trial's values again (Optuna's retry callback, at most twice). A trial whose
    process is known dead leaves a half-written run folder: it is removed (the retry trains in a
    folder of its own). A trial failed for a missing heartbeat may belong to a slow worker still
    writing, so its folder is left alone."""

    def __init__(self, out: Path, *, remove_folder: bool) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        self.out = out
        self.remove_folder = remove_folder
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=2)

    def __call__(self, study: Any, trial: Any) -> None:
        self.retry(study, trial)
        if self.remove_folder:
            remove_unfinished(trial_folder(self.out, trial.number))


def remove_unfinished(folder: Path) -> None:
    """Remove a trial's half-written training run (never a finished one, nor anything not ours)."""
    if folder.is_dir() and output_kind(folder) in ("train", None) and not (folder / "metadata.json").exists():
        remove_tree(folder)
