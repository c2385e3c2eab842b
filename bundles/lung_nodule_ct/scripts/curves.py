"""Training-curve handler: a CSV row per epoch and a PNG of loss and validation Dice."""

from __future__ import annotations

import csv
import os
from typing import Any

__all__ = ["MetricsCurveHandler"]


class MetricsCurveHandler:
    """Record mean training loss per epoch and validation metrics; write CSV and PNG.

    Attach to the trainer (``attach(trainer)``); the validator's ``state.metrics`` are read
    after each validation run (the validator must be run by a ``ValidationHandler`` attached
    before this handler, so that its metrics are fresh at ``EPOCH_COMPLETED``).
    """

    def __init__(
        self, validator: Any, output_dir: str, metric_names: list[str], val_interval: int
    ) -> None:
        self.validator = validator
        self.val_interval = int(val_interval)
        self.output_dir = output_dir
        self.metric_names = list(metric_names)
        self.csv_path = os.path.join(output_dir, "metrics.csv")
        self.png_path = os.path.join(output_dir, "training_curve.png")
        self._losses: list[float] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def _iteration(self, engine: Any) -> None:
        out = engine.state.output
        items = out if isinstance(out, list) else [out]
        self._losses.append(float(items[0]["loss"]))

    def _epoch(self, engine: Any) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        loss = sum(self._losses) / max(len(self._losses), 1)
        self._losses = []
        vstate = self.validator.state
        fresh = engine.state.epoch % self.val_interval == 0 and bool(vstate.metrics)
        row: dict[str, Any] = {"epoch": engine.state.epoch, "iteration": engine.state.iteration}
        row["loss"] = f"{loss:.5f}"
        lr = engine.optimizer.param_groups[0]["lr"] if hasattr(engine, "optimizer") else ""
        row["lr"] = f"{lr:.6g}" if lr != "" else ""
        for name in self.metric_names:
            value = vstate.metrics.get(name) if fresh else None
            row[name] = f"{float(value):.5f}" if value is not None else ""
        new = not os.path.exists(self.csv_path)
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        if fresh:
            self._plot()

    def _plot(self) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:  # plotting is optional; the CSV is the record
            return
        with open(self.csv_path, encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        ep = [int(r["epoch"]) for r in rows]
        loss = [float(r["loss"]) for r in rows]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        a1.plot(ep, loss)
        a1.set_xlabel("epoch")
        a1.set_ylabel("train loss (DiceCE)")
        for name in self.metric_names:
            pts = [(int(r["epoch"]), float(r[name])) for r in rows if r.get(name)]
            if pts:
                a2.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=name)
        a2.set_xlabel("epoch")
        a2.set_ylabel("validation Dice")
        a2.set_ylim(0, 1)
        a2.legend()
        fig.tight_layout()
        fig.savefig(self.png_path, dpi=80)
        plt.close(fig)
