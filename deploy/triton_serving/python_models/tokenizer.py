"""Triton python model `tokenizer`: texts (TYPE_STRING [1]) -> padded token ids per model input, one
row per model input (a long text read in windows gives several), and `text_index`: the text of each
row in the request, which the postprocess pools by (negative for a blank text, which gets no labels).

Uses the export's own tokenizer and the project's text pipeline (both copied next to this file by
build_repo.py), the same code as deploy/predictor, so a text gets the same ids online and offline.
"""
import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils
from paddlenlp.transformers import AutoTokenizer

import native_tokenizer  # copied beside this file by build_repo.py, as pipeline.py
import pipeline  # the project's pipeline.py, copied beside this file by build_repo.py (Triton imports from here)

HERE = Path(__file__).parent


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        input_names = [output["name"] for output in config["output"] if output["name"] != "text_index"]
        max_seq_length = int(config["parameters"]["max_seq_length"]["string_value"])
        long_text = pipeline.LongText(**json.loads(config["parameters"]["long_text"]["string_value"]))
        native_tokenizer.tokenize_on_calling_threads()
        tokenizer = AutoTokenizer.from_pretrained(str(HERE / "tokenizer"))
        self.pipeline = pipeline.TextPipeline(tokenizer, input_names, max_seq_length, long_text=long_text)

    def execute(self, requests):
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            texts = [row[0].decode("utf-8") if isinstance(row[0], bytes) else str(row[0]) for row in rows]
            encoded = self.pipeline.encode(texts)
            feed = self.pipeline.pad(encoded, list(range(len(encoded))))
            feed["text_index"] = pipeline.marked_text_index(encoded.source, pipeline.blank_texts(texts)).reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(name, array) for name, array in feed.items()]))
        return responses
