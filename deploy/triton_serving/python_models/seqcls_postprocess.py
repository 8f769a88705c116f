"""Triton python model `seqcls_postprocess`: logits -> label names and probabilities, every row.

`label` is one string per text: the comma-joined names of the labels above their exported
threshold ("" when none is); `confidence` holds every label's probability, in label order. The
decision is the project's text pipeline (copied next to this file by build_repo.py).
"""
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

import pipeline  # the project's pipeline.py, copied beside this file by build_repo.py (Triton imports from here)

HERE = Path(__file__).parent


class TritonPythonModel:
    def initialize(self, args):
        meta = json.loads((HERE / "labels.json").read_text(encoding="utf-8"))
        self.labels = meta["labels"]
        self.thresholds = np.asarray(meta["thresholds"], dtype=np.float32)

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
            probs = pipeline.sigmoid(logits).astype(np.float32)
            names, _ = pipeline.predicted_labels(probs, self.labels, self.thresholds)
            label = np.array([[",".join(row).encode("utf-8")] for row in names], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("label", label), pb_utils.Tensor("confidence", probs)]))
        return responses
