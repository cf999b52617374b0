"""Encrypted inference attacked from both sides: a server handed the secret key, key files,
oversized or lying files, and careless inputs on the command line."""
import json
import os
import struct

import numpy as np
import pytest
import tensorflow as tf
import tenseal as ts
from tenseal import sealapi

from secureml.cli import main
from secureml.evaluation import predict_logits
from secureml.errors import KeyFileError
from secureml.he import HEServer, prepare
from secureml.security.keyfiles import write_secret


@pytest.fixture(scope="module")
def images(digits_arrays):
    return digits_arrays[0][:64]


@pytest.fixture(scope="module")
def linear():
    """Flatten + Dense on 8x8 digits: depth 1 (N = 8192), both packings in seconds."""
    tf.keras.utils.set_random_seed(7)
    return tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                                tf.keras.layers.Dense(10)])


@pytest.fixture(scope="module")
def roles(linear, images):
    return prepare(linear, images)


# ---- a server handed the secret context ----

def _reachable(root, limit=6):
    """Every object reachable from `root` through attributes and containers."""
    seen, frontier, found = set(), [root], []
    for _ in range(limit):
        following = []
        for obj in frontier:
            if id(obj) in seen or isinstance(obj, (str, bytes, int, float, np.ndarray, type)):
                continue
            seen.add(id(obj))
            found.append(obj)
            if isinstance(obj, dict):
                following += list(obj.values())
            elif isinstance(obj, (list, tuple, set)):
                following += list(obj)
            elif hasattr(obj, "__dict__") and not isinstance(obj, tf.Module):
                following += list(vars(obj).values())
        frontier = following
    return found


def _decryptions(holder, ct, count):
    """What an attacker holding `holder` recovers from ciphertext `ct`, by every route."""
    recovered = []
    objects = _reachable(holder)
    contexts = [o for o in objects if isinstance(o, ts.Context)]
    assert contexts, "the holder keeps a TenSEAL context"
    decryptors = [o.data for o in objects if isinstance(o, ts.enc_context.Decryptor)]
    decryptors += [o for o in objects if isinstance(o, sealapi.Decryptor)]
    for context in contexts:
        for route in (lambda: context.decryptor().data,
                      lambda: sealapi.Decryptor(context.seal_context().data,
                                                context.secret_key().data)):
            try:
                decryptors.append(route())
            except ValueError:  # TenSEAL: no decryptor, no secret key
                pass
    keys = [o for o in objects if isinstance(o, (sealapi.SecretKey, ts.enc_context.SecretKey))]
    for key in keys:
        decryptors.append(sealapi.Decryptor(contexts[0].seal_context().data,
                                            getattr(key, "data", key)))
    encoder = sealapi.CKKSEncoder(contexts[0].seal_context().data)
    for decryptor in decryptors:
        plain = sealapi.Plaintext()
        decryptor.decrypt(ct, plain)
        recovered.append(np.asarray(encoder.decode_double(plain)[:count]))
    engine = getattr(holder, "engine", None)
    try:
        recovered.append(engine.decrypt(ct, count))
    except ValueError:
        pass
    return recovered


def test_server_handed_the_secret_context_cannot_decrypt_query_or_result(linear, roles,
                                                                         images):
    client, server = roles
    careless = HEServer(server.plan, server.params, client.secret_context())
    assert careless.fingerprint == client.fingerprint
    x = images[:5]
    pixels = x.reshape(len(x), -1)
    for packing, samples in (("batched", 5), ("single", 2)):
        query = client.encrypt(x[:samples], packing)
        result = careless.infer(query)
        np.testing.assert_allclose(client.decrypt(result), predict_logits(linear, x[:samples]),
                                   atol=1e-3)
        # Batched: ciphertext 20 holds pixel 20 of every sample; single: the first holds
        # sample 0's pixels.
        ct, truth = ((query.ciphertexts[20], pixels[:samples, 20]) if packing == "batched"
                     else (query.ciphertexts[0], pixels[0]))
        # The same attack, where the key is, recovers the pixels.
        assert any(np.allclose(values, truth, atol=1e-4)
                   for values in _decryptions(client, ct, len(truth)))
        assert _decryptions(careless, ct, len(truth)) == []
        assert _decryptions(careless, result.ciphertexts[0], 1) == []
    with pytest.raises(ValueError):
        careless.context.secret_key()
    assert not careless.context.has_secret_key()


# ---- key files ----

@pytest.fixture
def umask():
    """Set a umask for the test and restore the previous one."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o277])
def test_secret_file_is_owner_only_whatever_the_umask(tmp_path, umask, mask):
    umask(mask)
    write_secret(tmp_path / "secret", b"key")
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600


def test_secret_file_is_never_overwritten_nor_written_through_a_link(tmp_path):
    write_secret(tmp_path / "secret", b"old key")
    with pytest.raises(KeyFileError, match="already exists"):
        write_secret(tmp_path / "secret", b"new key")
    assert (tmp_path / "secret").read_bytes() == b"old key"
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious")
    (tmp_path / "planted").symlink_to(target)
    with pytest.raises(KeyFileError, match="already exists"):
        write_secret(tmp_path / "planted", b"key")
    assert target.read_bytes() == b"precious"


# ---- the command line ----

@pytest.fixture(scope="module")
def files(tmp_path_factory, linear, images):
    """Model, inputs, batched keys, a query and its result, made through the CLI."""
    folder = tmp_path_factory.mktemp("he-cli")
    linear.save(folder / "model.keras")
    np.save(folder / "x.npy", images[:5])
    np.save(folder / "calibration.npy", images)
    paths = {name: folder / name for name in ("model.keras", "x.npy", "calibration.npy",
                                               "keys", "query.he", "result.he")}
    paths["folder"] = folder
    assert _cli(paths, "keygen", "--out", paths["keys"]) == 0
    assert main(["he", "encrypt", "--keys", str(paths["keys"]), "--input", str(paths["x.npy"]),
                 "--out", str(paths["query.he"])]) == 0
    assert _infer(paths, paths["query.he"], paths["result.he"]) == 0
    return paths


def _cli(paths, step, *argv):
    if step == "keygen":
        argv = ("--model", paths["model.keras"], "--calibration", paths["calibration.npy"],
                "--packing", "batched", *argv)
    return main(["he", step, *map(str, argv)])


def _infer(paths, query, out, *argv):
    return main(["he", "infer", "--model", str(paths["model.keras"]), "--keys",
                 str(paths["keys"] / "public"), "--input", str(query), "--out", str(out),
                 *argv])


def _refused(capsys, call, *args) -> str:
    """Exit status 2 and one line on stderr, no traceback; returns the line."""
    capsys.readouterr()
    assert call(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("secureml: error: ") and "\n" not in err, err
    return err


def test_keygen_writes_the_secret_owner_only_under_umask_022(tmp_path, files, umask):
    umask(0o022)
    assert _cli(files, "keygen", "--out", tmp_path / "keys") == 0
    assert (tmp_path / "keys" / "secret.context").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700


def test_keygen_refuses_existing_keys_unless_forced_and_old_results_say_why(
        tmp_path, files, capsys):
    keys = tmp_path / "keys"
    paths = {**files, "keys": keys}
    assert _cli(paths, "keygen", "--out", keys) == 0
    assert main(["he", "encrypt", "--keys", str(keys), "--input", str(files["x.npy"]),
                 "--out", str(tmp_path / "q.he")]) == 0
    assert _infer(paths, tmp_path / "q.he", tmp_path / "r.he") == 0
    secret = (keys / "secret.context").read_bytes()
    err = _refused(capsys, _cli, paths, "keygen", "--out", keys)
    assert f"{keys} already holds keys" in err and "use --force to replace it" in err
    assert "results encrypted under the old keys cannot be decrypted" in err
    assert (keys / "secret.context").read_bytes() == secret
    assert _cli(paths, "keygen", "--out", keys, "--force") == 0
    assert (keys / "secret.context").read_bytes() != secret
    assert (keys / "secret.context").stat().st_mode & 0o777 == 0o600
    err = _refused(capsys, main, ["he", "decrypt", "--keys", str(keys), "--input",
                                  str(tmp_path / "r.he")])
    assert "was made for another key pair (fingerprint" in err
    assert f"the keys in {keys} have" in err and "decrypt it with the keys that encrypted" in err


def _bytes_read() -> int:
    with open("/proc/self/io") as stream:
        return int(next(line for line in stream if line.startswith("rchar")).split()[1])


def test_oversized_query_is_refused_without_reading_it(tmp_path, files, capsys):
    if not os.path.exists("/proc/self/io"):
        pytest.skip("needs Linux's /proc/self/io to count the bytes read")
    data = files["query.he"].read_bytes()
    padded, huge = tmp_path / "padded.he", tmp_path / "huge.he"
    with open(padded, "wb") as stream:  # a genuine header, then 3 GiB (sparse)
        stream.write(data)
        stream.truncate(3 << 30)
    with open(huge, "wb") as stream:
        stream.truncate(9 << 30)
    for query, message in ((padded, "its header lists"), (huge, "more than the 8589934592 "
                                                                "allowed; it was not read")):
        before = _bytes_read()
        err = _refused(capsys, _infer, files, query, tmp_path / "r.he")
        assert _bytes_read() - before < 256 << 20
        assert message in err
    err = _refused(capsys, _infer, files, files["query.he"], tmp_path / "r.he", "--max-bytes",
                   "1000")
    assert "raise --max-bytes" in err
    assert not (tmp_path / "r.he").exists()


def test_a_file_larger_than_its_size_says_is_not_read_past_the_limit(tmp_path, monkeypatch,
                                                                     capsys):
    """A pipe says it holds 0 bytes (so do /dev/zero and /proc files), then streams on."""
    import threading
    from secureml.he import cli
    monkeypatch.setattr(cli, "_MAX_SPEC_BYTES", 1000)
    pipe = tmp_path / "spec.json"
    os.mkfifo(pipe)

    def stream():
        try:
            with open(pipe, "wb") as writer:
                for _ in range(100):
                    writer.write(b" " * 10_000)
        except BrokenPipeError:  # the reader stopped, as it should
            pass

    threading.Thread(target=stream, daemon=True).start()
    err = _refused(capsys, main, ["he", "keygen", "--spec", str(pipe), "--out",
                                  str(tmp_path / "keys")])
    assert "holds more than the 1000 bytes a spec can be; it was not read" in err


def _forge(data: bytes, **changes) -> bytes:
    from secureml.he.roles import _MAGIC
    start = len(_MAGIC) + 8
    (length,) = struct.unpack("<Q", data[len(_MAGIC):start])
    header = {**json.loads(data[start:start + length]), **changes}
    new = json.dumps(header).encode()
    return data[:len(_MAGIC)] + struct.pack("<Q", len(new)) + new + data[start + length:]


@pytest.mark.parametrize("changes,message", [
    ({"samples": 10**9, "layout": [10**9]}, "does not fit 4096-slot ciphertexts"),
    ({"samples": 10**9, "packing": "single", "layout": [1]},
     "holds 64 ciphertexts for 1000000000 samples, but this model takes 1000000000"),
    ({"sizes": [1] * 63 + [10**12]}, "its header lists"),
    ({"samples": -3}, "unreadable header"),
])
def test_lying_query_header_is_refused_before_any_compute(tmp_path, files, capsys, changes,
                                                           message):
    forged = tmp_path / "forged.he"
    forged.write_bytes(_forge(files["query.he"].read_bytes(), **changes))
    err = _refused(capsys, _infer, files, forged, tmp_path / "r.he")
    assert message in err
    assert not (tmp_path / "r.he").exists()


def test_query_header_nested_past_the_recursion_limit_is_refused(tmp_path, files, capsys):
    from secureml.he.roles import _MAGIC
    header = b'{"sizes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    forged = tmp_path / "forged.he"
    forged.write_bytes(_MAGIC + struct.pack("<Q", len(header)) + header + b"x")
    err = _refused(capsys, _infer, files, forged, tmp_path / "r.he")
    assert "unreadable header" in err


def test_lying_result_header_is_refused(tmp_path, files, capsys):
    forged = tmp_path / "forged.he"
    forged.write_bytes(_forge(files["result.he"].read_bytes(), samples=10**9,
                              layout=[4096] * 3))
    err = _refused(capsys, main, ["he", "decrypt", "--keys", str(files["keys"]), "--input",
                                  str(forged)])
    assert "does not fit 4096-slot ciphertexts" in err


@pytest.mark.parametrize("values,message", [
    (np.full((3, 8, 8, 1), np.nan, np.float32), "3 input samples hold NaN or infinite"),
    (np.where(np.eye(64)[:2].reshape(2, 8, 8, 1) > 0, np.inf, 0.5), "2 input samples hold"),
    (np.zeros((0, 8, 8, 1), np.float32), "hold no samples"),
    (np.array([["a"] * 4]), "must be real numbers"),
    (np.zeros((2, 9, 9, 1), np.float32), "input shape (9, 9, 1)"),
])
def test_bad_inputs_are_one_line_errors(tmp_path, files, capsys, values, message):
    np.save(tmp_path / "bad.npy", values)
    err = _refused(capsys, main, ["he", "encrypt", "--keys", str(files["keys"]), "--input",
                                  str(tmp_path / "bad.npy"), "--out", str(tmp_path / "q.he")])
    assert message in err
    assert not (tmp_path / "q.he").exists()


def test_nan_calibration_is_refused(tmp_path, files, capsys):
    bad = np.load(files["calibration.npy"])
    bad[3, 2, 2, 0] = np.nan
    np.save(tmp_path / "cal.npy", bad)
    err = _refused(capsys, _cli, {**files, "calibration.npy": tmp_path / "cal.npy"}, "keygen",
                   "--out", tmp_path / "keys")
    assert "NaN or infinite values (first: sample 3)" in err


def test_missing_output_folder_is_refused_up_front(tmp_path, files, capsys):
    missing = tmp_path / "no" / "such"
    keys, x = str(files["keys"]), str(files["x.npy"])
    for argv in (["spec", "--model", str(files["model.keras"]), "--out", f"{missing}/spec.json"],
                 ["encrypt", "--keys", keys, "--input", x, "--out", f"{missing}/q.he"],
                 ["decrypt", "--keys", keys, "--input", str(files["result.he"]), "--out",
                  f"{missing}/logits.npy"]):
        err = _refused(capsys, main, ["he", *argv])
        assert f"the folder {missing} does not exist" in err
    err = _refused(capsys, _infer, files, files["query.he"], missing / "r.he")
    assert f"the folder {missing} does not exist" in err
    (tmp_path / "file").write_text("")
    err = _refused(capsys, _cli, files, "keygen", "--out", tmp_path / "file" / "keys")
    assert "cannot create the key folder" in err


def test_spec_from_the_other_party_is_checked(tmp_path, files, capsys):
    spec = json.loads((files["keys"] / "spec.json").read_text())
    weak = {**spec, "parameters": {**spec["parameters"], "security_bits": 256}}
    # A layout the client's code would index out of range (one kernel dimension), or apply to
    # another image than the model's.
    conv = {"padding": "valid", "kernel_size": [3, 3], "strides": [1, 1],
            "input_shape": [8, 8, 1], "output_shape": [6, 6, 2]}
    cases = [(weak, "claim 256-bit security"), ({**spec, "input": {"kind": "image"}},
                                                "missing or invalid: input"), (None, "valid JSON"),
             ({**spec, "im2col": {**conv, "kernel_size": [3]}}, "missing or invalid: im2col"),
             ({**spec, "im2col": {**conv, "input_shape": [9, 9, 1]}},
              "missing or invalid: im2col"),
             ("[" * 100_000 + "]" * 100_000, "valid JSON")]
    for i, (content, message) in enumerate(cases):
        path = tmp_path / f"spec{i}.json"
        path.write_text(content if isinstance(content, str) else
                        json.dumps(content) if content is not None else "{not json")
        err = _refused(capsys, main, ["he", "keygen", "--spec", str(path), "--out",
                                      str(tmp_path / f"keys{i}")])
        assert message in err
