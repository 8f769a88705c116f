"""Triton python model `seqcls_model`: the export's model.onnx run by ONNX Runtime on CPU.

The stand-in for the `onnxruntime_onnx` platform where Triton has no ONNX Runtime backend (the
nvidia-pytriton server ships only the python backend); same inputs, same `logits` output.
"""
import json
import os
from pathlib import Path

import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_names = [item["name"] for item in config["input"]]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(config["parameters"]["intra_op_thread_count"]["string_value"]) \
            or os.cpu_count()
        self.session = ort.InferenceSession(str(Path(__file__).parent / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for request in requests:
            feed = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names}
            logits = self.session.run(["logits"], feed)[0]
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("logits", logits)]))
        return responses
