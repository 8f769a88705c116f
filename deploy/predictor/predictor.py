"""The reference's Predictor: an exported model on one backend, with printing, evaluation and timing.

The work itself (tokenizing, length-grouped batching) is the project's text pipeline (`pipeline.py`),
the labels come from the export's decision (`decision.py`), and the engines are the project's backends
(`backends.py`), shared with export_model.py and the servers.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from backends import Backend
from data_io import format_labels
from decision import Decision
from metric import MetricReport
from pipeline import EncodedRows, LengthCounts, TextPipeline
from utils import logger


class Predictor:
    """The reference's stages over one pipeline; `lengths` sums what reading the predicted texts cut or
    windowed (for the log line), the pipeline itself keeping no counts."""

    def __init__(self, pipeline: TextPipeline, backend: Backend, labels: Sequence[str], decision: Decision):
        self.pipeline = pipeline
        self.backend = backend
        self.labels = list(labels)
        self.decision = decision
        self.lengths = LengthCounts()

    def preprocess(self, texts: Sequence[str]) -> EncodedRows:
        encoded = self.pipeline.encode(texts)
        self.lengths += encoded.counts
        return encoded

    def infer_batch(self, encoded: EncodedRows) -> np.ndarray:
        return self.pipeline.outputs(self.backend, encoded)

    def postprocess(self, logits: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
        probs = self.decision.probabilities(logits)
        return probs, self.decision.label_ids(probs)

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, list[list[int]]]:
        if not texts:
            return np.zeros((0, len(self.labels)), dtype="float32"), []
        return self.postprocess(self.infer_batch(self.preprocess(texts)))

    def printer(self, texts: Sequence[str], label_ids: Sequence[Sequence[int]]) -> None:
        for text, ids in zip(texts, label_ids):
            logger.info(f"input data: {text}")
            logger.info(f"labels: {format_labels(ids, self.labels)}")
            logger.info("----------------------------")

    def evaluate(self, texts: Sequence[str], labels: np.ndarray) -> MetricReport:
        probs, _ = self.predict(texts)
        metric = MetricReport(decision=self.decision, label_names=self.labels)
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
