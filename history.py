"""The metrics history of a training run: every logged step and every evaluation as a row of
`metrics_history.csv`, `training_curves.png` drawn from it at the end, and the same scalars in
VisualDL (the Paddle ecosystem's tracker) with `--visualdl`.

The CSV is appended as the run goes (a crashed run keeps its rows); a resumed run first cuts it back
to the rows that existed when its state was saved, so the file reads as one uninterrupted run.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from utils import logger

HISTORY_FILE = "metrics_history.csv"
CURVES_FILE = "training_curves.png"
VISUALDL_DIR = "visualdl"
EVAL_METRICS = ("micro_f1", "macro_f1")  # a classifier's; masked-LM pretraining logs its accuracy instead
COLUMNS = ["global_step", "epoch", "batch", "loss", "learning_rate", "eval_loss", *EVAL_METRICS]


class TrainingHistory:
    """Rows of the history; only the main process writes (`enabled`). `metrics` names what each
    evaluation measures besides its loss (the columns after eval_loss). A TrainingLoop callback: every
    logged step (`on_log`) and every evaluation (`on_epoch_end`, after training.DevEvaluation) is a row."""

    def __init__(self, save_dir: str | os.PathLike, enabled: bool = True, keep_rows: int = 0,
                 visualdl: bool = False, metrics: tuple[str, ...] = EVAL_METRICS):
        self.path = Path(save_dir, HISTORY_FILE)
        self.metrics = metrics
        self.columns = COLUMNS[:COLUMNS.index("eval_loss") + 1] + list(metrics)
        self.enabled = enabled
        self.rows = 0
        self.writer = None
        if not enabled:
            return
        kept = self.read()[:keep_rows]
        with open(self.path, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, self.columns)
            writer.writeheader()
            writer.writerows(kept)
        self.rows = len(kept)
        if visualdl:
            from visualdl import LogWriter  # optional tracker: imported only when asked for

            self.writer = LogWriter(logdir=str(Path(save_dir, VISUALDL_DIR)))

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="", encoding="utf-8") as file:
            return list(csv.DictReader(file))

    def _append(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="", encoding="utf-8") as file:
            csv.DictWriter(file, self.columns).writerow(row)
        self.rows += 1
        if self.writer:
            for name in self.columns[3:]:
                if row.get(name) is not None:
                    self.writer.add_scalar(("train/" if name in ("loss", "learning_rate") else "eval/") + name,
                                           row[name], row["global_step"])

    def log_step(self, state) -> None:
        self._append({"global_step": state.global_step, "epoch": state.epoch, "batch": state.step,
                      "loss": float(state.loss), "learning_rate": state.lr})

    def log_eval(self, state, eval_loss: float, *values: float) -> None:
        """One evaluation: its loss and the value of each of `metrics`, in order."""
        self._append({"global_step": state.global_step, "epoch": state.epoch, "batch": state.step,
                      "eval_loss": eval_loss, **dict(zip(self.metrics, values, strict=True))})

    def on_log(self, state) -> None:
        self.log_step(state)

    def on_epoch_end(self, state) -> bool:
        figures = state.metrics
        self.log_eval(state, figures["eval_loss"], figures["micro_f1"], figures["macro_f1"])
        return False

    def close(self) -> Path | None:
        """Draw the curves (loss, learning rate, dev F1 against the optimizer step); returns the PNG."""
        if self.writer:
            self.writer.close()
        if not self.enabled:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.read()
        steps = [row for row in rows if row["loss"]]
        evals = [row for row in rows if row["eval_loss"]]
        figure, axes = plt.subplots(1, 3, figsize=(15, 4))
        for axis, title, series in (
                (axes[0], "training loss", [(steps, "loss", "loss")] + [(evals, "eval_loss", "dev loss")]),
                (axes[1], "learning rate", [(steps, "learning_rate", "learning rate")]),
                (axes[2], "dev " + ", ".join(self.metrics), [(evals, name, name) for name in self.metrics])):
            for subset, column, label in series:
                axis.plot([int(row["global_step"]) for row in subset], [float(row[column]) for row in subset],
                          marker="o" if subset is evals else None, label=label)
            axis.set_title(title)
            axis.set_xlabel("global step")
            axis.legend()
        figure.tight_layout()
        curves = self.path.with_name(CURVES_FILE)
        figure.savefig(curves, dpi=100)
        plt.close(figure)
        logger.info(f"Metrics history in {self.path}, curves in {curves}")
        return curves
