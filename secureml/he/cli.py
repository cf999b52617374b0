"""`secureml he`: encrypted inference on files, so client and server can be two machines.

    # server: publish the spec (parameters and input layout, no weights)
    secureml he spec --model model.keras --calibration x_train.npy --out spec.json
    # client: keys for that spec (or --model to derive it when one party holds both)
    secureml he keygen --spec spec.json --out keys/
    # client: encrypt inputs (.npy: images, or token ids for text models)
    secureml he encrypt --keys keys/ --input x.npy --packing batched --out query.he
    # server: only the public context, the spec and its own model
    secureml he infer --model model.keras --keys keys/public/ --input query.he --out result.he
    # client: decrypt
    secureml he decrypt --keys keys/ --input result.he --out logits.npy
    secureml he demo      # all four on digits (or --model/--input), with timings

`keygen` writes `secret.context` (keep it; mode 0600, never overwritten: `--force` replaces
a key folder), and `public/` with `public.context` and `spec.json`: the only things the server
needs from the client. In split mode `spec` also writes `client_model.keras` and names it in the
spec by SHA-256; the client loads no other file. Every input is checked before any compute:
files by size and header before their body is read, arrays for shape, type and finite values,
output folders exist.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
import typing
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, KeyFileError, UnsafeModelError
from ..report.rundir import write_json
from ..schema import PositiveInt, arg_type
from ..security.files import read_bounded
from ..security.keyfiles import write_secret
from ..security.loading import load_model
from .ckks import load_context
from .errors import CiphertextError
from .params import CKKSParameters
from .roles import PACKINGS, HEClient, HEServer, check_spec, make_spec
from .stage import PolyDegree, ScaleBits

_SECRET, _PUBLIC, _SPEC, _CLIENT_MODEL = "secret.context", "public.context", "spec.json", \
    "client_model.keras"
# What keygen writes: any of them present means the folder already holds keys.
_KEY_FILES = (_SECRET, _SPEC, _CLIENT_MODEL, f"public/{_PUBLIC}", f"public/{_SPEC}")
# Size limits checked before a file is read. A spec is a few KB; TenSEAL parses contexts as
# protobuf messages, which cannot exceed 2 GiB; queries and results are checked against what
# their header and the model imply, under --max-bytes.
_MAX_SPEC_BYTES = 16 << 20
_MAX_CONTEXT_BYTES = 2 << 30
_MAX_BATCH_BYTES = 8 << 30


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="he_command", metavar="STEP", required=True)
    p = sub.add_parser("spec", help="server: publish the model's spec (parameters, no weights)")
    p.add_argument("--model", required=True, help="the server's model file")
    p.add_argument("--calibration", help=".npy of representative inputs (bounds the values)")
    _parameter_options(p)
    p.add_argument("--out", required=True, help="the spec.json to write")
    p = sub.add_parser("keygen", help="client: make keys for a model's spec")
    p.add_argument("--model", help="the model file (the spec is derived from it)")
    p.add_argument("--spec", help="a spec.json from 'secureml he spec', instead of --model "
                                  "(split mode: client_model.keras beside it)")
    p.add_argument("--calibration", help=".npy of representative inputs (bounds the values)")
    p.add_argument("--packing", choices=[*PACKINGS, "both"], default="both",
                   help="single needs Galois keys (large); batched does not")
    _parameter_options(p)
    p.add_argument("--out", required=True, help="folder for the keys")
    p.add_argument("--force", action="store_true",
                   help="replace the keys in an existing key folder (results encrypted under "
                        "the old keys can then no longer be decrypted)")
    p = sub.add_parser("encrypt", help="client: encrypt inputs from a .npy file")
    p.add_argument("--keys", required=True, help="the folder written by keygen")
    p.add_argument("--input", required=True, help=".npy of images, or token ids for text")
    p.add_argument("--packing", choices=PACKINGS, default="batched")
    p.add_argument("--out", required=True)
    p = sub.add_parser("infer", help="server: evaluate the model on an encrypted query")
    p.add_argument("--model", required=True, help="the server's model file")
    p.add_argument("--keys", required=True,
                   help="folder with public.context and spec.json (no secret key needed)")
    p.add_argument("--input", required=True, help="the encrypted query")
    p.add_argument("--out", required=True)
    _max_bytes_option(p, "query")
    p = sub.add_parser("decrypt", help="client: decrypt a result into logits")
    p.add_argument("--keys", required=True)
    p.add_argument("--input", required=True, help="the encrypted result")
    p.add_argument("--out", help=".npy for the logits (default: print predictions only)")
    _max_bytes_option(p, "result")
    p = sub.add_parser("demo", help="keygen, encrypt, infer and decrypt through files, timed")
    p.add_argument("--model", help="a model file (default: train he_cnn on digits briefly)")
    p.add_argument("--input", help=".npy of inputs (default: digits test images)")
    p.add_argument("--labels", help=".npy of labels, to report accuracy")
    p.add_argument("--samples", type=arg_type(PositiveInt), default=4)
    p.add_argument("--packing", choices=[*PACKINGS, "both"], default="both")
    p.add_argument("--workdir", default="he-demo", help="where the files go")


def _max_bytes_option(p, what: str) -> None:
    p.add_argument("--max-bytes", type=int, default=_MAX_BATCH_BYTES,
                   help=f"refuse a larger {what} file before reading it (default 8 GiB)")


def _parameter_options(p) -> None:
    p.add_argument("--mode", choices=["full", "split"], default="full",
                   help="split: the client runs embedding+LSTM, the server the Dense head")
    p.add_argument("--security", type=int, choices=[128, 192, 256], default=128)
    p.add_argument("--scale-bits", type=arg_type(ScaleBits), default=40)
    p.add_argument("--poly-degree", type=int, choices=typing.get_args(PolyDegree))


def main(args) -> int:
    return {"spec": publish_spec, "keygen": keygen, "encrypt": encrypt, "infer": infer, "decrypt": decrypt,
            "demo": demo}[args.he_command](args)


def publish_spec(args) -> int:
    """The server's side of key setup: what the client needs, and in split mode the client's
    part of the model (written next to the spec)."""
    out = _output(args.out, "spec")
    plan, params, client_model = _compile(args)
    saved = _client_model_bytes(client_model)
    if saved is not None:
        (out.parent / _CLIENT_MODEL).write_bytes(saved)
    write_json(out, make_spec(plan, params, _digest(saved)))
    print(f"{out}: depth {plan.depth}, N={params.poly_degree}; give it to the client for "
          f"'secureml he keygen --spec'")
    return 0


def _compile(args):
    """(plan, parameters, client model part) of --model with --calibration and the options."""
    from .api import compile_for_encryption
    calibration = _load_npy(args.calibration) if args.calibration else None
    return compile_for_encryption(load_model(args.model), calibration, mode=args.mode,
                                  security=args.security, scale_bits=args.scale_bits,
                                  poly_degree=args.poly_degree)


def keygen(args) -> int:
    out = _key_folder(args.out, args.force)
    packings = PACKINGS if args.packing == "both" else (args.packing,)
    if args.spec:
        spec = _read_spec(args.spec)
        source = Path(args.spec).parent
        client_model = _spec_client_model(spec, source)
        # The checked file itself, not a re-save, so its digest still matches the spec (any
        # later change to it is refused by that digest at every load).
        saved = (source / _CLIENT_MODEL).read_bytes() if client_model is not None else None
    elif args.model:
        plan, params, client_model = _compile(args)
        saved = _client_model_bytes(client_model)
        spec = make_spec(plan, params, _digest(saved))
    else:
        raise DataError("keygen needs --model (to derive the spec) or --spec (from the server)")
    client = HEClient.generate(spec, packings, client_model)
    # Only now that the new keys exist is anything written: a failed keygen keeps the old keys,
    # and --force removes all of them before any new file, the client model included, is.
    if args.force:
        for name in _KEY_FILES:
            (out / name).unlink(missing_ok=True)
    write_secret(out / _SECRET, client.secret_context())
    if saved is not None:
        (out / _CLIENT_MODEL).write_bytes(saved)
    write_json(out / _SPEC, spec)
    (out / "public" / _PUBLIC).write_bytes(client.public_context())
    write_json(out / "public" / _SPEC, spec)
    params = spec["parameters"]
    print(f"keys: {out / _SECRET} (secret: keep it), {out / 'public'} (send to the server); "
          f"N={params['poly_modulus_degree']}, moduli {params['coeff_mod_bit_sizes']}, "
          f"{params['security_bits']}-bit security")
    return 0


def _key_folder(path, force: bool) -> Path:
    """The folder keygen writes into, created (owner only) before any key is computed; one
    that already holds keys is refused unless `force`."""
    out = Path(path)
    existing = [name for name in _KEY_FILES if (out / name).exists()]
    if existing and not force:
        raise KeyFileError(f"{out} already holds keys ({existing[0]}); use --force to replace "
                           f"it, after which results encrypted under the old keys cannot be "
                           f"decrypted")
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        (out / "public").mkdir(exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the key folder {out}: {err.strerror}") from None
    return out


def _client(keys: str) -> HEClient:
    folder = Path(keys)
    spec = _read_spec(folder / _SPEC)
    context = load_context(_read(folder / _SECRET, "secret context", _MAX_CONTEXT_BYTES),
                           str(folder / _SECRET))
    return HEClient(spec, context, _spec_client_model(spec, folder))


def encrypt(args) -> int:
    out = _output(args.out, "query")
    x = _load_npy(args.input)
    client = _client(args.keys)
    query = client.encrypt(x, args.packing)
    size = query.save(out)
    print(f"{args.out}: {query.samples} samples, {len(query.ciphertexts)} ciphertexts, "
          f"{size} bytes")
    return 0


def infer(args) -> int:
    from .plan import compile_model
    out = _output(args.out, "result")
    folder = Path(args.keys)
    spec = _read_spec(folder / _SPEC)
    if not Path(args.input).is_file():
        raise CiphertextError(f"cannot read the query at {args.input}: no such file; check "
                              f"the path of the file written by 'secureml he encrypt'")
    mode = "split" if spec["input"]["kind"] == "features" else "full"
    plan, _ = compile_model(load_model(args.model), None, mode=mode,
                            split_layer=spec["input"]["split_layer"] or "lstm")
    server = HEServer(plan, CKKSParameters.from_dict(spec["parameters"]),
                      _read(folder / _PUBLIC, "public context", _MAX_CONTEXT_BYTES))
    query = server.load_query(Path(args.input), args.input,
                              keys=f"the public context in {folder}", max_bytes=args.max_bytes)
    started = time.perf_counter()
    result = server.infer(query, progress=True)
    seconds = time.perf_counter() - started
    size = result.save(out)
    print(f"{args.out}: {result.samples} samples in {seconds:.2f}s, {size} bytes")
    return 0


def decrypt(args) -> int:
    out = _output(args.out, "logits") if args.out else None
    client = _client(args.keys)
    logits = client.decrypt(client.load_result(Path(args.input), args.input,
                                               keys=f"the keys in {args.keys}",
                                               max_bytes=args.max_bytes))
    if out:
        np.save(out, logits)
    from ..models.outputs import predicted_classes
    print("predictions:", " ".join(map(str, predicted_classes(logits).tolist())))
    return 0


def demo(args) -> int:
    from types import SimpleNamespace

    from ..evaluation import predict_logits
    from .fidelity import compare
    if args.samples < 1:
        raise ConfigError(f"--samples must be at least 1, got {args.samples}")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if args.model:
        model_path = args.model
        x = _load_npy(args.input) if args.input else None
        labels = _load_npy(args.labels) if args.labels else None
        if x is None:
            raise DataError("demo --model needs --input (.npy of inputs for that model)")
        calibration = x
    else:
        model_path, x, labels, calibration = _digits_demo_model(work)
    x = x[:args.samples]
    labels = labels[:args.samples] if labels is not None else None
    np.save(work / "inputs.npy", x)
    np.save(work / "calibration.npy", calibration)
    model = load_model(model_path)
    plain = predict_logits(model, x)
    packings = PACKINGS if args.packing == "both" else (args.packing,)
    keys = work / "keys"
    _timed("keygen", keygen, SimpleNamespace(
        model=str(model_path), spec=None, calibration=str(work / "calibration.npy"),
        packing=args.packing, mode="full", security=128, scale_bits=40, poly_degree=None,
        out=str(keys), force=True))  # the demo's own folder: a rerun makes fresh keys
    for packing in packings:
        query, result, out = (work / f"query-{packing}.he", work / f"result-{packing}.he",
                              work / f"logits-{packing}.npy")
        _timed(f"encrypt ({packing})", encrypt, SimpleNamespace(
            keys=str(keys), input=str(work / "inputs.npy"), packing=packing, out=str(query)))
        _timed(f"infer ({packing}, server side)", infer, SimpleNamespace(
            model=str(model_path), keys=str(keys / "public"), input=str(query), out=str(result),
            max_bytes=_MAX_BATCH_BYTES))
        _timed(f"decrypt ({packing})", decrypt, SimpleNamespace(
            keys=str(keys), input=str(result), out=str(out), max_bytes=_MAX_BATCH_BYTES))
        logits = np.load(out)
        fidelity = compare(logits, plain, 1e-2)
        line = (f"{packing}: agreement with plaintext {fidelity['agreement']:.3f}, max error "
                f"{fidelity['max_abs_error']:.2e}, query {query.stat().st_size} bytes, result "
                f"{result.stat().st_size} bytes")
        if labels is not None:
            from ..models.outputs import predicted_classes
            line += f", accuracy {np.mean(predicted_classes(logits) == labels):.3f}"
        print(line)
    return 0


def _digits_demo_model(work: Path):
    """A small he_cnn trained briefly on scikit-learn's bundled digits (offline)."""
    from sklearn.datasets import load_digits

    from ..models import build_model
    from ..training import train
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    model = build_model("he_cnn", x.shape[1:], 10, filters=4, kernel_size=3, strides=1,
                        dense_units=16)
    print("training a small he_cnn on digits (demo model)...", file=sys.stderr)
    train(model, x[:1400], y[:1400], config={"epochs": 10, "batch_size": 32}, progress=False)
    path = work / "model.keras"
    model.save(path)
    return path, x[1400:], y[1400:], x[:256]


def _timed(name, step, args) -> None:
    started = time.perf_counter()
    step(args)
    print(f"  [{name}: {time.perf_counter() - started:.2f}s]")


def _read(path, what: str, limit: int) -> bytes:
    """The bytes of a file of at most `limit` bytes, refused by its size before reading it."""
    try:
        data = read_bounded(path, limit)
    except OSError as err:
        raise CiphertextError(f"cannot read the {what} at {path}: {err.strerror}") from None
    if data is None:
        raise CiphertextError(f"the {what} at {path} holds more than the {limit} bytes a {what} "
                              f"can be; it was not read: pass the file written by 'secureml he'")
    return data


def _read_spec(path) -> dict:
    try:
        spec = json.loads(_read(path, "spec", _MAX_SPEC_BYTES))
    except (ValueError, RecursionError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); use the spec.json written by "
                        f"'secureml he spec' or 'he keygen'") from None
    return check_spec(spec, str(path))


def _output(path, what: str) -> Path:
    """`path` if the file can be written there: checked before any compute."""
    out = Path(path)
    folder = out.parent
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the path of the {what} file to write")
    if not folder.is_dir():
        raise ConfigError(f"--out {out}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"--out {out}: the folder {folder} is not writable")
    return out


def _load_npy(path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path} as a .npy array ({err}); save inputs with "
                        f"numpy.save") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise DataError(f"{path} is an .npz archive, not one array; save inputs with numpy.save")
    return array


def _client_model_bytes(client_model) -> bytes | None:
    """The client part of a split model as the bytes of a .keras file (None in full mode)."""
    if client_model is None:
        return None
    with tempfile.TemporaryDirectory(prefix="secureml-client-") as folder:
        client_model.save(Path(folder) / _CLIENT_MODEL)
        return (Path(folder) / _CLIENT_MODEL).read_bytes()


def _digest(saved: bytes | None) -> str | None:
    """How a spec names the client model file: the SHA-256 that `load_model` checks."""
    return None if saved is None else hashlib.sha256(saved).hexdigest()


def _spec_client_model(spec: dict, folder: Path):
    """The client part beside `spec`, loaded only if the spec names the file by SHA-256."""
    path, digest = folder / _CLIENT_MODEL, spec.get("client_model_sha256")
    if digest is None:
        if path.exists():
            raise UnsafeModelError(
                f"refusing to load {path}: the spec beside it names no client model by SHA-256; "
                f"delete the file, or start again from the spec.json and {_CLIENT_MODEL} "
                f"written by 'secureml he spec'")
        return None
    if not path.is_file():
        raise DataError(f"{path} is missing: the spec names a client model (split mode); put "
                        f"the {_CLIENT_MODEL} written by 'secureml he spec' beside spec.json")
    return load_model(path, what="client model named in the spec", sha256=str(digest))
