"""TextVectorizer: standardization, ids, decoding and save/load round trip."""
import json

import numpy as np
import pytest

from secureml.data import TextVectorizer
from secureml.errors import DataError

TRAIN = ["A great movie!<br /><br />Great acting, GREAT story.",
         "A dull movie. Dull, dull, dull...",
         "Great, great <i>fun</i> & a story worth it"]


@pytest.fixture(scope="module")
def fitted():
    return TextVectorizer(vocab_size=8, sequence_length=6).fit(TRAIN)


def test_vocabulary_is_standardized(fitted):
    vocabulary = fitted.vocabulary
    assert vocabulary[:2] == ["", "[UNK]"] and len(vocabulary) == 8
    assert vocabulary[2:5] == ["great", "dull", "a"]  # most frequent first
    assert not {"br", "i", "<br", "great!", "Great", "&"} & set(vocabulary)


def test_ids_are_padded_truncated_int32(fitted):
    ids = fitted(["GREAT, great<br />movie zebra", "dull " * 10, ""])
    assert ids.dtype == np.int32 and ids.shape == (3, 6)
    great, dull, movie = (fitted.vocabulary.index(w) for w in ("great", "dull", "movie"))
    assert ids[0].tolist() == [great, great, movie, 1, 0, 0]  # zebra: out of vocabulary
    assert ids[1].tolist() == [dull] * 6
    assert ids[2].tolist() == [0] * 6
    assert fitted([]).shape == (0, 6)


def test_decode(fitted):
    ids = fitted(["Great movie, unknownword!", "dull"])
    assert fitted.decode(ids) == ["great movie [UNK]", "dull"]
    assert fitted.decode(ids[1]) == ["dull"]


def test_save_load_round_trip(fitted, tmp_path):
    fitted.save(tmp_path / "vec")
    assert json.loads((tmp_path / "vec" / "vocabulary.json").read_text()) == fitted.vocabulary
    loaded = TextVectorizer.load(tmp_path / "vec")
    texts = TRAIN + ["völlig neue Wörter <b>great</b>", "dull acting"]
    np.testing.assert_array_equal(loaded(texts), fitted(texts))
    assert (loaded.vocab_size, loaded.sequence_length) == (8, 6)


def test_load_refuses_other_standardization(fitted, tmp_path):
    fitted.save(tmp_path / "v")
    settings = json.loads((tmp_path / "v" / "vectorizer.json").read_text())
    settings["standardize"] = "something else"
    (tmp_path / "v" / "vectorizer.json").write_text(json.dumps(settings))
    with pytest.raises(DataError, match="fit and save it again"):
        TextVectorizer.load(tmp_path / "v")
    with pytest.raises(DataError, match="vectorizer.json"):
        TextVectorizer.load(tmp_path / "nothing-here")


def test_unfitted_and_empty_input():
    with pytest.raises(RuntimeError, match="not fitted"):
        TextVectorizer()(["text"])
    with pytest.raises(DataError, match="no texts"):
        TextVectorizer().fit([])
    with pytest.raises(DataError, match="no words"):
        TextVectorizer().fit(["!!!", "<br />"])
