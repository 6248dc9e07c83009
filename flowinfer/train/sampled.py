"""Sampled training: steps of a loss that draws its own samples, a smoothed monitored loss."""

from __future__ import annotations

import math
import statistics
import time
from collections import deque

import torch

from flowinfer.train.optim import make_scheduler, progress
from flowinfer.train.run import Run
from flowinfer.train.state import FitResult

__all__ = ["run_sampled"]

_MAX_RECOVERIES = 5
# Weight of the newest step in the moving average of the monitored loss (about 50 steps):
# long enough to average out the Monte Carlo noise of one batch.
_SMOOTHING = 0.02
# Until the average holds this much weight (about 35 steps), the latest step counts as the
# best: an average of a handful of steps is not comparable with later ones.
_MIN_WEIGHT = 0.5
# A step's value enters the average clipped to the median of the last _RECENT values
# +- _CLIP_SDS robust sds (1.4826 MAD): one heavy-tailed estimate (a draw in a guide's far
# tail, 1e6 among values of 30) must not hold the average up for hundreds of steps and stop
# the run as "not improving".
_RECENT = 50
_CLIP_SDS = 10.0


def _clip(value: float, recent: deque[float]) -> float:
    if len(recent) < 5:
        return value
    centre = statistics.median(recent)
    spread = 1.4826 * statistics.median(abs(r - centre) for r in recent)
    if spread <= 0:
        return value
    return min(max(value, centre - _CLIP_SDS * spread), centre + _CLIP_SDS * spread)


def run_sampled(run: Run, steps: int, eval_every: int, on_non_finite: str,
            seed: int | None) -> FitResult:
    if seed is not None:
        torch.manual_seed(seed)
    loss_obj = run.loss_obj
    monitor = loss_obj.monitor if loss_obj is not None else "loss"
    scheduler = make_scheduler(run.optimizer, run.schedule, steps,
                               max(2, (run.patience or 20) // 4))
    history: dict[str, list[float]] = {"loss": []}
    run.result.history = history
    smoothed = weight_sum = 0.0
    recent: deque[float] = deque(maxlen=_RECENT)
    was_settled, best_at_window, since_best, recoveries = False, None, 0, 0
    window: list[float] = []
    start = time.perf_counter()
    run._train(True)
    bar = progress(range(steps), run.progress_bar, total=steps, desc=run.desc)
    try:
        for step in bar:
            if loss_obj is not None:
                loss_obj.begin_step(step)
            settled = loss_obj.settled if loss_obj is not None else True
            if settled and not was_settled and step > 0:
                smoothed = weight_sum = 0.0  # the running loss counts settled steps only
                recent.clear()
            was_settled = settled
            value = run.loss(None)
            loss_value = float(value.detach())
            metrics = loss_obj.metrics() if loss_obj is not None else {}
            watched = metrics.get(monitor, loss_value)
            # Bias-corrected moving average (the first values are not pulled to zero) of the
            # value, clipped to a robust band around the recent values.
            if math.isfinite(watched):
                clipped = _clip(watched, recent)
                recent.append(watched)
                smoothed = (1 - _SMOOTHING) * smoothed + _SMOOTHING * clipped
                weight_sum = (1 - _SMOOTHING) * weight_sum + _SMOOTHING
            running = smoothed / weight_sum if weight_sum else math.nan
            history["loss"].append(loss_value)
            for key, v in metrics.items():
                history.setdefault(key, []).append(v)
            history.setdefault("smoothed_loss", []).append(running)
            bad = None
            if not math.isfinite(loss_value):
                bad = (loss_value, "loss")
            else:
                grad_norm = run._step(value)
                if not math.isfinite(grad_norm):
                    bad = (grad_norm, "gradient norm")
            if bad is not None:
                if on_non_finite == "recover" and recoveries < _MAX_RECOVERIES:
                    recoveries += 1
                    run.best.restore()
                    for group in run.optimizer.param_groups:
                        group["lr"] *= 0.5
                    run.optimizer.state.clear()
                    history.setdefault("recovered_at", []).append(float(step))
                    continue
                run._stop_non_finite(bad[0], bad[1], step)
                break
            run.optimizer.step()
            if run.schedule == "cosine":
                scheduler.step()
            if settled:
                if weight_sum < _MIN_WEIGHT:
                    run.best.loss = math.inf  # until then, the latest step is the best
                run.best.update(running, step)
            if step % 50 == 0 and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{running if settled else loss_value:.4f}")
            info = {"loss": loss_value, **metrics, "smoothed_loss": running,
                    "lr": run.optimizer.param_groups[0]["lr"], "modules": run.modules}
            if run.callback is not None and run.callback(step, info):
                run.result.stop_reason = "early_stopping"
                run.result.message = f"stopped by the callback at step {step}"
                run.result.best_epoch, run.result.best_loss = step, running
                break
            window.append(running)
            if len(window) == eval_every:
                if run.schedule == "plateau":
                    scheduler.step(sum(window) / len(window))
                window.clear()
                since_best = 0 if run.best.step != best_at_window else since_best + 1
                best_at_window = run.best.step
                if run.patience is not None and since_best >= run.patience:
                    run.result.stop_reason = "early_stopping"
                    run.result.message = (
                        f"stopped early at step {step}: the smoothed {monitor} has not "
                        f"improved for {run.patience} windows of {eval_every} steps")
                    run.result.best_epoch, run.result.best_loss = step, running
                    break
        else:
            run.result.best_epoch, run.result.best_loss = steps - 1, running
    finally:
        run._train(False)
        if hasattr(bar, "close"):
            bar.close()
    if recoveries:
        run.result.message = (f"{run.result.message}; " if run.result.message else "") + (
            f"recovered from {recoveries} non-finite step(s) by restoring the best "
            "parameters and halving the learning rate")
    return run._finish(start, f"best smoothed {monitor} {run.best.loss:.4f} at step "
                               f"{run.best.step} (its parameters are restored)")
