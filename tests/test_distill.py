"""distill.py: the soft loss, the teacher's cache, the loss mix, students distilled end to end, exact resume, and
keywords learnt from unlabelled text alone."""
from __future__ import annotations

import argparse
import gzip
import json
import re
from pathlib import Path

import numpy as np
import paddle
import pytest

import distill
import resume
from data_io import load_examples, multi_hot
from decision import Decision
from losses import get_loss, soft_label_loss
from metric import MetricReport
from modeling import load_model, model_inputs
from utils import DataError

from conftest import LABELS, crash_at_optimizer_step, keyword_lines, make_keyword_dataset, predict_py_labels, run_main

SMALL_STUDENT = ["--student_preset", "tiny", "--student_layers", "1", "--student_hidden", "64", "--student_heads", "2",
                 "--student_intermediate", "128"]
FAST = ["--device", "cpu", "--batch_size", "16", "--learning_rate", "2e-3", "--logging_steps", "50"]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_soft_loss_is_bce_against_the_teachers_probabilities_per_label_at_temperature():
    student, teacher = np.array([[2.0, -1.0, 0.5]]), np.array([[1.0, 1.0, -3.0]])
    for temperature in (1.0, 2.0):
        p, q = sigmoid(teacher / temperature), sigmoid(student / temperature)
        expected = temperature ** 2 * np.mean(-(p * np.log(q) + (1 - p) * np.log(1 - q)))
        loss = soft_label_loss(paddle.to_tensor(student, dtype="float32"), paddle.to_tensor(teacher, dtype="float32"),
                               temperature)
        assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_corpus_reads_gzip_and_names_the_line_that_is_not_utf8(tmp_path):
    plain, packed, bad = tmp_path / "a.txt", tmp_path / "b.txt.gz", tmp_path / "c.txt"
    plain.write_text("text\tlabel\n甲乙\t体育\n\n丙丁\n", encoding="utf-8")
    with gzip.open(packed, "wt", encoding="utf-8") as handle:
        handle.write("戊己\n甲乙\n")
    assert distill.read_corpus([str(plain), str(packed)], known={"丙丁"}) == ["甲乙", "戊己", "甲乙"]
    bad.write_bytes("好\n".encode("utf-8") + b"\xff\xfe\n")
    with pytest.raises(DataError, match=r"c.txt:2: not valid UTF-8"):
        distill.read_corpus([str(bad)], set())
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt: no texts to learn from"):
        distill.read_corpus([str(tmp_path / "empty.txt")], set())
    with pytest.raises(DataError, match="File not found"):
        distill.read_corpus([str(tmp_path / "missing.txt.gz")], set())


def test_student_layers_map_uniformly_onto_the_teachers():
    assert distill.layer_map(4, 6) == [1, 3, 4, 6]
    assert distill.layer_map(2, 2) == [1, 2]
    assert distill.layer_map(1, 6) == [6]


def test_sampling_counts_the_teachers_labels_on_the_corpus_and_the_gold_labels_on_labelled_texts():
    decision = Decision(thresholds=np.array([0.5, 0.9]))
    labelled = np.array([[0.0, 1.0]], dtype="float32")
    corpus_logits = np.array([[2.0, 2.0], [-2.0, 3.0]], dtype="float32")  # probabilities .88 .88 / .12 .95
    targets = distill.sampling_targets(labelled, corpus_logits, decision)
    assert targets.tolist() == [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]
    assert targets.dtype == np.float32


def test_repeat_threshold_without_repeat_factor_sampling_is_named_as_ignored(caplog):
    options = ["--teacher", "t", "--dataset_dir", "d", "--student_preset", "tiny", "--repeat_threshold", "0.2"]
    distill.warn_ignored_options(distill.parser.parse_args(options))
    assert caplog.text.count("--repeat_threshold 0.2 is ignored: it acts only with --sampling repeat_factor") == 1
    caplog.clear()
    distill.warn_ignored_options(distill.parser.parse_args([*options, "--sampling", "repeat_factor"]))
    assert "is ignored" not in caplog.text


def objective_loss(model, alpha: float, intermediate: str = "none") -> tuple[float, float, float]:
    """(the objective's loss, the soft loss, the gold-label loss) on one batch of two texts, one labelled."""
    args = argparse.Namespace(alpha=alpha, temperature=1.0, intermediate_weight=0.1)
    paddle.seed(0)
    ids = paddle.randint(5, model.config.vocab_size, [2, 8])
    batch = {"input_ids": ids, "token_type_ids": paddle.zeros_like(ids),
             "labels": paddle.to_tensor([[1.0, 0, 0, 0, 0], [0.0, 0, 0, 0, 0]]),
             "teacher_logits": paddle.to_tensor([[2.0, -1, 0, 1, -2], [0.5, 0.5, -3, 1, 0]]),
             "labelled": paddle.to_tensor([True, False])}
    hard = get_loss("bce")
    objective = distill.Objective(args, model, distill.Distiller(model, None), model, hard, 0, "max",
                                  distill.check_intermediate(intermediate, model, model))
    with paddle.no_grad():
        loss = float(objective(batch, lambda value: None))
        logits = model(**model_inputs(batch, 0))
    return loss, float(soft_label_loss(logits, batch["teacher_logits"])), float(hard(logits[:1], batch["labels"][:1]))


def test_alpha_mixes_the_soft_loss_on_all_texts_and_the_label_loss_on_labelled_ones(scratch_model):
    model = load_model(str(scratch_model), len(LABELS))
    model.eval()
    loss, soft, hard = objective_loss(model, 1.0)
    assert loss == pytest.approx(soft, rel=1e-5)
    loss, soft, hard = objective_loss(model, 0.0)
    assert loss == pytest.approx(hard, rel=1e-5)
    loss, soft, hard = objective_loss(model, 0.25)
    assert loss == pytest.approx(0.25 * soft + 0.75 * hard, rel=1e-5)
    # a model distilled into itself: its hidden states and attention maps already match
    loss, soft, _ = objective_loss(model, 1.0, "both")
    assert loss == pytest.approx(soft, abs=1e-5)


# ------------------------------------------------------------------------------ end to end


def run_distill(teacher: Path, dataset: Path, save_dir: Path, *options):
    return run_main("distill.py", "--teacher", teacher, "--dataset_dir", dataset, "--save_dir", save_dir,
                    *FAST, *options)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(line.split("\t")[0] for line in keyword_lines(400, 77)) + "\n")
    return path


@pytest.fixture(scope="module")
def distilled(trained, keyword_data, corpus, tmp_path_factory):
    """A 1-layer student of the trained tiny teacher, on the labelled data and an unlabelled .gz corpus."""
    save_dir = tmp_path_factory.mktemp("distilled") / "student"
    result = run_distill(trained[0], keyword_data, save_dir, *SMALL_STUDENT, "--corpus", corpus, "--epochs", "4",
                         "--alpha", "0.7", "--cache_dir", save_dir.parent / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    return save_dir, result.stderr


@pytest.mark.slow
def test_distilled_student_is_a_checkpoint_predict_py_reads(distilled, keyword_data, trained, tmp_path):
    save_dir, log = distilled
    assert "Teacher's logits on 1200 texts cached" in log
    config = json.loads((save_dir / "config.json").read_text(encoding="utf-8"))
    teacher = json.loads((trained[0] / "config.json").read_text(encoding="utf-8"))
    assert config["num_hidden_layers"] == 1 and config["hidden_size"] == 64
    assert config["multi_label_names"] == LABELS and config["long_text"] == teacher["long_text"]
    assert len(set(config["multi_label_thresholds"])) > 1  # tuned on dev
    results = json.loads((save_dir / "results.json").read_text(encoding="utf-8"))
    assert results["best_dev"]["micro_f1"] > 0.8
    labels = predict_py_labels(save_dir, keyword_data, "data.txt", tmp_path / "out.txt")
    assert len(labels) == 100 and all(set(names) <= set(LABELS) | {""} for names in labels)


@pytest.mark.slow
def test_teacher_cache_is_reused_and_not_for_other_texts_or_another_teacher(distilled, trained, keyword_data, corpus,
                                                                            tmp_path):
    save_dir, _ = distilled
    cache = save_dir.parent / "cache"
    options = [*SMALL_STUDENT, "--epochs", "1", "--cache_dir", cache]
    result = run_distill(trained[0], keyword_data, tmp_path / "again", *options, "--corpus", corpus)
    assert result.returncode == 0 and "Teacher's logits on 1200 texts read from its cache" in result.stderr
    other = tmp_path / "other.txt"
    other.write_text("\n".join(line.split("\t")[0] for line in keyword_lines(50, 78)) + "\n", encoding="utf-8")
    result = run_distill(trained[0], keyword_data, tmp_path / "other", *options, "--corpus", other)
    assert result.returncode == 0 and "Teacher's logits on 850 texts cached" in result.stderr
    # the student is a checkpoint too: as a teacher its own logits are computed, not the first teacher's reused
    result = run_distill(save_dir, keyword_data, tmp_path / "third", *options, "--corpus", corpus)
    assert result.returncode == 0 and "Teacher's logits on 1200 texts cached" in result.stderr
    assert len(list(cache.glob("teacher_logits-*.npy"))) == 3


@pytest.mark.slow
def test_repeat_factor_sampling_repeats_corpus_texts_the_teacher_labels(distilled, trained, keyword_data, corpus,
                                                                          tmp_path):
    save_dir, _ = distilled
    result = run_distill(trained[0], keyword_data, tmp_path / "sampled", *SMALL_STUDENT, "--epochs", "1", "--corpus",
                         corpus, "--cache_dir", save_dir.parent / "cache", "--sampling", "repeat_factor",
                         "--repeat_threshold", "0.9")
    assert result.returncode == 0, result.stderr[-3000:]
    repeated, total, rows = map(int, re.search(r"Repeat-factor sampling \(threshold 0.9\): (\d+) of (\d+) texts "
                                               r"repeated .*an epoch has (\d+) texts", result.stderr).groups())
    assert total == 1200 and repeated > 800 and rows > 1200  # labelled texts are 800 of the 1200
    assert json.loads((tmp_path / "sampled" / "results.json").read_text(encoding="utf-8"))["best_dev"]["micro_f1"] > 0


@pytest.mark.slow
def test_intermediate_transfer_runs_with_a_narrower_student_and_refuses_a_wider_one(trained, keyword_data, tmp_path):
    result = run_distill(trained[0], keyword_data, tmp_path / "narrow", *SMALL_STUDENT, "--intermediate", "both",
                         "--epochs", "1", "--alpha", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "narrow" / "model_state.pdparams").is_file()
    result = run_distill(trained[0], keyword_data, tmp_path / "wide", "--student_preset", "tiny", "--student_hidden",
                         "256", "--intermediate", "hidden")
    assert result.returncode == 2 and "wider than the teacher" in result.stderr


def test_bad_input_is_one_line(trained, scratch_model, keyword_data, tmp_path):
    cases = [
        ([scratch_model, keyword_data], "is not a checkpoint of train.py, prune.py or distill.py"),
        ([trained[0], keyword_data, "--corpus", tmp_path / "missing.txt"], "File not found"),
        ([trained[0], keyword_data, "--corpus", keyword_data / "data.txt", "--alpha", "0"], "--corpus would teach"),
    ]
    other = make_keyword_dataset(tmp_path / "other")
    (other / "label.txt").write_text("\n".join(["体育", "财经", "科学", "娱乐", "教育"]) + "\n", encoding="utf-8")
    cases.append(([trained[0], other], "'科学' but the checkpoint's label 2 is '科技'"))
    for (teacher, dataset, *options), message in cases:
        result = run_distill(teacher, dataset, tmp_path / "out", *SMALL_STUDENT, *options)
        assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    result = run_distill(trained[0], keyword_data, tmp_path / "out", *SMALL_STUDENT, "--alpha", "1.5")
    assert result.returncode == 2 and "--alpha" in result.stderr


@pytest.mark.slow
def test_distilled_student_is_width_pruned_by_prune_py_and_quantized_by_predict_py(distilled, keyword_data, tmp_path):
    save_dir, _ = distilled
    result = run_main("prune.py", "--device", "cpu", "--dataset_dir", keyword_data, "--params_dir", save_dir,
                      "--output_dir", tmp_path / "prune", "--width_mult_list", "1/2", "--max_steps", "2",
                      "--save_steps", "2", "--per_device_train_batch_size", "16")
    assert result.returncode == 0, result.stderr[-3000:]
    width = tmp_path / "prune" / "width_mult_0.5"
    assert (width / "model.onnx").is_file() and (width / "pruned_model.pdiparams").is_file()
    fp32 = predict_py_labels(save_dir, keyword_data, "data.txt", tmp_path / "fp32.txt")
    int8 = predict_py_labels(save_dir, keyword_data, "data.txt", tmp_path / "int8.txt", "--backend", "onnxruntime",
                             "--precision", "int8")
    assert len(int8) == len(fp32) == 100 and sum(a == b for a, b in zip(int8, fp32)) >= 95


# ------------------------------------------------------------------------------ resume

LOSS_LINE = r"global step (\d+), epoch: \d+, batch: \d+, loss: ([\d.]+), speed: [\d.]+ step/s, lr: ([\d.e+-]+)"


def texts_file(path: Path, count: int, seed: int) -> Path:
    """Keyword texts without their labels, one a line: an unlabelled corpus."""
    path.write_text("\n".join(line.split("\t")[0] for line in keyword_lines(count, seed)) + "\n", encoding="utf-8")
    return path


def last_state_weights(save_dir: Path) -> dict[str, np.ndarray]:
    state_dir = resume.find_state(save_dir)
    return {name: value.numpy() for name, value in paddle.load(str(state_dir / "model_state.pdparams")).items()}


@pytest.mark.slow
def test_interrupted_distillation_resumes_identically(trained, tmp_path, monkeypatch):
    """64 labelled texts and 48 corpus texts (16 of its 64 lines are labelled ones), batch 16: 7 steps an epoch,
    states at steps 7, 14 and 21; the run is cut at step 13 and resumed from step 7, reading the teacher's
    logits from the cache the cut run wrote."""
    data = make_keyword_dataset(tmp_path / "data", n_train=64, n_dev=16, seed=6)
    corpus = texts_file(tmp_path / "corpus.txt", 64, 61)
    run = [*SMALL_STUDENT, "--corpus", corpus, "--alpha", "0.7", "--epochs", "3", "--logging_steps", "1",
           "--save_last"]
    reference = run_distill(trained[0], data, tmp_path / "reference", *run, "--cache_dir", tmp_path / "cache_a")
    assert reference.returncode == 0, reference.stderr[-3000:]
    save_dir, cache = tmp_path / "resumed", tmp_path / "cache_b"
    with monkeypatch.context() as patch:
        crash_at_optimizer_step(patch, 13)
        with pytest.raises(KeyboardInterrupt):
            run_distill(trained[0], data, save_dir, *run, "--cache_dir", cache)
    resumed = run_distill(trained[0], data, save_dir, *run, "--cache_dir", cache, "--resume_from_checkpoint", save_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Teacher's logits on 112 texts read from its cache" in resumed.stderr
    assert "at global step 7 (epoch 1, batch 7)" in resumed.stderr
    expected, got = re.findall(LOSS_LINE, reference.stderr), re.findall(LOSS_LINE, resumed.stderr)
    assert [s for s, _, _ in got] == [str(n) for n in range(8, 22)]
    assert [(s, lr) for s, _, lr in got] == [(s, lr) for s, _, lr in expected[7:]]
    assert [float(v) for _, v, _ in got] == pytest.approx([float(v) for _, v, _ in expected[7:]], abs=1e-5)
    weights, reference_weights = last_state_weights(save_dir), last_state_weights(tmp_path / "reference")
    assert weights.keys() == reference_weights.keys()
    assert max(float(np.abs(weights[n] - reference_weights[n]).max()) for n in weights) < 1e-5
    results = json.loads((save_dir / "results.json").read_text(encoding="utf-8"))
    reference_results = json.loads((tmp_path / "reference" / "results.json").read_text(encoding="utf-8"))
    assert results["best_dev"] == pytest.approx(reference_results["best_dev"], abs=1e-5)
    # elsewhere the best student so far (epoch 1's, never beaten) would be missing: refused too
    elsewhere = run_distill(trained[0], data, tmp_path / "elsewhere", *run, "--cache_dir", cache,
                            "--resume_from_checkpoint", save_dir)
    assert elsewhere.returncode == 2 and f"continues in its own directory; write into {save_dir}" in elsewhere.stderr
    changed = run_distill(trained[0], data, save_dir, *run, "--cache_dir", cache, "--resume_from_checkpoint", save_dir,
                          "--alpha", "0.9")
    assert changed.returncode == 2 and "--alpha 0.9 (the saved run used 0.7)" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ unlabelled text alone


def held_out_micro_f1(checkpoint: Path, dataset: Path, output: Path) -> float:
    """predict.py's micro F1 on the held-out test.txt."""
    result = run_main("predict.py", "--device", "cpu", "--dataset_dir", dataset, "--data_file", "test.txt",
                      "--params_path", checkpoint, "--output_file", output)
    assert result.returncode == 0, result.stderr[-3000:]
    metric = MetricReport()
    metric.update(multi_hot(load_examples(output, LABELS), len(LABELS)),
                  multi_hot(load_examples(dataset / "test.txt", LABELS), len(LABELS)))
    return metric.accumulate()[0]


@pytest.mark.slow
def test_student_learns_the_keywords_from_the_teacher_on_unlabelled_text_alone(trained, tmp_path):
    """8 labelled lines and --alpha 1: the gold labels weigh nothing, so what the student knows of the keywords
    comes from the teacher's probabilities on 800 unlabelled texts (measured test micro F1: 0.98). The same
    8 lines taught by their labels (--alpha 0, no corpus) stay far below (0.51), and so does the --alpha 1 run
    with the soft loss taken on the labelled texts only (0.47): the corpus is what teaches."""
    data = make_keyword_dataset(tmp_path / "data", n_train=8, n_dev=100, seed=8)
    corpus = texts_file(tmp_path / "corpus.txt", 800, 81)
    run = [*SMALL_STUDENT, "--epochs", "12", "--cache_dir", tmp_path / "cache"]
    result = run_distill(trained[0], data, tmp_path / "taught", *run, "--alpha", "1", "--corpus", corpus)
    assert result.returncode == 0, result.stderr[-3000:]
    taught = held_out_micro_f1(tmp_path / "taught", data, tmp_path / "taught.txt")
    result = run_distill(trained[0], data, tmp_path / "labels", *run, "--alpha", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    labels_only = held_out_micro_f1(tmp_path / "labels", data, tmp_path / "labels.txt")
    assert taught > 0.8 and labels_only < 0.65, (taught, labels_only)
