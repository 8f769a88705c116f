"""The retrieval route's encoder, its checkpoint and its training loss: texts and label names in one space.

retrieval_based/ classifies a text by the corpus entries (label names, or labelled training texts)
nearest to it, so a label can be added without retraining. One ERNIE encodes both sides (shared
weights, as the reference): its pooled [CLS] output, optionally projected to `output_emb_size`,
then dropout and L2 normalisation, so the dot product of two embeddings is their cosine similarity.

The checkpoint is the reference's `model_state.pdparams` (the whole layer: `ptm.*` and
`emb_reduce_linear.*`) with the encoder's config, the tokenizer and `semantic_index.json` beside it,
so every script reads the projection width from the checkpoint instead of an option that must be
repeated (the reference's defaults disagree between scripts and silently drop a trained projection).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import paddle
import paddle.nn.functional as F

from backends import Backend, create_backend
from decision import Decision
from exporting import ExportInfo, export_static_graph
from modeling import from_pretrained, load_tokenizer, model_input_names, model_inputs
from pipeline import Runner, TextPipeline
from utils import DataError, logger

CHECKPOINT_FILE = "model_state.pdparams"
SETTINGS_FILE = "semantic_index.json"
EXPORT_PREFIX = "inference.get_pooled_embedding"  # the reference's file names for the deployed encoder
FALSE_NEGATIVE = -1e4  # a logit the softmax gives no weight


class SemanticIndexModel(paddle.nn.Layer):
    """ERNIE's pooled output -> optional projection -> dropout -> L2 normalisation."""

    def __init__(self, encoder: paddle.nn.Layer, output_emb_size: int = 0, dropout: float = 0.1):
        super().__init__()
        self.ptm = encoder
        self.output_emb_size = output_emb_size
        if output_emb_size > 0:
            init = paddle.ParamAttr(initializer=paddle.nn.initializer.TruncatedNormal(std=0.02))
            self.emb_reduce_linear = paddle.nn.Linear(encoder.config.hidden_size, output_emb_size, weight_attr=init)
        self.dropout = paddle.nn.Dropout(dropout)

    @property
    def embedding_size(self) -> int:
        return self.output_emb_size or self.ptm.config.hidden_size

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        pooled = self.ptm(**inputs)[1]
        if self.output_emb_size > 0:
            pooled = self.emb_reduce_linear(pooled)
        return F.normalize(self.dropout(pooled), axis=-1)


class PairEncoder(paddle.nn.Layer):
    """Both sides of a batch of (text, label name) pairs in one forward call (DataParallel expects one
    per step): the texts, and each distinct label name of the batch once, then gathered per pair.
    Label names are a few tokens: padded apart from the texts and embedded once per batch instead of
    once per pair, they add little to the texts' cost (padded together, every name cost a full text)."""

    def __init__(self, model: SemanticIndexModel, pad_token_id: int):
        super().__init__()
        self.model = model
        self.pad_token_id = pad_token_id

    def forward(self, texts: dict, names: dict, name_of_pair: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        queries = self.model(**model_inputs(texts, self.pad_token_id))
        return queries, paddle.gather(self.model(**model_inputs(names, self.pad_token_id)), name_of_pair)


def in_batch_negative_loss(queries: paddle.Tensor, positives: paddle.Tensor, margin: float, scale: float,
                           not_negative: paddle.Tensor | None = None) -> paddle.Tensor:
    """Mean over i of -log softmax_j(scale * (S_ij - margin * [i == j]))_i with S = queries . positivesᵀ.

    Every other pair's positive is a negative for query i, except where `not_negative[i, j]` is True:
    the positive of pair j is also one of query i's labels (the same label, or the same text with
    another label), which the reference counted as a negative.
    """
    similarities = paddle.matmul(queries, positives, transpose_y=True)
    size = similarities.shape[0]
    logits = scale * (similarities - margin * paddle.eye(size, dtype=similarities.dtype))
    if not_negative is not None:
        logits = paddle.where(not_negative, paddle.full_like(logits, FALSE_NEGATIVE), logits)
    return F.cross_entropy(logits, paddle.arange(size, dtype="int64"))


def not_negative_mask(pair_texts: Sequence[int], pair_labels: Sequence[int], text_labels: Sequence[set[int]]
                      ) -> np.ndarray:
    """[i, j] True when j != i and the label of pair j is one of the labels of pair i's text."""
    mask = np.array([[label in text_labels[text] for label in pair_labels] for text in pair_texts], dtype=bool)
    np.fill_diagonal(mask, False)
    return mask


class EmbeddingRunner:
    """The model behind the pipeline's Runner interface: one normalised embedding per row."""

    def __init__(self, model: SemanticIndexModel, pad_token_id: int):
        self.model = model
        self.pad_token_id = pad_token_id

    @paddle.no_grad()
    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        inputs = model_inputs({name: paddle.to_tensor(array) for name, array in feed.items()}, self.pad_token_id)
        return self.model(**inputs).numpy()


def embed(model: SemanticIndexModel, pipeline: TextPipeline, texts: Sequence[str]) -> np.ndarray:
    """Embeddings [texts, embedding_size] in input order, in eval mode; the model's mode is restored
    afterwards (the reference left dropout off for the rest of training after its first evaluation)."""
    was_training = model.training
    model.eval()
    vectors = pipeline.outputs(EmbeddingRunner(model, pipeline.tokenizer.pad_token_id), pipeline.encode(texts))
    if was_training:
        model.train()
    if not len(texts):
        return np.zeros((0, model.embedding_size), dtype="float32")
    return vectors.astype("float32")


def embedding_pipeline(tokenizer, max_seq_length: int, batch_size: int) -> TextPipeline:
    return TextPipeline(tokenizer, model_input_names(tokenizer), max_seq_length, batch_size)


def checkpoint_file(params_path: str | os.PathLike) -> Path:
    """`--params_path` as the reference gives it (the .pdparams file) or as its directory."""
    path = Path(params_path)
    path = path / CHECKPOINT_FILE if path.is_dir() else path
    if not path.is_file():
        raise DataError(f"Please set --params_path with correct pretrained model file ({params_path} does not exist)")
    return path


def encoder_fingerprint(params_path: str | os.PathLike) -> str:
    """The identity of a trained encoder (the sha256 of its weights file), stored in every index built
    with it, so that an index is never searched with vectors of another model."""
    return file_digest(checkpoint_file(params_path))[:16]


def file_digest(path: str | os.PathLike) -> str:
    """The sha256 of a file, read in blocks (weights and vector files are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as content:
        for block in iter(lambda: content.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_semantic_checkpoint(model: SemanticIndexModel, tokenizer, directory: str | os.PathLike) -> Path:
    """The reference's model_state.pdparams, plus what loading it needs without options: the encoder's
    config, the tokenizer and the projection width."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paddle.save(model.state_dict(), str(directory / CHECKPOINT_FILE))
    model.ptm.config.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    (directory / SETTINGS_FILE).write_text(json.dumps({"output_emb_size": model.output_emb_size}) + "\n",
                                           encoding="utf-8")
    return directory / CHECKPOINT_FILE


def load_semantic_model(params_path: str | os.PathLike, model_name_or_path: str,
                        output_emb_size: int | None = None) -> tuple[SemanticIndexModel, object]:
    """(model in eval mode, tokenizer) of a trained checkpoint.

    A checkpoint written by this suite carries its encoder config, tokenizer and projection width; a
    bare .pdparams (the reference's) is loaded into `model_name_or_path` with `output_emb_size`
    (0 when not given). A projection present on one side only is an error, not a silent 768-d model.
    """
    from paddlenlp.transformers import AutoConfig, AutoModel

    weights_file = checkpoint_file(params_path)
    directory = weights_file.parent
    settings_file = directory / SETTINGS_FILE
    if settings_file.is_file():
        stored = json.loads(settings_file.read_text(encoding="utf-8"))["output_emb_size"]
        if output_emb_size is not None and output_emb_size != stored:
            raise DataError(f"--output_emb_size {output_emb_size} differs from the checkpoint's {stored} "
                            f"({settings_file}); leave it out to use the checkpoint's")
        encoder = AutoModel.from_config(AutoConfig.from_pretrained(str(directory)))
        tokenizer = load_tokenizer(str(directory))
        output_emb_size = stored
    else:
        encoder = from_pretrained(AutoModel.from_pretrained, model_name_or_path)
        tokenizer = load_tokenizer(model_name_or_path)
        output_emb_size = output_emb_size or 0
    model = SemanticIndexModel(encoder, output_emb_size)
    state = paddle.load(str(weights_file))
    projected = any(key.startswith("emb_reduce_linear.") for key in state)
    if projected != (output_emb_size > 0):
        raise DataError(f"{weights_file} was trained {'with' if projected else 'without'} a projection "
                        f"(output_emb_size {'> 0' if projected else '0'}), but output_emb_size is {output_emb_size}")
    missing, unexpected = model.set_state_dict(state)
    if missing or unexpected:
        raise DataError(f"{weights_file} does not fit the encoder: missing {missing[:3]}, unexpected {unexpected[:3]}")
    logger.info("Loaded parameters from %s" % weights_file)
    model.eval()
    return model, tokenizer


def export_encoder(model: SemanticIndexModel, tokenizer, output: str | os.PathLike, encoder: str) -> Path:
    """The encoder as a static graph (`inference.get_pooled_embedding.*`, the reference's names) with
    its tokenizer and semantic_index.json (width, input names and the encoder's fingerprint, which
    indexes built from its vectors are checked against)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    input_names = list(model_input_names(tokenizer))
    model.eval()
    export_static_graph(model, output / EXPORT_PREFIX, input_names)
    tokenizer.save_pretrained(str(output))
    (output / SETTINGS_FILE).write_text(json.dumps(
        {"output_emb_size": model.output_emb_size, "embedding_size": model.embedding_size, "encoder": encoder,
         "input_names": input_names}) + "\n", encoding="utf-8")
    return output / EXPORT_PREFIX


@dataclass
class EncoderExport:
    """An exported encoder loaded for inference: its engine, tokenizer and settings."""

    engine: Backend
    tokenizer: object
    embedding_size: int
    encoder: str

    def embed(self, texts: Sequence[str], max_seq_length: int, batch_size: int, runner: Runner | None = None
              ) -> np.ndarray:
        """Embeddings [texts, embedding_size] in input order, the batches run by `runner` (a server's
        runner shared between its requests), by default the engine."""
        pipeline = embedding_pipeline(self.tokenizer, max_seq_length, batch_size)
        if not len(texts):
            return np.zeros((0, self.embedding_size), dtype="float32")
        return pipeline.outputs(runner or self.engine, pipeline.encode(texts)).astype("float32")


def check_predictor_options(device: str, use_tensorrt: bool) -> None:
    """The reference's Paddle Inference options this suite cannot honour are errors, not ignored."""
    if use_tensorrt:
        raise DataError("--use_tensorrt True: TensorRT is not supported by this suite's Paddle Inference engine")
    if device == "xpu":
        raise DataError("--device xpu is not supported here; use cpu or gpu")


def is_encoder_export(directory: str | os.PathLike) -> bool:
    return (Path(directory) / SETTINGS_FILE).is_file() and Path(f"{Path(directory) / EXPORT_PREFIX}.pdiparams").is_file()


def load_encoder_export(directory: str | os.PathLike, device: str, precision: str = "fp32", num_threads: int = 1,
                        tokenizer_name: str | None = None, device_id: int = 0) -> EncoderExport:
    """Paddle Inference over an export_model.py directory (tokenizer from the directory, else `tokenizer_name`)."""
    directory = Path(directory)
    settings_file = directory / SETTINGS_FILE
    if not settings_file.is_file():
        raise DataError(f"--model_dir {directory}: no {SETTINGS_FILE} (export the encoder with "
                        f"retrieval_based/export_model.py)")
    settings = json.loads(settings_file.read_text(encoding="utf-8"))
    info = ExportInfo(directory, directory / EXPORT_PREFIX, [], Decision(np.zeros(0, dtype="float32")),
                      settings["input_names"])
    engine = create_backend(info, "paddle", precision, device, device_id, num_threads)
    has_tokenizer = (directory / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(str(directory) if has_tokenizer or tokenizer_name is None else tokenizer_name)
    return EncoderExport(engine, tokenizer, settings["embedding_size"], settings["encoder"])
