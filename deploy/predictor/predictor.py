"""The reference's Predictor: an exported model on one backend, with printing, evaluation and timing.

The work itself (tokenizing, length-sorted batching, the backends, cached INT8/FP16 models) lives
in the project's `inference.py`, shared with export_model.py and the servers.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.special import expit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from inference import Backend, ExportInfo, TextPipeline  # noqa: E402
from metric import MetricReport  # noqa: E402
from utils import format_labels, logger  # noqa: E402


class Predictor:
    def __init__(self, export: ExportInfo, backend: Backend, tokenizer, max_seq_length: int, batch_size: int,
                 thresholds: np.ndarray):
        self.export = export
        self.backend = backend
        self.pipeline = TextPipeline(export, tokenizer, max_seq_length, batch_size)
        self.thresholds = thresholds

    def preprocess(self, texts: Sequence[str]) -> dict[str, list[list[int]]]:
        return self.pipeline.encode(texts)

    def infer_batch(self, encoded: dict[str, list[list[int]]]) -> np.ndarray:
        return self.pipeline.logits(self.backend, encoded)

    def postprocess(self, logits: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
        probs = expit(logits)
        return probs, [np.flatnonzero(row > self.thresholds).tolist() for row in probs]

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, list[list[int]]]:
        if not texts:
            return np.zeros((0, len(self.export.labels)), dtype="float32"), []
        return self.postprocess(self.infer_batch(self.preprocess(texts)))

    def printer(self, texts: Sequence[str], label_ids: Sequence[Sequence[int]]) -> None:
        for text, ids in zip(texts, label_ids):
            logger.info(f"input data: {text}")
            logger.info(f"labels: {format_labels(ids, self.export.labels)}")
            logger.info("----------------------------")

    def evaluate(self, texts: Sequence[str], labels: np.ndarray) -> MetricReport:
        probs, _ = self.predict(texts)
        metric = MetricReport(thresholds=self.thresholds, label_names=self.export.labels)
        metric.update(probs, labels)
        micro_f1, macro_f1 = metric.accumulate()
        logger.info("micro f1: %.2f, macro f1: %.2f" % (micro_f1 * 100, macro_f1 * 100))
        return metric

    def performance(self, texts: Sequence[str]) -> None:
        """The reference's latency line (model time only), then the end-to-end rate with tokenization."""
        start = time.perf_counter()
        encoded = self.preprocess(texts)
        tokenized = time.perf_counter()
        self.infer_batch(encoded)
        end = time.perf_counter()
        logger.info("sample nums: %s, time: %.2f, latency: %.2f ms" % (
            len(texts), end - tokenized, 1000 * (end - tokenized) / len(texts)))
        logger.info("with tokenization: %.2f s, %.1f samples/s" % (end - start, len(texts) / (end - start)))
