"""Triton python model `seqcls_postprocess`: logits -> label names and probabilities, every row.

`label` is one string per text: the comma-joined names of the labels above their exported
threshold ("" when none is); `confidence` holds every label's probability, in label order.
"""
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        meta = json.loads((Path(__file__).parent / "labels.json").read_text(encoding="utf-8"))
        self.labels = meta["labels"]
        self.thresholds = np.asarray(meta["thresholds"], dtype=np.float32)

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
            probs = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
            names = [",".join(label for label, chosen in zip(self.labels, row) if chosen)
                     for row in probs > self.thresholds]
            label = np.array([[name.encode("utf-8")] for name in names], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("label", label), pb_utils.Tensor("confidence", probs)]))
        return responses
