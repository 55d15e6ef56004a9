"""The plateau advice of a run, from its run-store rows: GET /api/runs/{id}/advice, the
page's banner and the `alexnet_plateau_epochs` gauge. The rule and its defaults are
trainer.runstore.advice's, the ones `trainer train --lr-policy plateau` acts on."""

from __future__ import annotations

from trainer import runstore
from trainer.runstore import RunStore
from trainer.runstore.advice import (LR_FACTOR, MAX_DROPS, PLATEAU_PATIENCE, PLATEAU_THRESHOLD, Plateau, PlateauRule,
                                     plateau)

from .schemas import Advice

MAX_VALIDATIONS = 100_000  # far above any run's epoch count: the whole series, never downsampled


def _number(config: dict, key: str, default, kind):
    value = config.get(key, default)
    return kind(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def rule_of(config: dict) -> PlateauRule:
    """The run's own plateau parameters; the defaults where it stores none (other policies,
    older runs) or nonsense."""
    try:
        return PlateauRule(_number(config, "patience", PLATEAU_PATIENCE, int),
                           _number(config, "plateau_threshold", PLATEAU_THRESHOLD, float))
    except ValueError:
        return PlateauRule()


def state_of(store: RunStore, run: dict) -> tuple[Plateau, PlateauRule, list[dict]]:
    rid = run["id"]
    series = [(r["step"], r["epoch"], r["value"]) for r in
              store.metric_series(rid, runstore.VAL_TOP1, max_points=MAX_VALIDATIONS) if r["value"] is not None]
    changes = store.events(rid, kinds=["lr_change"], limit=MAX_VALIDATIONS)
    divisions = [e for e in changes if _lower(e["payload"])]
    rule = rule_of(run["config"])
    return plateau(series, [e["step"] for e in divisions if e["step"] is not None], rule), rule, divisions


def _lower(payload: dict) -> bool:
    old, new = payload.get("old_lr"), payload.get("new_lr")
    return isinstance(old, (int, float)) and isinstance(new, (int, float)) and new < old


def plateau_epochs(store: RunStore, run: dict) -> int:
    return state_of(store, run)[0].flat


def advice(store: RunStore, run: dict) -> Advice:
    state, rule, divisions = state_of(store, run)
    config = run["config"]
    policy = config.get("lr_policy", "manual")
    factor = _number(config, "lr_factor", LR_FACTOR, float)
    due = state.due(rule) and run["status"] == "running"
    last_division = max((e["step"] for e in divisions if e["step"] is not None), default=None)
    suggestion = None
    if due:
        suggestion = (f"top-1 error flat for {state.flat} epochs (best {100 * state.best:.1f} % at epoch "
                      f"{state.best_epoch:g}): divide the learning rate by {factor:g}?")
    return Advice(run_id=run["id"], policy=policy, patience=rule.patience, threshold=rule.threshold,
                  flat_epochs=state.flat, best=state.best, best_epoch=state.best_epoch,
                  since=state.best_epoch, last_division_step=last_division, due=due, suggestion=suggestion,
                  policy_acts=_policy_acts(config, policy, state, rule, divisions, run))


def _policy_acts(config: dict, policy: str, state: Plateau, rule: PlateauRule, divisions: list[dict],
                 run: dict) -> str | None:
    """When the run's own policy will divide the LR, if it will."""
    if policy not in ("plateau", "step") or run["status"] != "running":
        return None
    own = sum(1 for e in divisions if str(e["payload"].get("reason", "")).startswith(policy + ":"))
    if own >= _number(config, "max_drops", MAX_DROPS, int):
        return None
    epoch = int(run["epoch"])
    if policy == "step":
        every = _number(config, "step_epochs", 30, int)
        return f"the step policy divides the LR at the end of epoch {(epoch // every + 1) * every}" if every > 0 else None
    every = max(1, _number(config, "val_every", 1, int))
    left = max(1, rule.patience - state.flat)
    return (f"the plateau policy divides the LR itself after {left} more flat validation"
            f"{'s' if left > 1 else ''} (at the end of epoch {epoch + left * every} at the earliest)")
