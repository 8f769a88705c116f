"""Few-shot multi-label classification by prompt learning (PaddleNLP Prompt API).

Same command line as PaddleNLP's multi_label/few-shot/train.py: the text is wrapped in a template
with a [MASK], a SoftVerbalizer turns the masked-LM head into one output per label (initialised
from the label words), and the model is tuned with BCE. Unlike the reference, test.txt is
optional, an unknown label stops the run with its line number, and --do_export also writes the
ONNX model, the tokenizer and the label order, checked against the dygraph model.
"""
from __future__ import annotations

import preload  # noqa: F401  (first: process settings Paddle reads when it loads)

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paddle
from paddle.static import InputSpec
from paddlenlp.datasets import MapDataset
from paddlenlp.prompt import (
    AutoTemplate,
    PromptModelForSequenceClassification,
    PromptTrainer,
    PromptTuningArguments,
    SoftVerbalizer,
)
from paddlenlp.trainer import EarlyStoppingCallback, IntervalStrategy, PdArgumentParser
from paddlenlp.transformers import AutoModelForMaskedLM

from cli import (
    MINUS_ONE_OR_MORE,
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    UNIT_INTERVAL_OPEN,
    OneLineErrors,
    bounded,
)
from compat import keep_save_total_limit
from data_io import PREDICTION_HEADER, format_predictions
from decision import Decision
from exporting import ExportInfo
from metric import MetricReport
from modeling import check_max_seq_length, from_pretrained, load_tokenizer
from parity import write_checked_export
from utils import DataError, logger, run_cli, set_device, set_seed, write_text_atomic

from prompt_io import (
    PromptCollator,
    PromptPipeline,
    PromptRunner,
    input_spec,
    load_prompt_examples,
    read_label_words,
    template_meta,
)

PARITY_TEXTS = 200  # dev texts on which the export must answer like the dygraph model


# yapf: disable
@dataclass
class DataArguments:
    data_dir: str = field(default="./data", metadata={"help": "Path to a dataset which includes train.txt, dev.txt, label.txt, and optionally test.txt and data.txt."})
    prompt: str = field(default=None, metadata={"help": "The input prompt for tuning, e.g. 这句话包含的要素有 or {'soft': '这句话包含的要素有'}{'mask'}{'text': 'text_a'}."})


@dataclass
class ModelArguments:
    model_name_or_path: str = field(default="ernie-3.0-base-zh", metadata={"help": "A reference model name (downloaded when online) or a local model directory, e.g. one made by scratch_model.py."})
    export_type: str = field(default="paddle", metadata={"help": "The type to export: paddle or onnx. Both write the static graph and model.onnx."})
    dropout: float = field(default=0.1, metadata={"help": "The dropout used for pretrained model."})


@dataclass
class EarlyStoppingArguments:
    early_stopping_patience: int = field(default=4, metadata={"help": "Stop after this many evaluations without improvement of --metric_for_best_model (the reference's fixed value is 4)."})
    early_stopping_threshold: float = field(default=0.0, metadata={"help": "The improvement that counts as one."})
# yapf: enable


class PromptArgumentParser(OneLineErrors, PdArgumentParser):
    """paddlenlp's dataclass parser, as the reference uses, with the suite's one-line errors."""


# The range of every numeric option; a paddlenlp version that adds one fails tests/test_cli_args.py.
OPTION_RANGES = {
    **dict.fromkeys(["per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "eval_accumulation_steps", "logging_steps", "save_steps", "save_total_limit", "eval_steps",
                     "minimum_eval_times", "early_stopping_patience"], POSITIVE_INT),
    **dict.fromkeys(["max_steps", "sharding_degree", "sharding_parallel_degree", "tensor_parallel_degree",
                     "pipeline_parallel_degree", "sep_parallel_degree", "local_rank", "max_evaluate_steps",
                     "past_index"], MINUS_ONE_OR_MORE),
    **dict.fromkeys(["warmup_steps", "dataloader_num_workers"], NON_NEGATIVE_INT),
    **dict.fromkeys(["learning_rate", "ppt_learning_rate", "weight_decay", "ppt_weight_decay", "max_grad_norm",
                     "num_cycles", "lr_end", "alpha_rdrop", "alpha_rgl", "early_stopping_threshold"],
                    NON_NEGATIVE_FLOAT),
    **dict.fromkeys(["adam_epsilon", "ppt_adam_epsilon", "num_train_epochs", "power", "scale_loss"], POSITIVE_FLOAT),
    **dict.fromkeys(["adam_beta1", "adam_beta2", "ppt_adam_beta1", "ppt_adam_beta2", "warmup_ratio", "dropout"],
                    UNIT_INTERVAL_OPEN),
    "seed": SEED,
    "max_seq_length": bounded(int, 8),  # [CLS], the prompt's mask, [SEP] and a few tokens of text
}
parser = PromptArgumentParser((ModelArguments, DataArguments, PromptTuningArguments, EarlyStoppingArguments))
for action in parser._actions:
    action.type = OPTION_RANGES.get(action.dest, action.type)


def check_args(model_args: ModelArguments, data_args: DataArguments, training_args: PromptTuningArguments,
               stopping: EarlyStoppingArguments) -> None:
    if model_args.export_type not in ("paddle", "onnx"):
        raise DataError(f"--export_type must be paddle or onnx, got {model_args.export_type!r}")
    resume = training_args.resume_from_checkpoint
    if resume is not None and not Path(resume, "template_config.json").is_file():
        raise DataError(f"--resume_from_checkpoint {resume}: no template_config.json there (not a checkpoint "
                        f"directory written by few-shot/train.py)")
    data_dir = Path(data_args.data_dir)
    needed = ["label.txt"] + ["train.txt"] * training_args.do_train + ["dev.txt"] * (
        training_args.do_train or training_args.do_eval)
    missing = [name for name in dict.fromkeys(needed) if not (data_dir / name).is_file()]
    if missing:
        raise DataError(f"--data_dir {data_dir}: missing {', '.join(missing)}")


def early_stopping(training_args: PromptTuningArguments, stopping: EarlyStoppingArguments) -> list:
    """The reference's early stopping, when the arguments let it work at all (it asserted otherwise)."""
    if (training_args.evaluation_strategy != IntervalStrategy.NO and training_args.load_best_model_at_end
            and training_args.metric_for_best_model):
        return [EarlyStoppingCallback(stopping.early_stopping_patience, stopping.early_stopping_threshold)]
    logger.info("Early stopping is off: it needs --evaluation_strategy epoch --save_strategy epoch "
                "--metric_for_best_model macro_f1_score --load_best_model_at_end")
    return []


def compute_metrics(eval_preds) -> dict[str, float]:
    decision = Decision.stored(None, None, eval_preds.predictions.shape[1])
    metric = MetricReport(decision=decision)
    metric.update(decision.probabilities(eval_preds.predictions), eval_preds.label_ids)
    micro_f1_score, macro_f1_score = metric.accumulate()
    return {"micro_f1_score": micro_f1_score, "macro_f1_score": macro_f1_score}


def predict_test(trainer: PromptTrainer, examples: list[dict], labels: list[str], output_dir: Path) -> None:
    """Test metrics with a per-label report, and the predictions in predict.py's format."""
    result = trainer.predict(MapDataset(examples))
    trainer.log_metrics("test", result.metrics)
    decision = Decision.stored(None, None, len(labels))
    probs = decision.probabilities(result.predictions)
    report = MetricReport(decision=decision, label_names=labels)
    report.update(probs, result.label_ids)
    report.report()
    lines = format_predictions([example["text_a"] for example in examples], probs, decision, labels)
    predictions_file = output_dir / "test_predictions.txt"
    write_text_atomic(predictions_file, "\n".join([PREDICTION_HEADER, *lines]) + "\n")
    logger.info(f"Test predictions written to {predictions_file}")


def export(trainer: PromptTrainer, prompt_model: PromptModelForSequenceClassification, spec: list[InputSpec],
           labels: list[str], dev_examples: list[dict] | None, output_dir: Path) -> None:
    """Static graph + ONNX + tokenizer + label order, proven to answer like the dygraph model."""
    export_dir = output_dir / "export"
    input_names = [item.name for item in spec]
    decision = Decision.stored(None, None, len(labels))
    examples = (dev_examples or [{"text_a": "测试"}])[:PARITY_TEXTS]
    texts = [example["text_a"] for example in examples]
    targets = np.asarray([example["labels"] for example in examples]) if dev_examples else None
    if not dev_examples:
        logger.warning("No dev.txt: the export is checked against the dygraph model on one sample text only")

    def make_pipeline(exported: ExportInfo) -> PromptPipeline:
        return PromptPipeline(exported, prompt_model.template)

    before_export = ExportInfo(export_dir, export_dir / "model", labels, decision, input_names)
    reference = make_pipeline(before_export).probs(PromptRunner(prompt_model), texts)
    write_checked_export(
        lambda prefix: trainer.export_model(str(prefix.parent), input_spec=spec, export_type="paddle"),
        reference, trainer.tokenizer, export_dir, "model", labels, decision, input_names, texts, targets,
        make_pipeline, extra_meta=template_meta(prompt_model))
    logger.info(f"Exported to {export_dir}: model.json/.pdiparams, model.onnx, template and label order")


def main(argv: list[str] | None = None) -> None:
    model_args, data_args, training_args, stopping = parser.parse_args_into_dataclasses(args=argv)
    check_args(model_args, data_args, training_args, stopping)
    training_args.print_config(model_args, "Model")
    training_args.print_config(data_args, "Data")
    set_device(training_args.device)
    set_seed(training_args.seed)  # the masked-LM head of a scratch model is initialised at load
    data_dir, output_dir = Path(data_args.data_dir), Path(training_args.output_dir)

    tokenizer = load_tokenizer(model_args.model_name_or_path)
    model = from_pretrained(AutoModelForMaskedLM.from_pretrained, model_args.model_name_or_path,
                            hidden_dropout_prob=model_args.dropout, attention_probs_dropout_prob=model_args.dropout)
    check_max_seq_length(training_args.max_seq_length, model.config.max_position_embeddings,
                         model_args.model_name_or_path, windows=False)
    try:
        template = AutoTemplate.create_from(data_args.prompt, tokenizer, training_args.max_seq_length, model=model)
    except (ValueError, KeyError, SyntaxError) as err:
        raise DataError(f"--prompt {data_args.prompt!r} is not a valid template: {err}") from None
    logger.info(f"Using template: {template.prompt}")
    label_words = read_label_words(data_dir / "label.txt")
    verbalizer = SoftVerbalizer({label: [word] for label, word in label_words.items()}, tokenizer, model)
    labels = list(verbalizer.labels)  # the model's output order: label names sorted

    splits = {name: load_prompt_examples(data_dir / f"{name}.txt", labels) if (data_dir / f"{name}.txt").is_file()
              else None for name in ("train", "dev", "test")}
    prompt_model = PromptModelForSequenceClassification(model, template, verbalizer, freeze_plm=training_args.freeze_plm,
                                                        freeze_dropout=training_args.freeze_dropout)
    spec = input_spec(prompt_model)
    keep_save_total_limit()
    trainer = PromptTrainer(model=prompt_model, tokenizer=tokenizer, args=training_args,
                            criterion=paddle.nn.BCEWithLogitsLoss(),
                            data_collator=PromptCollator(tokenizer.pad_token_id, [item.name for item in spec]),
                            train_dataset=MapDataset(splits["train"]) if training_args.do_train else None,
                            eval_dataset=MapDataset(splits["dev"]) if splits["dev"] else None,
                            callbacks=early_stopping(training_args, stopping),
                            compute_metrics=compute_metrics)

    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
    if training_args.do_eval:
        trainer.log_metrics("eval", trainer.evaluate())
    if training_args.do_predict:
        if splits["test"] is None:
            logger.warning(f"--do_predict: no test.txt in {data_dir}, nothing to predict")
        else:
            predict_test(trainer, splits["test"], labels, output_dir)
    if training_args.do_export and trainer.is_world_process_zero():
        export(trainer, prompt_model, spec, labels, splits["dev"], output_dir)


if __name__ == "__main__":
    run_cli(main)
