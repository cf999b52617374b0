"""Texts to fixed-length token ids, with a vocabulary fitted on the training split only.

Wraps Keras `TextVectorization` so tokenizing runs as TensorFlow graph ops. Standardization
lowercases (Unicode-aware), replaces HTML tags such as `<br />` with a space and deletes
punctuation and symbols. Id 0 is padding and id 1 stands for words outside the vocabulary.
TensorFlow is imported only when a vectorizer is fitted, loaded or called.
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


def _standardize(texts):
    import tensorflow as tf

    texts = tf.strings.lower(texts, encoding="utf-8")
    texts = tf.strings.regex_replace(texts, r"<[^>]*>", " ")
    return tf.strings.regex_replace(texts, r"[\p{P}\p{S}]", "")


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


def _as_strings(texts) -> np.ndarray:
    if isinstance(texts, str):
        raise TypeError("pass a list or array of texts, not a single string")
    return as_text_array([str(t) for t in texts])
