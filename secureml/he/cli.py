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

`keygen` writes `secret.context` (keep it), and `public/` with `public.context` and
`spec.json`: the only things the server needs from the client.
"""
from __future__ import annotations

import json
import sys
import time
import typing
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..schema import PositiveInt, arg_type
from .ckks import load_context
from .errors import CiphertextError
from .params import CKKSParameters
from .roles import PACKINGS, HEClient, HEServer, make_spec
from .stage import PolyDegree, ScaleBits

_SECRET, _PUBLIC, _SPEC, _CLIENT_MODEL = "secret.context", "public.context", "spec.json", \
    "client_model.keras"


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
    p = sub.add_parser("decrypt", help="client: decrypt a result into logits")
    p.add_argument("--keys", required=True)
    p.add_argument("--input", required=True, help="the encrypted result")
    p.add_argument("--out", help=".npy for the logits (default: print predictions only)")
    p = sub.add_parser("demo", help="keygen, encrypt, infer and decrypt through files, timed")
    p.add_argument("--model", help="a model file (default: train he_cnn on digits briefly)")
    p.add_argument("--input", help=".npy of inputs (default: digits test images)")
    p.add_argument("--labels", help=".npy of labels, to report accuracy")
    p.add_argument("--samples", type=arg_type(PositiveInt), default=4)
    p.add_argument("--packing", choices=[*PACKINGS, "both"], default="both")
    p.add_argument("--workdir", default="he-demo", help="where the files go")


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
    plan, params, client_model = _compile(args)
    out = Path(args.out)
    out.write_text(json.dumps(make_spec(plan, params), indent=2))
    if client_model is not None:
        client_model.save(out.parent / _CLIENT_MODEL)
    print(f"{out}: depth {plan.depth}, N={params.poly_degree}; give it to the client for "
          f"'secureml he keygen --spec'")
    return 0


def _compile(args):
    """(plan, parameters, client model part) of --model with --calibration and the options."""
    from .api import compile_for_encryption
    calibration = _load_npy(args.calibration) if args.calibration else None
    return compile_for_encryption(_load_model(args.model), calibration, mode=args.mode,
                                  security=args.security, scale_bits=args.scale_bits,
                                  poly_degree=args.poly_degree)


def keygen(args) -> int:
    out = Path(args.out)
    (out / "public").mkdir(parents=True, exist_ok=True)
    packings = PACKINGS if args.packing == "both" else (args.packing,)
    client_model = None
    if args.spec:
        spec = json.loads(_read(args.spec, "spec").decode())
        bottom = Path(args.spec).parent / _CLIENT_MODEL
        client_model = _load_model(bottom) if bottom.exists() else None
        client = HEClient.generate(spec, packings, client_model)
    elif args.model:
        plan, params, client_model = _compile(args)
        spec = make_spec(plan, params)
        client = HEClient.generate(spec, packings, client_model)
    else:
        raise DataError("keygen needs --model (to derive the spec) or --spec (from the server)")
    (out / _SECRET).write_bytes(client.secret_context())
    (out / _SPEC).write_text(json.dumps(spec, indent=2))
    (out / "public" / _PUBLIC).write_bytes(client.public_context())
    (out / "public" / _SPEC).write_text(json.dumps(spec, indent=2))
    if client_model is not None:
        client_model.save(out / _CLIENT_MODEL)
    params = spec["parameters"]
    print(f"keys: {out / _SECRET} (secret: keep it), {out / 'public'} (send to the server); "
          f"N={params['poly_modulus_degree']}, moduli {params['coeff_mod_bit_sizes']}, "
          f"{params['security_bits']}-bit security")
    return 0


def _client(keys: str) -> HEClient:
    folder = Path(keys)
    spec = json.loads(_read(folder / _SPEC, "spec").decode())
    context = load_context(_read(folder / _SECRET, "secret context"), str(folder / _SECRET))
    client_model = _load_model(folder / _CLIENT_MODEL) if (folder / _CLIENT_MODEL).exists() \
        else None
    return HEClient(spec, context, client_model)


def encrypt(args) -> int:
    client = _client(args.keys)
    query = client.encrypt(_load_npy(args.input), args.packing)
    size = query.save(args.out)
    print(f"{args.out}: {query.samples} samples, {len(query.ciphertexts)} ciphertexts, "
          f"{size} bytes")
    return 0


def infer(args) -> int:
    from .plan import compile_model
    folder = Path(args.keys)
    spec = json.loads(_read(folder / _SPEC, "spec").decode())
    mode = "split" if spec["input"]["kind"] == "features" else "full"
    plan, _ = compile_model(_load_model(args.model), None, mode=mode,
                            split_layer=spec["input"]["split_layer"] or "lstm")
    server = HEServer(plan, CKKSParameters.from_dict(spec["parameters"]),
                      _read(folder / _PUBLIC, "public context"))
    query = server.load_query(_read(args.input, "query"), args.input)
    started = time.perf_counter()
    result = server.infer(query, progress=True)
    seconds = time.perf_counter() - started
    size = result.save(args.out)
    print(f"{args.out}: {result.samples} samples in {seconds:.2f}s, {size} bytes")
    return 0


def decrypt(args) -> int:
    client = _client(args.keys)
    logits = client.decrypt(client.load_result(_read(args.input, "result"), args.input))
    if args.out:
        np.save(args.out, logits)
    from ..models.outputs import predicted_classes
    print("predictions:", " ".join(map(str, predicted_classes(logits).tolist())))
    return 0


def demo(args) -> int:
    from types import SimpleNamespace

    from ..evaluation import predict_logits
    from .fidelity import compare
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
    model = _load_model(model_path)
    plain = predict_logits(model, x)
    packings = PACKINGS if args.packing == "both" else (args.packing,)
    keys = work / "keys"
    _timed("keygen", keygen, SimpleNamespace(
        model=str(model_path), spec=None, calibration=str(work / "calibration.npy"),
        packing=args.packing, mode="full", security=128, scale_bits=40, poly_degree=None,
        out=str(keys)))
    for packing in packings:
        query, result, out = (work / f"query-{packing}.he", work / f"result-{packing}.he",
                              work / f"logits-{packing}.npy")
        _timed(f"encrypt ({packing})", encrypt, SimpleNamespace(
            keys=str(keys), input=str(work / "inputs.npy"), packing=packing, out=str(query)))
        _timed(f"infer ({packing}, server side)", infer, SimpleNamespace(
            model=str(model_path), keys=str(keys / "public"), input=str(query), out=str(result)))
        _timed(f"decrypt ({packing})", decrypt, SimpleNamespace(
            keys=str(keys), input=str(result), out=str(out)))
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


def _read(path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise CiphertextError(f"cannot read the {what} at {path}: {err.strerror}") from None


def _load_npy(path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path} as a .npy array ({err}); save inputs with "
                        f"numpy.save") from None


def _load_model(path):
    import tensorflow as tf

    from ..models import he_layers  # noqa: F401  registers PolyActivation for loading
    try:
        return tf.keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot load the model at {path}: {err}") from None
