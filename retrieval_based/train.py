"""Train the semantic-index encoder with in-batch negatives, evaluating by recall after every epoch.

Same command line and log lines as PaddleNLP's retrieval_based/train.py. train.txt is the suite's
format (`text<TAB>label,label`; the reference's one label per line is the same format); each
(text, label) pair is one training pair, and a pair whose label is also one of the other query's
labels is not used as its negative. Evaluation recalls the dev texts from the corpus (label names,
or with `--recall_mode text` the training texts) and scores the suite's multi-label micro/macro F1;
the best macro F1 is saved in `save_dir/model_best` with the encoder config, the tokenizer and the
projection width.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

import argparse
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import paddle
import paddle.distributed as dist
from paddlenlp.transformers import AutoModel, LinearDecayWithWarmup

from cli import (
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    PROBABILITY,
    SEED,
    SEQ_LENGTH,
    ArgumentParser,
    true_or_false,
)
from data_io import Example, load_examples, multi_hot, read_label_list
from metric import MetricReport
from modeling import from_pretrained, load_tokenizer
from retrieval import (
    RECALL_MODES,
    build_index,
    check_label_names,
    label_corpus,
    label_scores,
    recall,
    text_corpus,
    write_recall_file,
)
from semantic_index import (
    PairEncoder,
    SemanticIndexModel,
    embedding_pipeline,
    encoder_fingerprint,
    in_batch_negative_loss,
    not_negative_mask,
    save_semantic_checkpoint,
)
from training import StepState, TrainBatches, TrainingLoop, build_optimizer
from utils import DataError, logger, run_cli, set_device, set_seed, write_text_atomic
from vector_index import HnswIndex, IndexInfo

# yapf: disable
parser = ArgumentParser(description=__doc__)
parser.add_argument("--save_dir", default='./checkpoint', type=str, help="The output directory where the model checkpoints will be written.")
parser.add_argument("--max_seq_length", default=512, type=SEQ_LENGTH, help="The maximum total input sequence length after tokenization. Sequences longer than that will be truncated.")
parser.add_argument("--batch_size", default=32, type=POSITIVE_INT, help="Batch size per GPU/CPU for training.")
parser.add_argument("--output_emb_size", default=256, type=NON_NEGATIVE_INT, help="Width of the linear projection of the pooled output (0: no projection); saved with the checkpoint.")
parser.add_argument("--learning_rate", default=5E-5, type=NON_NEGATIVE_FLOAT, help="The initial learning rate for Adam.")
parser.add_argument("--weight_decay", default=0.0, type=NON_NEGATIVE_FLOAT, help="Weight decay if we apply some.")
parser.add_argument("--epochs", default=10, type=POSITIVE_INT, help="Total number of training epochs to perform.")
parser.add_argument("--warmup_proportion", default=0.0, type=NON_NEGATIVE_FLOAT, help="Linear warmup proportion over the training process.")
parser.add_argument("--init_from_ckpt", type=str, default=None, help="The path of checkpoint to be loaded.")
parser.add_argument("--seed", type=SEED, default=1000, help="Random seed for initialization.")
parser.add_argument('--device', choices=['cpu', 'gpu'], default="cpu", help="Select which device to train model, defaults to cpu.")
parser.add_argument('--save_steps', type=POSITIVE_INT, default=10000, help="Interval steps to save checkpoint (with --evaluate False).")
parser.add_argument('--log_steps', type=POSITIVE_INT, default=10, help="Interval steps to print log.")
parser.add_argument("--train_set_file", type=str, default='./data/train.txt', help="The full path of train_set_file.")
parser.add_argument("--margin", default=0.2, type=NON_NEGATIVE_FLOAT, help="Margin subtracted from the positive pair's similarity.")
parser.add_argument("--scale", default=30, type=POSITIVE_INT, help="Scale applied to the similarities before the softmax.")
parser.add_argument("--corpus_file", type=str, default='./data/label.txt', help="The label file: the corpus of --recall_mode label and the label vocabulary.")
parser.add_argument("--similar_text_pair_file", type=str, default='./data/dev.txt', help="The dev file (text<TAB>label,label) recalled to evaluate.")
parser.add_argument("--recall_result_dir", type=str, default='./recall_result_dir', help="The directory of the recall result file.")
parser.add_argument("--recall_result_file", type=str, default='recall_result_init.txt', help="The recall result file.")
parser.add_argument("--recall_num", default=50, type=POSITIVE_INT, help="Number of nearest corpus entries recalled per text.")
parser.add_argument("--hnsw_m", default=100, type=POSITIVE_INT, help="hnswlib's M (links per node).")
parser.add_argument("--hnsw_ef", default=100, type=POSITIVE_INT, help="hnswlib's ef, at construction and search.")
parser.add_argument("--hnsw_max_elements", default=1000000, type=POSITIVE_INT, help="The most entries the hnswlib index holds.")
parser.add_argument("--evaluate_result", type=str, default='evaluate_result.txt', help="Where the best evaluation is written (in --save_dir).")
parser.add_argument("--evaluate", default=True, type=true_or_false, help="Evaluate by recall after every epoch and keep the best model (True/False).")
parser.add_argument("--model_name_or_path", default='rocketqa-zh-dureader-query-encoder', type=str, help="The pretrained encoder: a reference name (downloaded when online) or a local model directory, e.g. one made by scratch_model.py.")
parser.add_argument("--threshold", default=0.5, type=PROBABILITY, help="A label is predicted when its recall score is above this.")
parser.add_argument("--recall_mode", default="label", choices=RECALL_MODES, help="label: index the label names (the reference); text: index the labelled training texts, whose neighbours vote their labels.")
# yapf: enable


class PairData:
    """The training pairs: distinct texts, label names, and per pair its text and its label."""

    def __init__(self, train_file: str, labels: list[str]):
        self.examples = examples = load_examples(train_file, labels)
        text_ids: dict[str, int] = {}
        self.text_labels: list[set[int]] = []
        for example in examples:
            index = text_ids.setdefault(example.text, len(text_ids))
            if index == len(self.text_labels):
                self.text_labels.append(set())
            self.text_labels[index].update(example.labels)
        self.texts = list(text_ids)
        self.pairs = np.array([(text, label) for text, names in enumerate(self.text_labels) for label in sorted(names)],
                              dtype="int64").reshape(-1, 2)
        if not len(self.pairs):
            raise DataError(f"{train_file}: no line has a label; the encoder learns from (text, label) pairs")
        logger.info(f"Training pairs: {len(self.pairs)} from {len(self.texts)} texts and {len(labels)} labels")


def pair_batches(data: PairData, pipeline, labels: list[str], args, rank: int, world_size: int) -> TrainBatches:
    """Batches of pairs: the texts, the batch's distinct label names (each side padded to its own
    length: label names are a few tokens), which name each pair has, and the not-negative mask."""
    text_rows, label_rows = pipeline.encode(data.texts), pipeline.encode(labels)
    lengths = [len(text_rows.features["input_ids"][text]) for text in data.pairs[:, 0]]

    def collate(batch: list[int]) -> dict:
        pairs = data.pairs[batch]
        names, name_of_pair = np.unique(pairs[:, 1], return_inverse=True)
        mask = not_negative_mask(pairs[:, 0], pairs[:, 1], data.text_labels)
        return {"texts": tensors(pipeline.pad(text_rows, pairs[:, 0].tolist())),
                "names": tensors(pipeline.pad(label_rows, names.tolist())),
                "name_of_pair": paddle.to_tensor(name_of_pair.astype("int64")), "not_negative": paddle.to_tensor(mask)}

    return TrainBatches(lengths, args.batch_size, collate, args.seed, world_size, rank)


def tensors(feed: dict[str, np.ndarray]) -> dict[str, paddle.Tensor]:
    return {name: paddle.to_tensor(array) for name, array in feed.items()}


def evaluate(model: SemanticIndexModel, pipeline, labels: list[str], data: PairData, dev_texts: list[str],
             gold: np.ndarray, args) -> float:
    """Recall the dev texts, write the recall file, log micro/macro F1 (x100, evaluate.py's lines) and
    return the macro F1."""
    entries = label_corpus(labels) if args.recall_mode == "label" else text_corpus(data.examples, labels)
    with tempfile.TemporaryDirectory() as scratch:
        index = HnswIndex(scratch, IndexInfo(model.embedding_size, "training"), args.hnsw_m, args.hnsw_ef,
                          args.hnsw_max_elements)
        build_index(model, pipeline, index, entries)
        result = recall(model, pipeline, index, dev_texts, args.recall_num)
    write_recall_file(Path(args.recall_result_dir) / args.recall_result_file, dev_texts, result, args.recall_mode)
    metric = MetricReport(decision=args.threshold, label_names=labels)
    metric.update(label_scores(result, labels, args.recall_mode), gold)
    micro_f1, macro_f1 = metric.accumulate()
    logger.info("Micro fl score: {}".format(micro_f1 * 100))
    logger.info("Macro f1 score: {}".format(macro_f1 * 100))
    return macro_f1


@dataclass
class EncoderTraining:
    """What one encoder training run trains and evaluates, built by `prepare`."""

    model: SemanticIndexModel
    tokenizer: object
    pipeline: object
    labels: list[str]
    data: PairData
    dev: list[Example]  # the recalled dev texts (none without --evaluate)
    trained: paddle.nn.Layer  # the pair encoder, paddle.DataParallel-wrapped in a multi-process run
    batches: TrainBatches
    optimizer: paddle.optimizer.Optimizer
    lr_scheduler: object
    total_steps: int

    def train_step(self, batch: dict, backward, margin: float, scale: int) -> paddle.Tensor:
        queries, positives = self.trained(batch["texts"], batch["names"], batch["name_of_pair"])
        loss = in_batch_negative_loss(queries, positives, margin, scale, batch["not_negative"])
        backward(loss)
        return loss


def prepare(args: argparse.Namespace, rank: int, world_size: int) -> EncoderTraining:
    """Read the pairs and the dev texts, load the encoder (and --init_from_ckpt), encode the texts and build the batches
    and the optimizer."""
    labels = read_label_list(args.corpus_file)
    data = PairData(args.train_set_file, labels)
    dev = load_examples(args.similar_text_pair_file, labels) if args.evaluate else []
    tokenizer = load_tokenizer(args.model_name_or_path)
    encoder = from_pretrained(AutoModel.from_pretrained, args.model_name_or_path)
    model = SemanticIndexModel(encoder, args.output_emb_size)
    if args.init_from_ckpt:
        if not Path(args.init_from_ckpt).is_file():
            raise DataError(f"--init_from_ckpt {args.init_from_ckpt} is not a file")
        model.set_state_dict(paddle.load(args.init_from_ckpt))
        logger.info("warmup from:{}".format(args.init_from_ckpt))
    pipeline = embedding_pipeline(tokenizer, args.max_seq_length, args.batch_size)
    if args.recall_mode == "label":
        check_label_names(pipeline, labels)
    batches = pair_batches(data, pipeline, labels, args, rank, world_size)
    pair_encoder = PairEncoder(model, tokenizer.pad_token_id)
    trained = paddle.DataParallel(pair_encoder) if world_size > 1 else pair_encoder
    total_steps = len(batches) * args.epochs
    lr_scheduler = LinearDecayWithWarmup(args.learning_rate, total_steps, args.warmup_proportion)
    # the reference clipped each tensor's norm alone (ClipGradByNorm); the global norm keeps the step's direction
    optimizer = build_optimizer(model, lr_scheduler, args.weight_decay, paddle.nn.ClipGradByGlobalNorm(1.0))
    return EncoderTraining(model, tokenizer, pipeline, labels, data, dev, trained, batches, optimizer, lr_scheduler,
                           total_steps)


class StepCheckpoints:
    """Without --evaluate (the reference): the encoder saved every `save_steps` steps as model_<step>."""

    def __init__(self, run: EncoderTraining, save_dir: Path, save_steps: int):
        self.run, self.save_dir, self.save_steps = run, save_dir, save_steps

    def on_step_end(self, state: StepState) -> bool:
        if state.global_step % self.save_steps:
            return False
        save_semantic_checkpoint(self.run.model, self.run.tokenizer, self.save_dir / f"model_{state.global_step}")
        return True


class BestRecall:
    """With --evaluate: recall the dev texts after every epoch and keep the encoder with the best macro
    F1 in model_best, its line appended to model_best/train_result.txt (the reference's record) and
    written with the encoder's fingerprint to --evaluate_result."""

    def __init__(self, run: EncoderTraining, dev_texts: list[str], gold: np.ndarray, args: argparse.Namespace):
        self.run, self.dev_texts, self.gold, self.args = run, dev_texts, gold, args
        self.best_macro_f1, self.best_epoch = 0.0, None

    def on_epoch_end(self, state: StepState) -> bool:
        logger.info("evaluating")
        run, save_dir = self.run, Path(self.args.save_dir)
        macro_f1 = evaluate(run.model, run.pipeline, run.labels, run.data, self.dev_texts, self.gold, self.args)
        if macro_f1 > self.best_macro_f1 or self.best_epoch is None:
            self.best_macro_f1, self.best_epoch = macro_f1, state.epoch
            weights = save_semantic_checkpoint(run.model, run.tokenizer, save_dir / "model_best")
            line = "epoch=%d, global_step: %d, Macro f1: %s" % (state.epoch, state.global_step, macro_f1)
            with open(save_dir / "model_best" / "train_result.txt", "a", encoding="utf-8") as result:
                result.write(line + "\n")
            write_text_atomic(save_dir / self.args.evaluate_result, f"{line}\nencoder: {encoder_fingerprint(weights)}\n")
        return True


def train(args: argparse.Namespace) -> None:
    set_device(args.device)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if world_size > 1:
        dist.init_parallel_env()
    set_seed(args.seed)
    run = prepare(args, rank, world_size)
    callbacks = []
    if rank == 0 and args.evaluate:
        best = BestRecall(run, [e.text for e in run.dev], multi_hot(run.dev, len(run.labels)), args)
        callbacks.append(best)
    elif rank == 0:
        callbacks.append(StepCheckpoints(run, Path(args.save_dir), args.save_steps))

    def log_line(state: StepState) -> str:
        return ("global step %d, epoch: %d, batch: %d, loss: %.5f, speed: %.2f step/s"
                % (state.global_step, state.epoch, state.step, float(state.loss), state.speed))

    TrainingLoop(run.trained, run.batches, partial(run.train_step, margin=args.margin, scale=args.scale),
                 run.optimizer, run.lr_scheduler, run.total_steps, log_line, args.log_steps,
                 main_process=rank == 0).run(callbacks=callbacks)
    if rank == 0 and args.evaluate:
        logger.info("Best macro f1 %.5f at epoch %d, saved in %s" % (best.best_macro_f1, best.best_epoch,
                                                                     Path(args.save_dir) / "model_best"))


def main(argv: list[str] | None = None) -> None:
    train(parser.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
