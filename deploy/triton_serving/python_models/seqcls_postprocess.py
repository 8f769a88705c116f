"""Triton python model `seqcls_postprocess`: logits per model input -> labels per text.

The rows of one text (the windows of a long text, `text_index` from the tokenizer) are pooled as the
export says first.

`label` (label ids) and `confidence` (their probabilities) are the reference's outputs; a batch's
rows are padded to its longest with id -1 and probability 0.0. `label_names` holds one string per
text, the comma-joined names ("" when no label is chosen, and for a blank text, whose probabilities are
0); `probs` every label's probability (calibrated when the export is). The labels are chosen by the export's decision
(thresholds, label-count policy, calibration): the project's decision.py, copied next to this file with
pipeline.py by build_repo.py, so Triton decides as every other consumer does.
"""
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

import decision  # the project's decision.py and pipeline.py, copied beside this file by build_repo.py
import pipeline

HERE = Path(__file__).parent


class TritonPythonModel:
    def initialize(self, args):
        meta = json.loads((HERE / "labels.json").read_text(encoding="utf-8"))
        self.labels = meta["labels"]
        self.decision = decision.Decision.stored(meta["thresholds"], meta.get(decision.CONFIG_KEY), len(self.labels))
        self.pooling = meta["window_pooling"]

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
            source, blank = pipeline.unmarked_text_index(
                pb_utils.get_input_tensor_by_name(request, "text_index").as_numpy())
            logits = pipeline.pool_rows(logits, source, len(blank), self.pooling)
            probs = np.where(blank[:, None], 0.0, self.decision.probabilities(logits)).astype(np.float32)
            ids = [[] if is_blank else row for row, is_blank in zip(self.decision.label_ids(probs), blank)]
            names = [[self.labels[j] for j in row] for row in ids]
            width = max(len(row) for row in ids)
            label = np.full((len(ids), width), -1, dtype=np.int64)
            confidence = np.zeros((len(ids), width), dtype=np.float32)
            for i, row in enumerate(ids):
                label[i, :len(row)] = row
                confidence[i, :len(row)] = probs[i, row]
            label_names = np.array([[",".join(row).encode("utf-8")] for row in names], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("label", label), pb_utils.Tensor("confidence", confidence),
                pb_utils.Tensor("label_names", label_names), pb_utils.Tensor("probs", probs)]))
        return responses
