"""Triton python model `tokenizer`: texts (TYPE_STRING [1]) -> padded token ids per model input.

Uses the export's own tokenizer (copied next to this file by build_repo.py), the same call as
deploy/predictor, so a text gets the same ids online and offline.
"""
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from paddlenlp.transformers import AutoTokenizer


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.max_seq_length = int(config["parameters"]["max_seq_length"]["string_value"])
        self.output_names = [output["name"] for output in config["output"]]
        self.tokenizer = AutoTokenizer.from_pretrained(str(Path(__file__).parent / "tokenizer"))

    def execute(self, requests):
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            texts = [row[0].decode("utf-8") if isinstance(row[0], bytes) else str(row[0]) for row in rows]
            encoded = self.tokenizer(texts, max_length=self.max_seq_length, truncation=True)
            width = max(len(ids) for ids in encoded["input_ids"])
            outputs = []
            for name in self.output_names:
                pad = self.tokenizer.pad_token_id if name == "input_ids" else 0
                array = np.full((len(texts), width), pad, dtype=np.int64)
                for i, ids in enumerate(encoded[name]):
                    array[i, :len(ids)] = ids
                outputs.append(pb_utils.Tensor(name, array))
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
