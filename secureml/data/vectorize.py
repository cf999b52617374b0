"""Texts to fixed-length token ids, with a vocabulary fitted on the training split only or
given (`TextVectorizer.from_vocabulary`, `read_vocabulary`).

Wraps Keras `TextVectorization` so tokenizing runs as TensorFlow graph ops. Standardization
lowercases (Unicode-aware), replaces HTML tags such as `<br />` with a space and deletes
punctuation and symbols; `tokenize` splits texts exactly as the vectorizer does. Id 0 is padding
and id 1 stands for words outside the vocabulary. TensorFlow is imported only when a vectorizer
is fitted, loaded or called.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import memory
from ..errors import DataError
from .decoded import as_text_array

_VOCABULARY_FILE = "vocabulary.json"
_CONFIG_FILE = "vectorizer.json"
# Saved with the vocabulary: loading refuses files written with another standardization,
# which would silently map words to different ids.
_STANDARDIZE = "lower+strip_html+strip_punctuation/v1"
_BATCH = 8192
_RESERVED = ("", "[UNK]")  # padding and out-of-vocabulary, ids 0 and 1


def _standardize(texts):
    import tensorflow as tf

    texts = tf.strings.lower(texts, encoding="utf-8")
    texts = tf.strings.regex_replace(texts, r"<[^>]*>", " ")
    return tf.strings.regex_replace(texts, r"[\p{P}\p{S}]", "")


def tokenize(texts):
    """Each text's tokens in order, standardized and split as the vectorizer does (one list of
    strings per text, yielded batch by batch)."""
    import tensorflow as tf

    texts = _as_strings(texts)
    for i in range(0, len(texts), _BATCH):
        for tokens in tf.strings.split(_standardize(texts[i:i + _BATCH])).to_list():
            yield [token.decode("utf-8") for token in tokens]


class TextVectorizer:
    """Token ids of shape (N, sequence_length), padded with 0 and truncated at the end.

    `vocab_size` counts every id, including padding (0) and out-of-vocabulary (1).
    """

    def __init__(self, vocab_size: int = 10000, sequence_length: int = 100):
        if vocab_size < 3 or sequence_length < 1:
            raise ValueError(f"vocab_size must be >= 3 and sequence_length >= 1, got "
                             f"{vocab_size} and {sequence_length}")
        self.vocab_size = vocab_size
        self.sequence_length = sequence_length
        self._layer = None

    def _make_layer(self, vocabulary=None):
        import tensorflow as tf

        return tf.keras.layers.TextVectorization(
            max_tokens=self.vocab_size, standardize=_standardize, split="whitespace",
            output_mode="int", output_sequence_length=self.sequence_length,
            vocabulary=vocabulary)

    def fit(self, texts) -> TextVectorizer:
        """Learn the vocabulary from `texts`, which must be the training split only."""
        texts = _as_strings(texts)
        if len(texts) == 0:
            raise DataError("cannot fit a text vectorizer on no texts; pass the training texts")
        layer = self._make_layer()
        layer.adapt(texts, batch_size=1024)
        if len(layer.get_vocabulary()) <= 2:
            raise DataError("the training texts contain no words after standardization "
                            "(lowercasing, removing HTML and punctuation); check the text column")
        self._layer = layer
        return self

    @classmethod
    def from_vocabulary(cls, tokens: list[str], sequence_length: int = 100) -> TextVectorizer:
        """A vectorizer with exactly `tokens` (ids 2, 3, ... in this order), fitted on nothing.

        Tokens must be distinct and standardized (`tokenize` of each gives back the token)."""
        tokens = list(tokens)
        if not tokens:
            raise DataError("a vocabulary needs at least one token")
        if len(set(tokens)) != len(tokens) or any(t in _RESERVED for t in tokens):
            raise DataError("vocabulary tokens must be distinct and must not be '' or '[UNK]' "
                            "(ids 0 and 1 are reserved for them)")
        vectorizer = cls(len(tokens) + len(_RESERVED), sequence_length)
        vectorizer._layer = vectorizer._make_layer(tokens)
        return vectorizer

    def __call__(self, texts) -> np.ndarray:
        layer = self._fitted()
        texts = _as_strings(texts)
        if len(texts) == 0:
            return np.zeros((0, self.sequence_length), dtype=np.int32)
        memory.require(4 * len(texts) * self.sequence_length,
                       f"{len(texts)} texts as token ids of sequence_length "
                       f"{self.sequence_length} (int32)",
                       "set a smaller data.sequence_length (most texts are shorter than a few "
                       "hundred words)")
        batches = [layer(texts[i:i + _BATCH]).numpy() for i in range(0, len(texts), _BATCH)]
        return np.concatenate(batches).astype(np.int32)

    @property
    def vocabulary(self) -> list[str]:
        """Tokens by id: "" (padding) at 0, "[UNK]" (out of vocabulary) at 1."""
        return list(self._fitted().get_vocabulary())

    def decode(self, ids) -> list[str]:
        """Token ids back to text (standardized words, padding dropped), one string per row."""
        vocabulary = self.vocabulary
        ids = np.asarray(ids)
        rows = ids[None] if ids.ndim == 1 else ids
        return [" ".join(vocabulary[i] if 0 < i < len(vocabulary) else vocabulary[1]
                         for i in row.tolist() if i != 0) for row in rows]

    def save(self, directory: str | Path) -> Path:
        """Write the vocabulary and settings as JSON files into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / _VOCABULARY_FILE).write_text(
            json.dumps(self.vocabulary, ensure_ascii=False), encoding="utf-8")
        (directory / _CONFIG_FILE).write_text(json.dumps(
            {"vocab_size": self.vocab_size, "sequence_length": self.sequence_length,
             "standardize": _STANDARDIZE}, indent=2), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TextVectorizer:
        directory = Path(directory)
        try:
            settings = json.loads((directory / _CONFIG_FILE).read_text(encoding="utf-8"))
            vocabulary = json.loads((directory / _VOCABULARY_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"{directory}: cannot read a saved text vectorizer ({err}); expected "
                            f"{_CONFIG_FILE} and {_VOCABULARY_FILE} written by "
                            f"TextVectorizer.save") from None
        if settings.get("standardize") != _STANDARDIZE:
            raise DataError(f"{directory}: vectorizer was saved with standardization "
                            f"{settings.get('standardize')!r}, this version uses "
                            f"{_STANDARDIZE!r}; fit and save it again")
        vectorizer = cls(settings["vocab_size"], settings["sequence_length"])
        vectorizer._layer = vectorizer._make_layer(vocabulary)
        return vectorizer

    def _fitted(self):
        if self._layer is None:
            raise RuntimeError("TextVectorizer is not fitted: call fit(train_texts) or "
                               "TextVectorizer.load(directory) first")
        return self._layer


def read_vocabulary(path: str | Path, max_tokens: int) -> list[str]:
    """The first `max_tokens` distinct tokens of a vocabulary file, standardized as texts are.

    `path`: a JSON list of strings (vocabulary.json as `TextVectorizer.save` writes it), a
    folder holding one, or a text file with one token a line. Entries that standardize to
    nothing ('' and '[UNK]' among them) are skipped; one that becomes several words is an error.
    """
    path = Path(path)
    if path.is_dir():
        path = path / _VOCABULARY_FILE
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the vocabulary file ({err}); give a file with one "
                        f"token a line, or a {_VOCABULARY_FILE} written by TextVectorizer.save") \
            from None
    if path.suffix.lower() == ".json":
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err}); expected a list of tokens") \
                from None
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise DataError(f"{path}: expected a JSON list of tokens (strings)")
    else:
        entries = text.splitlines()
    entries = [e for e in entries if e not in _RESERVED]
    tokens = {}
    for entry, words in zip(entries, tokenize(entries) if entries else []):
        if len(words) > 1:
            raise DataError(f"{path}: entry {entry!r} is {len(words)} words after "
                            f"standardization ({' '.join(words)!r}); give one token a line")
        if words:
            tokens.setdefault(words[0], None)
    if not tokens:
        raise DataError(f"{path}: the vocabulary file has no tokens")
    return list(tokens)[:max_tokens]


def _as_strings(texts) -> np.ndarray:
    if isinstance(texts, str):
        raise TypeError("pass a list or array of texts, not a single string")
    return as_text_array([str(t) for t in texts])
