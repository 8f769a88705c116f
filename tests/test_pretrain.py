"""Masked-LM pretraining (pretrain.py, corpus.py, mlm.py): reading corpora, packing, masking
statistics, the held-out measure, resume, and the output as a model for train.py."""
from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import jieba
import numpy as np
import paddle
import pytest
from paddlenlp.transformers import ErnieTokenizer

import corpus
from corpus import PackingOptions, Tokenization, build_blocks, corpus_files, iter_pieces, text_pieces
from mlm import IGNORE, Masker, load_mlm_model, masked_logits
from modeling import load_tokenizer, model_inputs

from conftest import FILLER, PROMPT_TRAIN_ARGS, RECIPE, crash_at_optimizer_step, few_shot_data, run_main

DOC_CHARS = "甲乙丙丁戊己庚辛"  # document i is written with DOC_CHARS[i] only


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    chars = sorted(set(DOC_CHARS + FILLER + "。！？，离婚原告被告夫妻感情破裂法院判决准予"))
    vocab.write_text("\n".join(["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]", *chars]) + "\n", encoding="utf-8")
    return ErnieTokenizer(str(vocab))


def document(index: int, sentence_lengths: list[int]) -> str:
    return "".join(DOC_CHARS[index] * (length - 1) + "。" for length in sentence_lengths)


def blocks_of(tmp_path: Path, tokenizer, texts: list[str], max_tokens: int, **options) -> tuple[list[str], list[str]]:
    train, held_out, _ = build_blocks(text_pieces(texts), Tokenization(tokenizer, False),
                                      PackingOptions(max_tokens, separator_id=tokenizer.sep_token_id, **options),
                                      tmp_path / "blocks")
    def texts_of(blocks) -> list[str]:
        return ["".join(tokenizer.convert_ids_to_tokens(blocks.block(i)[0].tolist())) for i in range(len(blocks))]

    return texts_of(train), texts_of(held_out)


def test_packing_keeps_whole_sentences_of_one_document_per_block(tmp_path, tokenizer):
    texts = [document(0, [5, 6, 4, 30]), document(1, [3]), document(2, [7, 7, 7, 7])]
    blocks, _ = blocks_of(tmp_path, tokenizer, texts, max_tokens=12)
    for block in blocks:
        assert len(set(block) - {"。"}) == 1  # one document's character
        assert len(block) <= 12
    # whole sentences, greedily: 5+6 | 4 | 30 cut into 12+12+6 | 3 | 7 | 7 | 7 | 7 (7+7 > 12)
    assert [len(b) for b in blocks] == [11, 4, 12, 12, 6, 3, 7, 7, 7, 7]
    assert all(b.endswith("。") for i, b in enumerate(blocks) if i not in (2, 3))


def test_packing_across_documents_only_when_asked(tmp_path, tokenizer):
    texts = [document(i, [3]) for i in range(6)]
    separate, _ = blocks_of(tmp_path / "a", tokenizer, texts, max_tokens=12)
    assert len(separate) == 6
    across, _ = blocks_of(tmp_path / "b", tokenizer, texts, max_tokens=12, across_documents=True)
    assert across[0] == "甲甲。[SEP]乙乙。[SEP]丙丙。"
    assert len(across) == 2


def test_held_out_documents_are_whole_and_fixed(tmp_path, tokenizer):
    texts = [document(i % 8, [4, 4]) for i in range(200)]
    train, held_out = blocks_of(tmp_path / "a", tokenizer, texts, max_tokens=12, validation_split=0.1)
    assert 5 <= len(held_out) <= 40 and len(train) + len(held_out) == 200
    again = blocks_of(tmp_path / "b", tokenizer, texts, max_tokens=12, validation_split=0.1)
    assert again == (train, held_out)


def test_masks_follow_the_probability_and_the_80_10_10_rule(tokenizer):
    masker = Masker(tokenizer, 0.15, whole_word=False)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, len(tokenizer), 200_000).astype(np.int32)
    inputs, labels = masker.mask(ids, np.ones(len(ids), np.uint8), rng)
    assert labels[0] == labels[-1] == IGNORE and inputs[0] == tokenizer.cls_token_id and inputs[-1] == tokenizer.sep_token_id
    inputs, labels = inputs[1:-1], labels[1:-1]
    chosen = labels != IGNORE
    assert chosen.mean() == pytest.approx(0.15, abs=0.005)
    assert np.array_equal(labels[chosen], ids[chosen])
    masked = inputs[chosen] == tokenizer.mask_token_id
    kept = inputs[chosen] == ids[chosen]
    replaced = ~masked & ~kept
    assert masked.mean() == pytest.approx(0.8, abs=0.01)
    assert replaced.mean() == pytest.approx(0.1 * (1 - 1 / len(masker.replacements)), abs=0.01)
    assert kept.mean() == pytest.approx(0.1, abs=0.01)
    assert np.array_equal(inputs[~chosen], ids[~chosen])
    assert not set(inputs[chosen][replaced].tolist()) & set(tokenizer.all_special_ids)


@pytest.mark.parametrize("probability", [0.05, 0.4])
def test_mask_share_follows_mlm_probability(tokenizer, probability):
    masker = Masker(tokenizer, probability, whole_word=False)
    ids = np.full(50_000, 10, np.int32)
    _, labels = masker.mask(ids, np.ones(len(ids), np.uint8), np.random.default_rng(1))
    assert (labels[1:-1] != IGNORE).mean() == pytest.approx(probability, abs=0.01)


def test_whole_word_masking_masks_whole_jieba_words(tokenizer):
    text = "原告与被告夫妻感情破裂，法院判决准予离婚。" * 200
    ids, flags = Tokenization(tokenizer, whole_word=True)(text)
    words = [word for word, _, _ in jieba.tokenize(text)]
    assert len(ids) == len(text) and flags.sum() == len(words)
    masker = Masker(tokenizer, 0.15, whole_word=True)
    _, labels = masker.mask(ids, flags, np.random.default_rng(2))
    chosen = labels[1:-1] != IGNORE
    spans = np.split(chosen, np.flatnonzero(flags)[1:])
    assert all(span.all() or not span.any() for span in spans)
    multi = [span for span in spans if len(span) > 1]
    assert any(span.all() for span in multi)  # some multi-character words ("离婚", "法院") are masked whole
    assert np.mean([span[0] for span in spans]) == pytest.approx(0.15, abs=0.03)
    _, labels = masker.mask(ids[1:], flags[1:], np.random.default_rng(3))  # a block that starts inside a word
    assert len(labels) == len(ids) + 1


class ListBlocks:
    """Blocks held in memory, for the masker."""

    def __init__(self, blocks: list[np.ndarray]):
        self.blocks = blocks

    def block(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.blocks[index], np.ones(len(self.blocks[index]), dtype=np.uint8)


def test_the_head_at_the_masked_positions_gives_the_full_heads_logits_there(scratch_model):
    model = load_mlm_model(str(scratch_model))
    model.eval()
    masker = Masker(load_tokenizer(str(scratch_model)), 0.3, whole_word=False)
    blocks = ListBlocks([np.arange(5, 5 + n, dtype=np.int32) for n in (7, 12, 3)])
    batch = masker.batch(blocks, [0, 1, 2], np.random.default_rng(0))
    with paddle.no_grad():
        full = model(**model_inputs(batch, masker.pad_id), return_dict=True).logits.numpy()
        chosen = masked_logits(model, batch, masker.pad_id).numpy()
    positions = batch["masked_positions"].numpy()
    assert len(positions) > 3 and (batch["masked_labels"].numpy() != IGNORE).all()
    np.testing.assert_allclose(chosen, full.reshape(-1, full.shape[-1])[positions], rtol=1e-4, atol=1e-4)


def test_corpus_reads_gz_jsonl_globs_and_directories(tmp_path):
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "a.txt").write_text("第一篇。\n\n第二篇\n", encoding="utf-8")
    with gzip.open(tmp_path / "dir" / "b.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("压缩的一篇\n")
    (tmp_path / "dir" / "sub" / "c.jsonl").write_text(
        json.dumps({"id": 1, "content": "JSON 的一篇"}, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp_path / "dir" / "ignored.csv").write_text("x\n", encoding="utf-8")
    files = corpus_files([str(tmp_path / "*.txt"), str(tmp_path / "dir")])
    assert [f.name for f in files] == ["a.txt", "b.txt.gz", "c.jsonl"]
    pieces = list(iter_pieces(files, text_field="content"))
    assert [p.text for p in pieces] == ["第一篇。", "第二篇", "压缩的一篇", "JSON 的一篇"]
    assert len({p.document for p in pieces}) == 4
    assert pieces[1].source.endswith("a.txt:3")


def test_a_long_line_is_read_in_pieces_of_one_document(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(corpus, "CHUNK_CHARS", 100)
    path = tmp_path / "long.txt"
    path.write_text(document(0, [10] * 100) + "\n" + document(1, [4]) + "\n", encoding="utf-8")
    pieces = list(iter_pieces([path]))
    assert max(len(p.text) for p in pieces) <= 100
    assert [p.document for p in pieces] == [0] * 10 + [1]
    train, _, documents = build_blocks(iter(pieces), Tokenization(tokenizer, False), PackingOptions(30), tmp_path / "b")
    assert documents == 2 and train.token_count() == 1004


def test_documents_are_packed_as_they_are_read(tmp_path, tokenizer):
    """Streaming: each document is tokenized before the next one is read, so the corpus is never held whole."""
    tokenized = []

    def tokenize(sentence):
        tokenized.append(sentence)
        return Tokenization(tokenizer, False)(sentence)

    def documents():
        for index in range(5):
            assert len(tokenized) == index  # every earlier document is already packed
            yield corpus.Piece(index, f"doc {index}", document(index, [3]))

    train, _, count = build_blocks(documents(), tokenize, PackingOptions(10), tmp_path / "b")
    assert count == 5 and len(train) == 5


def test_not_utf8_corpus_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("好的\n".encode() + b"\xff\xfe\n")
    with pytest.raises(Exception, match=r"bad.txt:2: not valid UTF-8"):
        list(iter_pieces([path]))


@pytest.mark.parametrize("corpus_arg, text, message", [
    ("missing.txt", None, "missing.txt: no such file or directory"),
    ("nothing*.txt", None, "matches no file"),
    ("empty.txt", "\n  \n", "the corpus is empty"),
    ("records.jsonl", '{"body": "文本"}\n', "no field 'text' (--text_field)"),
])
def test_bad_corpus_is_one_line(tmp_path, scratch_model, corpus_arg, text, message):
    if text is not None:
        (tmp_path / corpus_arg).write_text(text, encoding="utf-8")
    result = run_main("pretrain.py", "--model_name", scratch_model, "--corpus", tmp_path / corpus_arg,
                      "--output_dir", tmp_path / "out", "--device", "cpu")
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1"])
def test_mlm_probability_out_of_range(tmp_path, value):
    result = run_main("pretrain.py", "--model_name", "x", "--corpus", "x", "--output_dir", tmp_path,
                      "--mlm_probability", value)
    assert result.returncode == 2 and "--mlm_probability" in result.stderr and "in (0, 1)" in result.stderr


def test_max_seq_length_beyond_positions_is_one_line(tmp_path, scratch_model):
    (tmp_path / "c.txt").write_text("文本\n", encoding="utf-8")
    result = run_main("pretrain.py", "--model_name", scratch_model, "--corpus", tmp_path / "c.txt", "--output_dir",
                      tmp_path / "out", "--device", "cpu", "--max_seq_length", "4096")
    assert result.returncode == 2 and "above the 512 positions" in result.stderr


def write_corpus(path: Path, documents: int = 60) -> Path:
    rng = np.random.default_rng(0)
    lines = ["".join("".join(rng.choice(list(FILLER), rng.integers(4, 12))) + "。" for _ in range(rng.integers(1, 6)))
             for _ in range(documents)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


PRETRAIN = ["--device", "cpu", "--epochs", "2", "--batch_size", "8", "--learning_rate", "1e-3", "--max_seq_length", "32",
            "--validation_split", "0.2", "--logging_steps", "1"]
LOSS_LINE = r"global step (\d+), epoch: \d+, batch: \d+, masked-token loss: ([\d.]+)"


@pytest.mark.slow
def test_pretrain_reports_held_out_measure_and_output_trains(tmp_path, scratch_model, keyword_data):
    corpus_file = write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "pretrained"
    result = run_main("pretrain.py", "--model_name", scratch_model, "--corpus", corpus_file, "--output_dir", out,
                      "--masking", "whole_word", *PRETRAIN)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "has no masked-LM head: a new, randomly initialised one is created" in result.stderr
    assert len(re.findall(r"eval masked-token loss: [\d.]+, masked-token accuracy: [\d.]+", result.stderr)) == 2
    history = list(csv.DictReader(open(out / "metrics_history.csv", encoding="utf-8")))
    assert [row["masked_accuracy"] != "" for row in history if row["eval_loss"]] == [True, True]
    assert (out / "training_curves.png").is_file() and (out / "vocab.txt").is_file()
    results = json.loads((out / "pretrain_results.json").read_text(encoding="utf-8"))
    assert results["settings"]["masking"] == "whole_word" and len(results["evaluations"]) == 2
    trained = run_main("train.py", "--device", "cpu", "--dataset_dir", keyword_data, "--model_name", out, "--save_dir",
                       tmp_path / "ckpt", "--epochs", "1", *RECIPE)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "macro f1 score" in trained.stderr
    prompt = run_main("few-shot/train.py", "--data_dir", few_shot_data(keyword_data, tmp_path / "few_shot"),
                      "--model_name_or_path", out, "--output_dir", tmp_path / "prompt", "--prompt", "这句话包含的要素有",
                      "--do_train", "--max_steps", "3", *PROMPT_TRAIN_ARGS)
    assert prompt.returncode == 0, prompt.stderr[-3000:]
    assert "newly initialized" not in prompt.stderr  # prompt learning starts from the pretrained masked-LM head


@pytest.mark.slow
def test_interrupted_pretraining_resumes_identically(tmp_path, scratch_model, monkeypatch):
    corpus_file = write_corpus(tmp_path / "corpus.txt")
    run = ["--model_name", scratch_model, "--corpus", corpus_file, *PRETRAIN, "--save_last_steps", "3"]
    reference = run_main("pretrain.py", *run, "--output_dir", tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]
    with monkeypatch.context() as patch:
        crash_at_optimizer_step(patch, 5)
        with pytest.raises(KeyboardInterrupt):
            run_main("pretrain.py", *run, "--output_dir", tmp_path / "resumed")
    resumed = run_main("pretrain.py", *run, "--output_dir", tmp_path / "resumed", "--resume_from_checkpoint",
                       tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stderr and "at global step 3" in resumed.stderr
    expected = re.findall(LOSS_LINE, reference.stderr)
    got = re.findall(LOSS_LINE, resumed.stderr)
    assert [s for s, _ in got] == [s for s, _ in expected[3:]]
    assert [float(v) for _, v in got] == pytest.approx([float(v) for _, v in expected[3:]], abs=2e-5)
    weights = {n: v.numpy() for n, v in paddle.load(str(tmp_path / "resumed" / "model_state.pdparams")).items()}
    reference_weights = paddle.load(str(tmp_path / "reference" / "model_state.pdparams"))
    assert max(float(np.abs(weights[n] - reference_weights[n].numpy()).max()) for n in weights) < 1e-5
    changed = run_main("pretrain.py", *run, "--output_dir", tmp_path / "resumed", "--resume_from_checkpoint",
                       tmp_path / "resumed", "--mlm_probability", "0.2")
    assert changed.returncode == 2 and "--mlm_probability 0.2 (the saved run used 0.15)" in changed.stderr


@pytest.mark.slow
def test_scratch_corpus_vocabulary_and_mlm_shortcut(tmp_path, keyword_data):
    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text("鑫淼焱垚犇骉。\n", encoding="utf-8")
    out = tmp_path / "scratch"
    result = run_main("scratch_model.py", "--dataset_dir", keyword_data, "--output_dir", out, "--corpus", corpus_file,
                      "--mlm_epochs", "1", "--mlm_max_seq_length", "32")
    assert result.returncode == 0, result.stderr[-3000:]
    vocab = set((out / "vocab.txt").read_text(encoding="utf-8").split("\n"))
    assert set("鑫淼焱垚犇骉") <= vocab
    assert re.search(r"Corpus: 901 documents", result.stderr)  # 800 train + 100 dev texts + the corpus line
    assert "masked-token loss" in result.stderr
    assert (out / "pretrain_results.json").is_file()
