"""retrieval_based/: the in-batch loss, both index engines, and train -> recall -> evaluate on keyword data."""
from __future__ import annotations

import ast

import numpy as np
import paddle
import pytest

from http_json import post
from retrieval import Recall, label_scores, read_recall_file, write_recall_file
from semantic_index import in_batch_negative_loss, load_encoder_export, not_negative_mask
from serving import MAX_TEXT_CHARS
from utils import DataError
from vector_index import Entry, HnswIndex, IndexInfo

from conftest import LABELS, ROOT, run_main, run_script, running_simple_server


def test_the_loss_is_the_margin_softmax_over_the_batch():
    rng = np.random.default_rng(0)
    queries, positives = (rng.normal(size=(4, 6)).astype("float32") for _ in range(2))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    positives /= np.linalg.norm(positives, axis=1, keepdims=True)
    margin, scale = 0.2, 30.0
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 2] = mask[3, 1] = True  # pair 2's label is also a label of text 0, pair 1's of text 3
    logits = scale * (queries @ positives.T - margin * np.eye(4))
    expected = []
    for i in range(4):
        kept = [j for j in range(4) if not mask[i, j]]
        expected.append(-(logits[i, i] - np.log(np.exp(logits[i, kept]).sum())))
    loss = in_batch_negative_loss(paddle.to_tensor(queries), paddle.to_tensor(positives), margin, scale,
                                  paddle.to_tensor(mask))
    np.testing.assert_allclose(float(loss), np.mean(expected), rtol=1e-5)
    unmasked = in_batch_negative_loss(paddle.to_tensor(queries), paddle.to_tensor(positives), margin, scale)
    assert float(unmasked) > float(loss)


def test_a_label_of_the_query_text_is_never_its_negative():
    # pairs: (text 0, label 1), (text 0, label 2), (text 1, label 1), (text 2, label 0)
    mask = not_negative_mask([0, 0, 1, 2], [1, 2, 1, 0], [{1, 2}, {1}, {0}])
    assert mask.tolist() == [[False, True, True, False],
                             [True, False, True, False],
                             [True, False, False, False],
                             [False, False, False, False]]


def unit_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype("float32")
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_the_index_round_trips_and_reinserting_adds_no_duplicates(index_store):
    make_index = index_store.open
    info = IndexInfo(16, "encoder-a")
    vectors = unit_vectors(300, 16, 0)
    entries = [Entry(f"text {i}", [LABELS[i % 5]]) for i in range(300)]
    index = make_index(info)
    index.upsert(list(range(300)), vectors, entries)
    index.upsert(list(range(300)), vectors, entries)
    index.save()
    queries = unit_vectors(20, 16, 1)
    ids, similarities = index.search(queries, 5)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :5]
    assert index.count() == 300
    assert (ids == exact).mean() >= 0.95
    np.testing.assert_allclose(similarities, np.take_along_axis(queries @ vectors.T, ids, 1), atol=1e-5)
    if index_store.engine != "hnswlib":
        index.close()
    reopened = make_index(info)
    assert reopened.count() == 300
    np.testing.assert_array_equal(reopened.search(queries, 5)[0], ids)
    assert reopened.entries([7]) == {7: Entry("text 7", [LABELS[2]])}


def test_every_engine_returns_the_neighbours_hnswlib_returns(index_store, tmp_path):
    info = IndexInfo(8, "encoder-a")
    vectors, queries = unit_vectors(200, 8, 2), unit_vectors(10, 8, 3)
    entries = [Entry(str(i), []) for i in range(200)]
    results = []
    for index in (HnswIndex(tmp_path / "reference", info), index_store.open(info)):
        index.upsert(list(range(200)), vectors, entries)
        results.append(index.search(queries, 10)[0])
    np.testing.assert_array_equal(results[0], results[1])


def test_reads_see_the_writes_made_just_before_them(index_store):
    """No save, no wait: a Milvus server's default consistency answered these from an older snapshot."""
    info = IndexInfo(8, "encoder-a")
    vectors = unit_vectors(50, 8, 4)
    index = index_store.open(info)
    index.upsert(list(range(50)), vectors, [Entry(f"text {i}", ["体育"]) for i in range(50)])
    assert index.search(vectors[:3], 1)[0][:, 0].tolist() == [0, 1, 2]
    assert index.count() == 50
    index.upsert([0], vectors[:1], [Entry("changed", ["财经"])])
    assert index.entries([0, 1]) == {0: Entry("changed", ["财经"]), 1: Entry("text 1", ["体育"])}
    index.delete([1])
    assert index.count() == 49 and 1 not in index.ids()
    assert index.search(vectors[1:2], 1)[0][0, 0] != 1


def test_an_index_of_another_model_or_width_is_refused(index_store):
    make_index = index_store.open
    index = make_index(IndexInfo(16, "encoder-a"))
    index.upsert([0], unit_vectors(1, 16, 0), [Entry("x", ["体育"])])
    index.save()
    if index_store.engine != "hnswlib":
        index.close()
    with pytest.raises(DataError, match="was built with another model"):
        make_index(IndexInfo(16, "encoder-b"))
    with pytest.raises(DataError, match="16-dimensional.* 32"):
        make_index(IndexInfo(32, "encoder-a"))
    with pytest.raises(DataError, match=r"vectors of shape \(1, 8\) do not fit"):
        make_index(IndexInfo(16, "encoder-a")).upsert([1], unit_vectors(1, 8, 0), [Entry("y", [])])


def test_label_scores_of_both_modes():
    result = Recall([[Entry("体育", ["体育"]), Entry("财经", ["财经"]), Entry("体育", ["体育"])]],
                    np.array([[0.9, 0.6, 0.2]], dtype="float32"))
    np.testing.assert_allclose(label_scores(result, LABELS, "label")[0], [0.9, 0.6, 0, 0, 0])
    texts = Recall([[Entry("a", ["体育", "财经"]), Entry("b", ["财经"]), Entry("c", ["新标签"])]],
                   np.array([[0.5, 0.3, -0.4]], dtype="float32"))
    np.testing.assert_allclose(label_scores(texts, LABELS, "text")[0], [0.625, 1.0, 0, 0, 0], rtol=1e-6)


def test_recall_files_are_read_by_position(tmp_path):
    same = [Entry("体育", ["体育"])]
    result = Recall([same, [Entry("财经", ["财经"])]], np.array([[0.8], [0.7]], dtype="float32"))
    write_recall_file(tmp_path / "r.txt", ["同一句", "同一句"], result, "label")
    read, mode = read_recall_file(tmp_path / "r.txt", ["同一句", "同一句"])
    assert mode == "label" and [e[0].text for e in read.entries] == ["体育", "财经"]
    with pytest.raises(DataError, match="do not divide into 3 queries"):
        read_recall_file(tmp_path / "r.txt", ["a", "b", "c"])
    with pytest.raises(DataError, match="expected query 'b'"):
        read_recall_file(tmp_path / "r.txt", ["同一句", "b"])


# The keyword data with label names the scratch vocabulary covers (its own names' characters never
# occur in the texts, so they are all [UNK] to it): the first keywords of each label.
NAMES = {"体育": "足球篮球", "财经": "股票银行", "科技": "芯片手机", "娱乐": "电影明星", "教育": "学校考试"}


@pytest.fixture(scope="module")
def named_data(keyword_data, tmp_path_factory):
    directory = tmp_path_factory.mktemp("named_data")
    for name in ("train.txt", "dev.txt", "label.txt"):
        text = (keyword_data / name).read_text(encoding="utf-8")
        for old, new in NAMES.items():
            text = text.replace(old, new)
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def test_label_names_the_encoder_cannot_tell_apart_are_refused(keyword_data, scratch_model, tmp_path):
    result = run_main("retrieval_based/train.py", "--device", "cpu", "--model_name_or_path", scratch_model,
                      "--train_set_file", keyword_data / "train.txt", "--corpus_file", keyword_data / "label.txt",
                      "--similar_text_pair_file", keyword_data / "dev.txt", "--save_dir", tmp_path)
    assert result.returncode == 2
    assert ("the label names '体育' and '财经' get the same tokens ['[CLS]', '[UNK]', '[UNK]', '[SEP]']: the encoder "
            "cannot tell them apart") in result.stderr


@pytest.fixture(scope="module")
def retrieval_checkpoint(named_data, trained, tmp_path_factory):
    """Two epochs from the fine-tuned classifier's encoder (a scratch encoder's pooled outputs start
    nearly equal and need about six)."""
    keyword_data = named_data
    save_dir = tmp_path_factory.mktemp("retrieval") / "checkpoint"
    result = run_main("retrieval_based/train.py", "--device", "cpu", "--model_name_or_path", trained[0],
                      "--train_set_file", keyword_data / "train.txt", "--corpus_file", keyword_data / "label.txt",
                      "--similar_text_pair_file", keyword_data / "dev.txt", "--save_dir", save_dir,
                      "--recall_result_dir", save_dir / "recall", "--epochs", "2", "--batch_size", "32",
                      "--learning_rate", "3e-4", "--output_emb_size", "64", "--max_seq_length", "32",
                      "--recall_num", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    return save_dir, result.stderr


def test_training_logs_the_reference_lines_and_keeps_the_best_model(retrieval_checkpoint):
    save_dir, log = retrieval_checkpoint
    assert "global step 10, epoch: 1, batch: 10, loss: " in log
    assert log.count("evaluating") == 2 and "start build index.........." in log
    assert "Total index number:5" in log and "Macro f1 score: " in log
    best_lines = (save_dir / "model_best" / "train_result.txt").read_text(encoding="utf-8").splitlines()
    assert best_lines and best_lines[0].startswith("epoch=1, global_step: ")
    assert {p.name for p in (save_dir / "model_best").iterdir()} >= {
        "model_state.pdparams", "config.json", "semantic_index.json", "vocab.txt"}


def test_recall_and_evaluate_find_the_keyword_labels(retrieval_checkpoint, named_data, tmp_path, index_store):
    save_dir, _ = retrieval_checkpoint
    keyword_data = named_data
    store = index_store.args
    for _ in range(2):  # the second run replaces the entries of the first
        result = run_main("retrieval_based/recall.py", "--device", "cpu", "--corpus_file", keyword_data / "label.txt",
                          "--similar_text_pair_file", keyword_data / "dev.txt", "--params_path",
                          save_dir / "model_best" / "model_state.pdparams", "--recall_result_dir", tmp_path,
                          "--recall_result_file", "recall.txt", "--recall_num", "5", "--max_seq_length", "32", *store)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Total index number:5" in result.stderr
    rows = [row.split("\t") for row in (tmp_path / "recall.txt").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 5 * 100 and all(len(row) == 3 for row in rows)
    gold = [line.split("\t")[1].split(",") for line in (keyword_data / "dev.txt").read_text(encoding="utf-8").splitlines()
            if "\t" in line]
    labelled = [rows[5 * i] for i, line in enumerate((keyword_data / "dev.txt").read_text(encoding="utf-8").splitlines())
                if "\t" in line]
    top1 = np.mean([first[1] in names for first, names in zip(labelled, gold)])
    assert top1 > 0.9, top1
    result = run_main("retrieval_based/evaluate.py", "--label_path", keyword_data / "label.txt",
                      "--recall_result_file", tmp_path / "recall.txt", "--similar_text_pair", keyword_data / "dev.txt")
    micro = float(result.stdout.splitlines()[0].removeprefix("Micro fl score: "))
    assert result.stdout.splitlines()[1].startswith("Macro f1 score: ")
    assert micro > 60.0, result.stdout


def test_predict_prints_one_similarity_per_pair(retrieval_checkpoint, tmp_path):
    save_dir, _ = retrieval_checkpoint
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("今天足球比赛\t足球篮球,股票银行\n没有标签的一句\n新手机芯片\t芯片手机\n", encoding="utf-8")
    result = run_main("retrieval_based/predict.py", "--device", "cpu", "--params_path", save_dir / "model_best",
                      "--text_pair_file", pairs, "--max_seq_length", "32")
    assert result.returncode == 0, result.stderr[-2000:]
    similarities = [float(line) for line in result.stdout.splitlines()]
    assert len(similarities) == 3 and all(-1.0 <= value <= 1.0 for value in similarities)
    assert similarities[0] > similarities[1]  # its keyword's label above another label
    assert "1 lines without a label have no pair to score" in result.stderr


NEW_LABEL = NAMES["教育"]


@pytest.fixture(scope="module")
def held_out(named_data, trained, tmp_path_factory):
    """The retrieval encoder trained without one label (its name is in no file it reads), then exported."""
    root = tmp_path_factory.mktemp("held_out")
    data = root / "data"
    data.mkdir()
    for name in ("train.txt", "dev.txt"):
        lines = []
        for line in (named_data / name).read_text(encoding="utf-8").splitlines():
            text, _, labels = line.partition("\t")
            kept = [label for label in labels.split(",") if label and label != NEW_LABEL]
            lines.append(text + ("\t" + ",".join(kept) if kept else ""))
        (data / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    labels = [name for name in NAMES.values() if name != NEW_LABEL]
    (data / "label.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    result = run_main("retrieval_based/train.py", "--device", "cpu", "--model_name_or_path", trained[0],
                      "--train_set_file", data / "train.txt", "--corpus_file", data / "label.txt",
                      "--similar_text_pair_file", data / "dev.txt", "--save_dir", root / "checkpoint",
                      "--recall_result_dir", root / "recall", "--epochs", "2", "--learning_rate", "3e-4",
                      "--output_emb_size", "64", "--max_seq_length", "32", "--recall_num", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_main("retrieval_based/export_model.py", "--params_path", root / "checkpoint" / "model_best",
                      "--output_path", root / "output")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "embeddings of 32 probe texts within" in result.stderr
    return data, root / "output"


def printed_scores(stdout: str) -> dict[str, dict[str, float]]:
    """run_system.py's `{'sentence': text} label score` lines: per text, each printed label's score, best first."""
    scores: dict[str, dict[str, float]] = {}
    for line in stdout.splitlines()[2:]:
        sentence, rest = line.split("'}")[0].split("'")[-1], line.split("'} ")[1]
        scores.setdefault(sentence, {})[rest.split()[0]] = float(rest.split()[1])
    return scores


def insert_labels(export_dir, label_file, store: list, work) -> str:
    result = run_main("retrieval_based/utils/feature_extract.py", "--device", "cpu", "--model_dir", export_dir,
                      "--corpus_file", label_file, "--output_dir", work, "--data_name", "label")
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.load(work / "label_embedding.npy").shape == (len(label_file.read_text(encoding="utf-8").split()), 64)
    result = run_main("retrieval_based/utils/vector_insert.py", "--vector_path", work / "label_embedding.npy", *store)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def test_a_label_added_after_training_is_predicted_for_its_keywords(held_out, named_data, tmp_path, index_store):
    data, export_dir = held_out
    store = index_store.args
    assert "Insert 4 entities, there are 4 entities after insert data." in insert_labels(
        export_dir, data / "label.txt", store, tmp_path)
    texts = ["学校考试的老师", "今天学校考试了", "学生在学校考试"]
    query = ["retrieval_based/run_system.py", "--device", "cpu", "--model_dir", export_dir, "--text", *texts,
             "--max_seq_length", "32", "--threshold", "0.3", *store]
    before = run_main(*query)
    assert before.returncode == 0, before.stderr[-3000:]
    assert all(NEW_LABEL not in labels for labels in printed_scores(before.stdout).values())
    with_new = tmp_path / "label_new.txt"
    with_new.write_text(data.joinpath("label.txt").read_text(encoding="utf-8") + NEW_LABEL + "\n", encoding="utf-8")
    for _ in range(2):  # inserting the same labels again adds nothing
        log = insert_labels(export_dir, with_new, store, tmp_path)
        assert "Insert 5 entities, there are 5 entities after insert data." in log
    after = run_main(*query)
    assert after.returncode == 0, after.stderr[-3000:]
    assert after.stdout.startswith("Extract feature time to cost :") and "Search milvus time cost is " in after.stdout
    best = {text: next(iter(labels)) for text, labels in printed_scores(after.stdout).items()}
    assert best == {text: NEW_LABEL for text in texts}, after.stdout


def test_an_index_of_another_encoder_is_refused_by_vector_insert(held_out, retrieval_checkpoint, tmp_path):
    data, export_dir = held_out
    store = ["--index_path", tmp_path / "hnsw"]
    insert_labels(export_dir, data / "label.txt", store, tmp_path)
    other = tmp_path / "other_export"
    result = run_main("retrieval_based/export_model.py", "--params_path", retrieval_checkpoint[0] / "model_best",
                      "--output_path", other)
    assert result.returncode == 0, result.stderr[-3000:]
    run_main("retrieval_based/utils/feature_extract.py", "--device", "cpu", "--model_dir", other,
             "--corpus_file", data / "label.txt", "--output_dir", tmp_path / "o", "--data_name", "label")
    result = run_main("retrieval_based/utils/vector_insert.py", "--vector_path", tmp_path / "o" / "label_embedding.npy",
                      *store)
    assert result.returncode == 2 and "was built with another model" in result.stderr


def test_the_embedding_server_answers_what_the_export_computes_and_run_system_uses_it(held_out, tmp_path):
    """retrieval_based/deploy/simple_serving: a real server; its embeddings are the exported encoder's,
    run_system.py --server_url labels like run_system.py --model_dir, bad requests get a 422."""
    data, export_dir = held_out
    texts = ["学校考试的老师", "足球篮球比赛", ""]
    exported = load_encoder_export(export_dir, "cpu")
    store = ["--index_path", tmp_path / "hnsw"]
    insert_labels(export_dir, data / "label.txt", store, tmp_path)
    with running_simple_server("server", export_dir, tmp_path / "server.log", "retrieval_based/deploy/simple_serving",
                               "models/semantic_index") as url:
        status, answer = post(url, {"data": {"text": texts}, "parameters": {"max_seq_len": 32, "batch_size": 2}})
        assert status == 200, answer
        np.testing.assert_allclose(answer["result"]["embedding"], exported.embed(texts, 32, 32), atol=1e-5)
        assert answer["result"]["encoder"] == exported.encoder
        status, answer = post(url, {"data": {"text": ["考试", 7]}})
        assert status == 422 and answer["detail"] == "text[1] is int, not a string"
        status, answer = post(url, {"data": {"text": "考试"}, "parameters": {"max_seq_len": 1}})
        assert status == 422 and "max_seq_len" in answer["detail"] and "got 1" in answer["detail"]
        status, answer = post(url, {"data": {"text": ["考试", "考" * (MAX_TEXT_CHARS + 1)]}})
        assert status == 413 and "text[1] has" in answer["detail"] and "--max_text_chars" in answer["detail"]

        (tmp_path / "texts.txt").write_text("学校考试\n股票银行\n", encoding="utf-8")
        result = run_script("retrieval_based/deploy/simple_serving/client.py", "--url", url, "--input_file",
                            tmp_path / "texts.txt")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("time to cost :") and f"encoder: {exported.encoder}\n(2, 64)\n" in result.stdout

        query = ["retrieval_based/run_system.py", "--text", *texts[:2], "--max_seq_length", "32", "--threshold", "0.3",
                 *store]
        served = run_main(*query, "--server_url", url)
    assert served.returncode == 0, served.stderr[-3000:]
    local = run_main(*query, "--device", "cpu", "--model_dir", export_dir)
    assert local.returncode == 0, local.stderr[-3000:]
    served_scores, local_scores = printed_scores(served.stdout), printed_scores(local.stdout)
    assert served_scores.keys() == local_scores.keys() == set(texts[:2])
    for text in texts[:2]:
        assert list(served_scores[text]) == list(local_scores[text])
        np.testing.assert_allclose(list(served_scores[text].values()), list(local_scores[text].values()), atol=1e-5)
    result = run_main(*query, "--device", "cpu", "--model_dir", export_dir, "--server_url", url)
    assert result.returncode == 2 and "give the encoder: --model_dir" in result.stderr
    result = run_main(*query, "--server_url", url)  # the server has stopped
    assert result.returncode == 2 and "the embedding server: cannot reach" in result.stderr


def test_deploy_predict_prints_the_embedding_and_the_similarity_of_each_label(held_out):
    _, export_dir = held_out
    text, names = "学校考试的老师", [NAMES["教育"], NAMES["体育"]]
    result = run_main("retrieval_based/deploy/python/predict.py", "--device", "cpu", "--model_dir", export_dir,
                      "--text", text, "--label", *names, "--max_seq_length", "32")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[:2] == [str({0: {"sentence": text}}), "(1, 64)"]
    vectors = load_encoder_export(export_dir, "cpu").embed([text, *names], 32, 32)
    np.testing.assert_allclose(ast.literal_eval(lines[-1]), vectors[1:] @ vectors[0], atol=1e-5)
    result = run_main("retrieval_based/deploy/python/predict.py", "--model_dir", export_dir, "--device", "cpu",
                      "--use_tensorrt", "True")
    assert result.returncode == 2 and "TensorRT is not supported" in result.stderr


def test_bad_input_ends_with_one_clear_error(named_data, held_out, retrieval_checkpoint, tmp_path):
    """Each script refuses bad input before any work, with the file and the reason (exit code 2)."""
    _, export_dir = held_out
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    unknown = tmp_path / "dev_unknown.txt"
    unknown.write_text("学校考试的老师\t学校考试\n足球比赛\t棒球\n", encoding="utf-8")
    unlabelled = tmp_path / "train_unlabelled.txt"
    unlabelled.write_text("学校考试的老师\n足球比赛\n", encoding="utf-8")
    train = ["retrieval_based/train.py", "--device", "cpu", "--model_name_or_path", "unused",
             "--corpus_file", named_data / "label.txt", "--save_dir", tmp_path / "c"]
    cases = [
        (train + ["--train_set_file", named_data / "train.txt", "--similar_text_pair_file", unknown],
         f"{unknown}:2: unknown label '棒球'"),
        (train + ["--train_set_file", unlabelled, "--similar_text_pair_file", named_data / "dev.txt"],
         "no line has a label; the encoder learns from (text, label) pairs"),
        (["retrieval_based/utils/feature_extract.py", "--device", "cpu", "--model_dir", export_dir,
          "--corpus_file", empty, "--output_dir", tmp_path, "--data_name", "x"], f"{empty}: the corpus is empty"),
        (["retrieval_based/recall.py", "--device", "cpu", "--corpus_file", named_data / "label.txt",
          "--similar_text_pair_file", named_data / "dev.txt", "--params_path", retrieval_checkpoint[0] / "model_best",
          "--recall_mode", "text"], "--recall_mode text indexes the labelled texts of --train_set_file; give it"),
        (["retrieval_based/run_system.py", "--device", "cpu", "--model_dir", export_dir, "--index_path",
          tmp_path / "no_index"], "the index is empty: fill it with utils/feature_extract.py"),
        (["retrieval_based/run_system.py", "--device", "cpu", "--model_dir", export_dir, "--index_path",
          tmp_path / "no_index", "--input_file", empty], f"{empty}: no texts to label"),
    ]
    for argv, message in cases:
        result = run_main(*argv)
        assert result.returncode == 2 and message in result.stderr, (argv[0], result.stderr[-1500:])
        assert "Traceback" not in result.stderr


@pytest.mark.slow  # a new interpreter: the process boundary is what it tests
def test_scripts_run_from_their_directory_import_the_suite_not_their_utils_folder():
    """retrieval_based/utils/ is the reference's folder name; run from retrieval_based/, Python must
    still find the suite's utils.py (make installs the checkout in compat mode, the checkout itself importable)."""
    result = run_script("retrieval_based/evaluate.py", "--help", cwd=ROOT / "retrieval_based")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--recall_result_file" in result.stdout


def test_the_text_corpus_votes_the_labels_of_the_nearest_training_texts(retrieval_checkpoint, named_data, tmp_path):
    save_dir, _ = retrieval_checkpoint
    result = run_main("retrieval_based/recall.py", "--device", "cpu", "--corpus_file", named_data / "label.txt",
                      "--similar_text_pair_file", named_data / "dev.txt", "--params_path", save_dir / "model_best",
                      "--recall_mode", "text", "--train_set_file", named_data / "train.txt",
                      "--recall_result_dir", tmp_path, "--recall_result_file", "recall.txt", "--recall_num", "10",
                      "--max_seq_length", "32")
    assert result.returncode == 0, result.stderr[-3000:]
    distinct_labelled = len({line.split("\t")[0] for line in (named_data / "train.txt").read_text(
        encoding="utf-8").splitlines() if "\t" in line})
    assert f"Total index number:{distinct_labelled}" in result.stderr
    rows = [row.split("\t") for row in (tmp_path / "recall.txt").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 10 * 100 and all(len(row) == 4 for row in rows)
    train_labels: dict[str, set[str]] = {}  # a text on several lines has all their labels
    for line in (named_data / "train.txt").read_text(encoding="utf-8").splitlines():
        if "\t" in line:
            train_labels.setdefault(line.split("\t")[0], set()).update(line.split("\t")[1].split(","))
    assert all(set(row[3].split(",")) == train_labels[row[1]] for row in rows)
    result = run_main("retrieval_based/evaluate.py", "--label_path", named_data / "label.txt",
                      "--recall_result_file", tmp_path / "recall.txt", "--similar_text_pair", named_data / "dev.txt",
                      "--threshold", "0.3")
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.splitlines()[0].removeprefix("Micro fl score: ")) > 70.0, result.stdout


@pytest.mark.slow
def test_recall_warns_of_index_entries_the_corpus_no_longer_has_and_prunes_them(retrieval_checkpoint, named_data,
                                                                                 tmp_path):
    """A reused --index_path built with a label that is then removed from the label file."""
    save_dir, _ = retrieval_checkpoint
    removed = NAMES["教育"]
    smaller = tmp_path / "label_smaller.txt"
    smaller.write_text("".join(f"{name}\n" for name in NAMES.values() if name != removed), encoding="utf-8")
    texts = tmp_path / "texts.txt"  # the dev texts without their labels (the removed one is unknown to smaller)
    texts.write_text("".join(line.split("\t")[0] + "\n" for line in
                             (named_data / "dev.txt").read_text(encoding="utf-8").splitlines()[:20]), encoding="utf-8")
    recall = ["retrieval_based/recall.py", "--device", "cpu", "--params_path", save_dir / "model_best",
              "--similar_text_pair_file", texts, "--index_path", tmp_path / "hnsw", "--recall_result_dir", tmp_path,
              "--recall_result_file", "recall.txt", "--recall_num", "5", "--max_seq_length", "32"]
    result = run_main(*recall, "--corpus_file", named_data / "label.txt")
    assert result.returncode == 0 and "Total index number:5" in result.stderr, result.stderr[-2000:]
    result = run_main(*recall, "--corpus_file", smaller)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"the index holds 1 entries that are not in the corpus (e.g. {removed!r})" in result.stderr
    assert removed in (tmp_path / "recall.txt").read_text(encoding="utf-8")
    result = run_main(*recall, "--corpus_file", smaller, "--prune_index")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Removed 1 index entries that are not in the corpus (e.g. {removed!r})" in result.stderr
    assert "Total index number:4" in result.stderr
    assert removed not in (tmp_path / "recall.txt").read_text(encoding="utf-8")


@pytest.mark.slow
def test_run_system_warns_of_index_entries_not_in_its_corpus_file_and_prunes_them(held_out, tmp_path):
    data, export_dir = held_out
    store = ["--index_path", tmp_path / "hnsw"]
    insert_labels(export_dir, data / "label.txt", store, tmp_path)
    names = data.joinpath("label.txt").read_text(encoding="utf-8").split()
    smaller = tmp_path / "label_smaller.txt"
    smaller.write_text("\n".join(names[1:]) + "\n", encoding="utf-8")
    query = ["retrieval_based/run_system.py", "--device", "cpu", "--model_dir", export_dir, "--text", names[0],
             "--max_seq_length", "32", "--threshold", "0.01", "--corpus_file", smaller, *store]
    warned = run_main(*query)
    assert warned.returncode == 0, warned.stderr[-2000:]
    assert f"the index holds 1 entries that are not in the corpus (e.g. {names[0]!r})" in warned.stderr
    assert names[0] in printed_scores(warned.stdout)[names[0]]
    pruned = run_main(*query, "--prune_index")
    assert pruned.returncode == 0, pruned.stderr[-2000:]
    assert f"Removed 1 index entries that are not in the corpus (e.g. {names[0]!r})" in pruned.stderr
    assert names[0] not in printed_scores(pruned.stdout).get(names[0], {})
    assert "not in the corpus" not in run_main(*query).stderr
    result = run_main(*query[:-4], *store, "--prune_index")
    assert result.returncode == 2 and "--prune_index" in result.stderr and "--corpus_file" in result.stderr


@pytest.mark.slow
def test_feature_extract_refuses_label_names_the_encoder_cannot_tell_apart(held_out, tmp_path):
    """The check recall.py makes: the scratch vocabulary has none of the original names' characters,
    so 体育 and 财经 are both [UNK] [UNK] and would score the same for every text."""
    _, export_dir = held_out
    labels = tmp_path / "label.txt"
    labels.write_text("足球篮球\n体育\n财经\n", encoding="utf-8")
    result = run_main("retrieval_based/utils/feature_extract.py", "--device", "cpu", "--model_dir", export_dir,
                      "--corpus_file", labels, "--output_dir", tmp_path / "vectors", "--data_name", "label")
    assert result.returncode == 2, result.stderr[-2000:]
    assert ("the label names '体育' and '财经' get the same tokens ['[CLS]', '[UNK]', '[UNK]', '[SEP]']: the encoder "
            "cannot tell them apart") in result.stderr
    assert not (tmp_path / "vectors" / "label_embedding.npy").exists()
