"""The registry of inference engines that run an exported model: ONNX Runtime, Paddle Inference,
OpenVINO.

Each backend is one class here that declares the devices and precisions it offers and imports its
engine only when it is created, so scripts that never run an export (training, prediction on the
dygraph model) never load ONNX Runtime, OpenVINO or NNCF. Derived models (INT8, FP16) are built
once and cached next to the export by `exporting.cached`, never redone at start-up.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from itertools import islice
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import paddle

from data_io import iter_examples
from exporting import OUTPUT_NAME, ExportInfo, cached, ensure_onnx, paddle_model_files
from utils import DataError, logger

# Cached derived models, next to model.onnx.
ONNX_INT8_FILE = "int8_model.onnx"
ONNX_FP16_FILE = "fp16_model.onnx"
OPENVINO_INT8_FILE = "openvino_int8.xml"
CALIBRATION_SIZE = 300  # texts used to calibrate OpenVINO INT8 activations

CalibrationFeeds = Callable[[], list[dict]]


class Backend:
    """One loaded model variant: `run(feed)` maps input arrays to logits [batch, labels].

    Subclasses set `name` and `precisions` (device -> precisions offered there, in the order the
    parity table lists them) and load their engine in `__init__`.
    """

    name: ClassVar[str]
    precisions: ClassVar[dict[str, tuple[str, ...]]]

    def __init__(self, export: ExportInfo, precision: str, device: str, device_id: int, num_threads: int,
                 calibration_feeds: CalibrationFeeds | None):
        self.precision = precision

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    @property
    def label(self) -> str:
        return f"{self.name} {self.precision}"


BACKENDS: dict[str, type[Backend]] = {}


def register(cls: type[Backend]) -> type[Backend]:
    BACKENDS[cls.name] = cls
    return cls


@register
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    precisions = {"cpu": ("fp32", "int8"), "gpu": ("fp32", "fp16")}

    def __init__(self, export, precision, device, device_id, num_threads, calibration_feeds):
        super().__init__(export, precision, device, device_id, num_threads, calibration_feeds)
        import onnxruntime as ort

        onnx_file = ensure_onnx(export.model_prefix, export.directory)
        if precision == "int8":
            onnx_file = cached(export.directory / ONNX_INT8_FILE, onnx_file,
                               lambda out: quantize_onnx_int8(onnx_file, out), "ONNX Runtime INT8 model")
        elif precision == "fp16":
            onnx_file = cached(export.directory / ONNX_FP16_FILE, onnx_file,
                               lambda out: convert_onnx_fp16(onnx_file, out), "ONNX FP16 model")
        options = ort.SessionOptions()
        if device == "gpu":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise DataError("ONNX Runtime has no CUDA provider: uninstall onnxruntime and install "
                                "onnxruntime-gpu (keep only one of the two), or use --device cpu")
            providers = [("CUDAExecutionProvider", {"device_id": device_id})]
        else:
            options.intra_op_num_threads = num_threads
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(onnx_file), options, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feed):
        return self.session.run([OUTPUT_NAME], {name: feed[name] for name in self.input_names})[0]


@register
class PaddleInferenceBackend(Backend):
    name = "paddle"
    precisions = {"cpu": ("fp32", "bf16"), "gpu": ("fp32", "fp16")}

    def __init__(self, export, precision, device, device_id, num_threads, calibration_feeds):
        super().__init__(export, precision, device, device_id, num_threads, calibration_feeds)
        graph_file, params_file = paddle_model_files(export.model_prefix)
        config = paddle.inference.Config(str(graph_file), str(params_file))
        if device == "gpu":
            gpu_precision = (paddle.inference.PrecisionType.Half if precision == "fp16"
                             else paddle.inference.PrecisionType.Float32)
            config.enable_use_gpu(100, device_id, gpu_precision)
        else:
            config.disable_gpu()
            config.enable_mkldnn()
            config.set_mkldnn_cache_capacity(32)  # one compiled kernel set per input shape, bounded
            if precision == "bf16":
                config.enable_mkldnn_bfloat16()
            config.set_cpu_math_library_num_threads(num_threads)
        config.disable_glog_info()
        self.predictor = paddle.inference.create_predictor(config)
        self.input_names = self.predictor.get_input_names()

    def run(self, feed):
        for name in self.input_names:
            self.predictor.get_input_handle(name).copy_from_cpu(feed[name])
        self.predictor.run()
        return self.predictor.get_output_handle(self.predictor.get_output_names()[0]).copy_to_cpu()


@register
class OpenVinoBackend(Backend):
    """OpenVINO on CPU: uses AVX-512 BF16 / VNNI (and AMX where present) for bf16 and int8."""

    name = "openvino"
    precisions = {"cpu": ("fp32", "bf16", "int8")}

    def __init__(self, export, precision, device, device_id, num_threads, calibration_feeds):
        super().__init__(export, precision, device, device_id, num_threads, calibration_feeds)
        import openvino as ov

        model_file = onnx_file = ensure_onnx(export.model_prefix, export.directory)
        if precision == "int8":
            if calibration_feeds is None:
                raise DataError("OpenVINO INT8 needs calibration texts to build its model the first time")
            model_file = cached(export.directory / OPENVINO_INT8_FILE, onnx_file,
                                lambda out: quantize_openvino_int8(onnx_file, out, calibration_feeds()),
                                "OpenVINO INT8 model")
        hint = "bf16" if precision == "bf16" else "f32"  # int8 models keep their other ops in f32
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(model_file)), "CPU", {
            "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": num_threads, "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]

    def run(self, feed):
        return self.request.infer({name: feed[name] for name in self.input_names})[0].copy()


def variants(device: str) -> list[tuple[str, str]]:
    """The (backend, precision) pairs that exist on `device`, in registry order."""
    return [(name, precision) for name, cls in BACKENDS.items() for precision in cls.precisions.get(device, ())]


def check_variant(backend: str, precision: str, device: str) -> None:
    """Refuse a combination that does not exist, naming the ones that do."""
    if (backend, precision) in variants(device):
        return
    if backend not in BACKENDS:
        raise DataError(f"unknown backend {backend!r}; registered backends: {', '.join(BACKENDS)}")
    elsewhere = [f"--backend {name} on {dev}" for name, cls in BACKENDS.items()
                 for dev, offered in cls.precisions.items() if precision in offered]
    hint = (f"{precision} runs with " + ", ".join(elsewhere)) if elsewhere else f"no backend offers {precision}"
    options = ", ".join(f"--backend {b} ({p})" for b, p in variants(device))
    raise DataError(f"--backend {backend} with {precision} on {device} is not available: {hint}. "
                    f"Available on {device}: {options}")


def calibration_texts(dataset: Path, input_file: Path) -> list[str]:
    """Texts for INT8 calibration: the start of the training file if present, else of the input file.

    Read only when an INT8 model is built for the first time.
    """
    source = dataset / "train.txt" if (dataset / "train.txt").is_file() else input_file
    texts = [example.text for example in islice(iter_examples(source), CALIBRATION_SIZE)]
    logger.info(f"Calibrating INT8 on {len(texts)} texts of {source}")
    return texts


def create_backend(export: ExportInfo, backend: str, precision: str, device: str = "cpu", device_id: int = 0,
                   num_threads: int = 1, calibration_feeds: CalibrationFeeds | None = None) -> Backend:
    """Load one variant of the export, building (once) the derived model it needs."""
    check_variant(backend, precision, device)
    logger.info(f">>> [InferBackend] Creating Engine ({backend} {precision} on {device}) ...")
    engine = BACKENDS[backend](export, precision, device, device_id, num_threads, calibration_feeds)
    logger.info(">>> [InferBackend] Engine Created ...")
    return engine


# --------------------------------------------------------------------------- derived models


def quantize_onnx_int8(source: Path, target: Path) -> None:
    """Dynamic INT8 (weights per tensor, activations at run time): no calibration data needed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # the quantizer logs one INFO line per tensor
    try:
        prepared = target.with_name("prepared.onnx")
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8)
        prepared.unlink()
    finally:
        quiet.setLevel(level)


def convert_onnx_fp16(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(target))


def quantize_openvino_int8(source: Path, target: Path, calibration_feeds: list[dict]) -> None:
    """Static INT8 with NNCF (transformer preset: smooth-quant, attention kept accurate)."""
    import nncf
    import openvino as ov

    logging.getLogger("nncf").setLevel(logging.WARNING)
    model = ov.Core().read_model(str(source))
    with contextlib.redirect_stdout(sys.stderr):  # NNCF draws progress bars on stdout, which is for results
        quantized = nncf.quantize(model, nncf.Dataset(calibration_feeds), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(calibration_feeds))
    ov.save_model(quantized, str(target))
