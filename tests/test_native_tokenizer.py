"""native_tokenizer: the native WordPiece (ERNIE) and SentencePiece (ERNIE-M) encoders give exactly the
paddlenlp tokenizers' tokens and ids."""
import random
import subprocess
import sys
import unicodedata
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import sentencepiece as spm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paddlenlp.transformers import AutoTokenizer, BasicTokenizer, ErnieMTokenizer, ErnieTokenizer

import native_tokenizer
from native_tokenizer import PaddleNLPEncoder, SentencePieceEncoder, WordPieceEncoder, token_encoder
from pipeline import TextPipeline

ROOT = Path(__file__).resolve().parents[1]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Characters that exercise every rule: CJK and compatibility ideographs, full-width forms, accents and
# combining marks, Greek sigma and Turkish dotted I (case mappings), emoji, symbols, control and
# whitespace characters (tab, NBSP, ideographic space, line separator), ASCII letters and punctuation.
ALPHABET = ("中国婚姻法豈𠀀𫠠ＡＢｃ１２，。！＠é̀Èǅ\u0301\u0316\u0903ΣσςİıßẞǰÅΩ😀👍🏽©×÷±€¥√→"
            "\x00\x01\x7f\x85\u200b\u200d\ufeff\ufffd\t\n\r \u00a0\u3000\u2028\u2029\u1680"
            "abcXYZ019.,;:!?'\"()[]{}<>-_/\\#@$%^&*~`|")


def make_tokenizer(tmp_path: Path, vocab: list[str]):
    """An ERNIE tokenizer with this vocabulary, saved and reloaded like a checkpoint's."""
    directory = tmp_path / "tokenizer"
    directory.mkdir(exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(dict.fromkeys(SPECIAL + vocab)) + "\n", encoding="utf-8")
    ErnieTokenizer(str(directory / "vocab.txt")).save_pretrained(str(directory))
    return AutoTokenizer.from_pretrained(str(directory))


@pytest.fixture(scope="module")
def alphabet_tokenizer(tmp_path_factory):
    """Every normalized character of ALPHABET, alone and as a continuation, plus some longer words, so
    that a wrong split or a wrong longest match changes the ids (not everything is [UNK])."""
    tokenizer = make_tokenizer(tmp_path_factory.mktemp("alphabet"), [])
    pieces = {token for char in ALPHABET for token in tokenizer.tokenize(char)} - set(SPECIAL)
    words = ["abc", "xyz", "婚姻", "ab", "bc", "019", "ss", "i̇"]
    return make_tokenizer(tmp_path_factory.mktemp("alphabet_full"),
                          sorted(pieces) + ["##" + p for p in sorted(pieces)] + words + ["##" + w for w in words])


def paddlenlp_ids(tokenizer, texts):
    return [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)) for text in texts]


@pytest.fixture(scope="module")
def alphabet_encoder(alphabet_tokenizer):
    return WordPieceEncoder(alphabet_tokenizer)


def test_code_points_are_normalized_and_split_as_paddlenlp_does(alphabet_tokenizer, alphabet_encoder, monkeypatch):
    """Every code point outside category C (about 145,000), and every 16th one inside it (removed by one
    generated class), between two letters, compared as token strings (before the vocabulary, so no
    difference hides behind [UNK]): removal, whitespace, case, accents, CJK, punctuation and symbols
    follow this Python's unicodedata exactly."""
    encoder = alphabet_encoder
    monkeypatch.setattr(alphabet_tokenizer, "_tokenize", alphabet_tokenizer.basic_tokenizer.tokenize)
    code_points = [cp for cp in range(sys.maxunicode + 1) if not 0xD800 <= cp <= 0xDFFF and (
        cp % 16 == 0 or unicodedata.category(chr(cp))[0] != "C")]
    assert len(code_points) > 200_000
    chunk = 8192
    for start in range(0, len(code_points), chunk):
        text = " ".join(f"a{chr(cp)}b" for cp in code_points[start:start + chunk])
        normalized = encoder.native.normalizer.normalize_str(encoder.with_python_results(text))
        native = [piece for piece, _ in encoder.native.pre_tokenizer.pre_tokenize_str(normalized)]
        expected = alphabet_tokenizer.tokenize(text)
        if native != expected:
            first = next(i for i, (a, b) in enumerate(zip(native + [None], expected + [None])) if a != b)
            pytest.fail(f"code points U+{code_points[start]:04X}..: native {native[first - 2:first + 3]} "
                        f"!= paddlenlp {expected[first - 2:first + 3]}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.sampled_from(ALPHABET), st.sampled_from(SPECIAL + ["[sep]", "[SEP", "##"]),
                          st.text(st.sampled_from("abcxyz"), min_size=95, max_size=110),  # around the 100-char limit
                          st.characters(exclude_categories=["Cs"])), max_size=40).map("".join))
def test_random_text_gets_the_paddlenlp_ids(alphabet_tokenizer, alphabet_encoder, text):
    assert alphabet_encoder([text]) == paddlenlp_ids(alphabet_tokenizer, [text])


def repository_texts() -> list[str]:
    """Every tab-separated field of every data file tracked in git: texts, label names and prompt files."""
    data_files = [ROOT / path for path in subprocess.run(["git", "ls-files", "*.txt"], cwd=ROOT, check=True,
                                                          capture_output=True, text=True).stdout.split()
                  if "data" in Path(path).parts]
    assert len(data_files) >= 10
    return [text for path in data_files for line in path.read_text(encoding="utf-8").splitlines()
            for text in line.split("\t")]


def test_every_data_file_in_the_repository_gets_the_paddlenlp_ids(tmp_path):
    texts = repository_texts()
    assert len(texts) > 1000
    words = {word for text in texts[::3] for word in BasicTokenizer().tokenize(text)}  # a third are unknown words
    characters = {char for word in words for char in word}
    tokenizer = make_tokenizer(tmp_path, sorted(words | characters | {"##" + char for char in characters}))
    encoder = token_encoder(tokenizer)
    assert isinstance(encoder, WordPieceEncoder)
    assert encoder(texts) == paddlenlp_ids(tokenizer, texts)


def test_a_lone_surrogate_is_dropped_as_paddlenlp_drops_it(alphabet_tokenizer, alphabet_encoder):
    texts = ["ab\ud800c 中", "abc"]
    assert alphabet_encoder(texts) == paddlenlp_ids(alphabet_tokenizer, texts)


def test_tokenizers_the_native_encoder_cannot_reproduce_fall_back_to_paddlenlp(alphabet_tokenizer, monkeypatch):
    class OwnSplit(type(alphabet_tokenizer)):
        def _tokenize(self, text):
            return text.split()

    alphabet_tokenizer.__class__ = OwnSplit
    try:
        encoder = token_encoder(alphabet_tokenizer)
    finally:
        alphabet_tokenizer.__class__ = OwnSplit.__mro__[1]
    assert isinstance(encoder, PaddleNLPEncoder)
    assert encoder.name == "paddlenlp OwnSplit (no native equivalent of OwnSplit)"
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    encoder = token_encoder(alphabet_tokenizer)
    assert encoder.name == "paddlenlp ErnieTokenizer (the tokenizers package is not installed)"
    assert encoder(["abc 中"]) == paddlenlp_ids(alphabet_tokenizer, ["abc 中"])


def test_the_ernie_m_checkpoint_gets_the_native_encoder(ernie_m_scratch):
    tokenizer = AutoTokenizer.from_pretrained(str(ernie_m_scratch))
    encoder = token_encoder(tokenizer)
    assert encoder.name == "native SentencePiece (sentencepiece 0.2.3), ids equal to ErnieMTokenizer"
    assert encoder(["婚姻 abc"]) == paddlenlp_ids(tokenizer, ["婚姻 abc"])


# ERNIE-M: characters its piece split treats differently (CJK inside and outside U+4E00-U+9FFF, its
# punctuation, digits of several scripts, the word-start mark) besides ALPHABET.
ERNIE_M_ALPHABET = ALPHABET + "▁婚后１２３²٣〇,;:.?!~，；：。？！《》【】ab12"


def train_ernie_m_tokenizer(directory: Path, model_type: str):
    """A SentencePiece model of `model_type` trained on the repository's texts and ERNIE_M_ALPHABET
    strings, with a vocab.txt of every token ErnieMTokenizer makes of them (so ids tell tokens apart)."""
    directory.mkdir()
    rng = random.Random(0)
    lines = [line for line in repository_texts() if line.strip()] + [
        "".join(rng.choices(ERNIE_M_ALPHABET.replace("\n", "").replace("\r", ""), k=rng.randint(1, 30)))
        for _ in range(3000)]
    (directory / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(directory / "corpus.txt"), model_prefix=str(directory / "sp"),
                                   model_type=model_type, vocab_size=3000, character_coverage=1.0,
                                   hard_vocab_limit=False, minloglevel=2)
    vocab_file, sp_file = directory / "vocab.txt", str(directory / "sp.model")
    vocab_file.write_text("\n".join(SPECIAL) + "\n", encoding="utf-8")
    bare = ErnieMTokenizer(str(vocab_file), sp_file)
    counts = Counter(token for text in lines + list(ERNIE_M_ALPHABET) for token in bare.tokenize(text))
    vocab_file.write_text("\n".join(dict.fromkeys(SPECIAL + sorted(counts))) + "\n", encoding="utf-8")
    ErnieMTokenizer(str(vocab_file), sp_file).save_pretrained(str(directory / "saved"))
    return AutoTokenizer.from_pretrained(str(directory / "saved"))


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def sentencepiece_tokenizer(request, tmp_path_factory):
    return train_ernie_m_tokenizer(tmp_path_factory.mktemp("ernie_m") / request.param, request.param)


def reference_piece_split(tokenizer, piece: str) -> list[str]:
    """ErnieMTokenizer._tokenize applied to one piece: its SentencePiece step made to return the piece."""
    harness = SimpleNamespace(sp_model=SimpleNamespace(EncodeAsPieces=lambda text: [text]),
                              is_ch_char=tokenizer.is_ch_char, is_punct=tokenizer.is_punct)
    return ErnieMTokenizer._tokenize(harness, piece)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.sampled_from("▁▁a1２²٣中𠀀,。《xX "), max_size=12))
def test_a_piece_is_split_as_ernie_m_splits_it(sentencepiece_tokenizer, piece):
    encoder = SentencePieceEncoder(sentencepiece_tokenizer)
    assert encoder.split_piece(piece) == reference_piece_split(sentencepiece_tokenizer, piece)


def test_every_piece_of_the_model_gets_the_paddlenlp_split_and_ids(sentencepiece_tokenizer):
    """Each piece id's table entry equals what paddlenlp makes of the piece's text."""
    encoder = SentencePieceEncoder(sentencepiece_tokenizer)
    model = sentencepiece_tokenizer.sp_model
    pieces = [model.id_to_piece(piece_id) for piece_id in range(model.get_piece_size())]
    assert sum(len(reference_piece_split(sentencepiece_tokenizer, piece)) > 1 for piece in pieces) > 50
    for piece_id, piece in enumerate(pieces):
        expected = sentencepiece_tokenizer.convert_tokens_to_ids(reference_piece_split(sentencepiece_tokenizer, piece))
        assert list(encoder.piece_ids(piece_id)) == expected, piece


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.sampled_from(ERNIE_M_ALPHABET), st.sampled_from(SPECIAL + ["[sep]", "[SEP", "▁"]),
                          st.text(st.sampled_from("ab12婚姻"), min_size=1, max_size=40),
                          st.characters(exclude_categories=["Cs"])), max_size=40).map("".join))
def test_random_text_gets_the_ernie_m_ids(sentencepiece_tokenizer, text):
    """Known and unknown pieces, special tokens with the whitespace around them, digits of every script."""
    encoder = SentencePieceEncoder(sentencepiece_tokenizer)
    assert encoder([text, "婚姻" + text]) == paddlenlp_ids(sentencepiece_tokenizer, [text, "婚姻" + text])


def test_every_data_file_gets_the_ernie_m_ids_lowercased_or_not(sentencepiece_tokenizer):
    """Lowercasing is per character (no final sigma), and a text that lowercases into a special token
    ("<MARK>" into "<mark>") gets that token, as paddlenlp lowercases before it cuts specials out."""
    texts = repository_texts() + ["ΣΑΣ ΑΣ", "İSTANBUL [SEP] x", "[UNK]", "a <MARK> b", "<mark>"]
    assert SentencePieceEncoder(sentencepiece_tokenizer)(texts) == paddlenlp_ids(sentencepiece_tokenizer, texts)
    lowercasing = AutoTokenizer.from_pretrained(str(Path(sentencepiece_tokenizer.sentencepiece_model_file).parent),
                                                do_lower_case=True)
    lowercasing.add_special_tokens({"additional_special_tokens": ["<mark>"]})
    assert lowercasing.tokenize("a <MARK> b") == ["▁a", "<mark>", "▁b"]
    assert SentencePieceEncoder(lowercasing)(texts) == paddlenlp_ids(lowercasing, texts)


def test_ernie_m_drops_a_lone_surrogate_on_which_paddlenlp_fails(sentencepiece_tokenizer):
    with pytest.raises(RuntimeError):
        sentencepiece_tokenizer.tokenize("ab\ud800c 中")
    assert SentencePieceEncoder(sentencepiece_tokenizer)(["ab\ud800c 中"]) == paddlenlp_ids(
        sentencepiece_tokenizer, ["abc 中"])


def test_the_character_tables_come_from_this_python():
    """The classes are regenerated from unicodedata, so they follow the interpreter's Unicode version."""
    tables = native_tokenizer.unicode_tables()
    assert "\\x{3000}" in tables["whitespace"] and "\\x{2028}" in tables["whitespace"]
    assert tables["removed"].startswith("[\\x{0}-\\x{8}")


@pytest.mark.parametrize("model", ["scratch_model", "ernie_m_scratch"])
def test_pipeline_rows_equal_what_the_paddlenlp_tokenizer_builds(model, request, keyword_data):
    """Rows are built from the tokenizer's special-token layout, not by calling it per row: the ids and
    token types must still be the ones its own __call__ gives, cut to max_seq_length."""
    tokenizer = AutoTokenizer.from_pretrained(str(request.getfixturevalue(model)))
    texts = [line.split("\t")[0] for line in (keyword_data / "dev.txt").read_text(encoding="utf-8").splitlines()]
    texts += ["", "   ", "[SEP] 中文 ABC" * 20]
    input_names = ["input_ids", "token_type_ids"] if model == "scratch_model" else ["input_ids"]
    rows = TextPipeline(tokenizer, input_names, max_seq_length=16).encode(texts)
    expected = tokenizer(texts, max_length=16, truncation=True)
    for name in input_names:
        assert rows.features[name] == expected[name], name
