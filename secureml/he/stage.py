"""The `encrypted_inference` evaluation: the trained variant, served on CKKS ciphertexts.

Compiles the model, chooses parameters, makes a client (secret key) and a server (public
context only), runs test samples through each packing, checks every decrypted logit against
the plaintext model, and writes the `he` section of metrics.json and `he/spec.json` (the
public parameters; with `save_context` also the public context) into the variant folder.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np

from .. import schema
from ..audit.metrics import proportion_interval
from ..errors import ConfigError
from ..evaluation import CONFIDENCE_LEVEL, predict_logits
from ..models.outputs import predicted_classes
from .api import prepare
from .fidelity import compare
from .params import MAX_COEFF_BITS, MAX_PRIME_BITS
from .roles import HEClient, HEServer

SECTION = "he"
PolyDegree = Literal[tuple(MAX_COEFF_BITS[128])]
# One rescaling prime of this many bits per multiplication; SEAL's primes have at most 60.
ScaleBits = Annotated[int, schema.Range(20, MAX_PRIME_BITS - 1)]


@dataclass
class Config:
    samples: schema.PositiveInt = 200  # test samples for the batched packing (and accuracy)
    single_samples: schema.PositiveInt = 3  # test samples for the single packing (seconds each)
    packings: list[Literal["batched", "single"]] = field(
        default_factory=lambda: ["batched", "single"])
    mode: Literal["full", "split"] = "full"
    split_layer: str = "lstm"
    security: Literal[128, 192, 256] = 128
    scale_bits: ScaleBits = 40
    poly_degree: PolyDegree | None = None
    calibration_samples: schema.PositiveInt = 256
    # > 0: first turn a model with ReLU/max pooling into its polynomial twin, fine-tuned this
    # many epochs with the variant's training settings (secureml.he.convert_to_polynomial).
    convert_epochs: schema.NonNegativeInt = 0
    tolerance: schema.PositiveFloat = 1e-2  # max |decrypted - plaintext|, relative to max logit
    # The public context with its Galois keys is large (about 240 MB at N = 16384); the spec
    # (parameters, input layout, no weights) is always written.
    save_context: bool = False

    def validate(self):
        if not self.packings:
            raise ConfigError("packings must name at least one of batched, single")


def evaluate(context, config: Config) -> dict:
    load_before = os.getloadavg()
    inputs = context.inputs
    model, converted = context.model, None
    if config.convert_epochs:
        model, converted = _convert(context, config)
    started = time.perf_counter()
    client, server = prepare(model, inputs.x_train[:config.calibration_samples],
                             packings=config.packings, mode=config.mode,
                             split_layer=config.split_layer, security=config.security,
                             scale_bits=config.scale_bits, poly_degree=config.poly_degree)
    setup_s = time.perf_counter() - started
    plan, params, spec = server.plan, server.params, client.spec

    runs = {}
    for packing in config.packings:
        count = config.samples if packing == "batched" else config.single_samples
        x, y = inputs.x_test[:count], inputs.y_test[:count]
        runs[packing] = run_packing(client, server, model, x, y, packing,
                                    config.tolerance, context.progress)
    headline = runs.get("batched") or runs["single"]
    section = {
        "mode": config.mode,
        "samples": headline["samples"],
        "encrypted_accuracy": headline["encrypted_accuracy"],
        "plaintext_accuracy": headline["plaintext_accuracy"],
        "agreement": headline["agreement"],
        "agreement_ci": proportion_interval(headline["agreement"], headline["samples"],
                                            CONFIDENCE_LEVEL),
        "confidence_level": CONFIDENCE_LEVEL,
        "max_abs_error": max(r["max_abs_error"] for r in runs.values()),
        "latency_s_per_sample": runs["single"]["latency_s_per_sample"] if "single" in runs
        else None,
        "amortized_s_per_sample": runs["batched"]["amortized_s_per_sample"] if "batched" in runs
        else None,
        "packings": runs,
        "converted": converted,
        "setup_s": round(setup_s, 3),
        "sizes": key_sizes(client),
        "parameters": params.describe(),
        "security_bits": params.security,
        "plan": plan.describe(),
        "load_average": {"before": [round(v, 2) for v in load_before],
                         "after": [round(v, 2) for v in os.getloadavg()]},
    }
    if "single" in runs and "batched" in runs:
        single_predictions = runs["single"]["predictions"]
        section["packings_agree"] = \
            single_predictions == runs["batched"]["predictions"][:len(single_predictions)]
    for run in runs.values():
        del run["predictions"]
    folder = context.directory / "he"
    folder.mkdir(exist_ok=True)
    (folder / "spec.json").write_text(json.dumps(spec, indent=2))
    section["artifacts"] = {"spec": "he/spec.json"}
    if config.save_context:
        (folder / "public.context").write_bytes(client.public_context())
        section["artifacts"]["public_context"] = "he/public.context"
    return section


def _convert(context, config: Config):
    """The variant's ReLU model as a fine-tuned polynomial twin, saved next to the model."""
    import dataclasses

    from ..evaluation import classification_metrics
    from .convert import convert_to_polynomial
    inputs = context.inputs
    training = dataclasses.replace(context.variant.training, epochs=config.convert_epochs)
    twin = convert_to_polynomial(context.model, inputs.x_train[:config.calibration_samples],
                                 fine_tune=(inputs.x_train, inputs.y_train), training=training,
                                 progress=context.progress)
    (context.directory / "he").mkdir(exist_ok=True)
    twin.save(context.directory / "he" / "polynomial_model.keras")
    test = classification_metrics(twin, inputs.x_test, inputs.y_test, context.data.class_names)
    return twin, {"from_model": context.model.name, "fine_tune_epochs": config.convert_epochs,
                  "original_test_accuracy": context.metrics["test"]["accuracy"],
                  "polynomial_test_accuracy": test["accuracy"],
                  "model": "he/polynomial_model.keras"}


def run_packing(client: HEClient, server: HEServer, model, x, y, packing: str,
                tolerance: float, progress: bool = False) -> dict:
    """Encrypt, serve and decrypt `x` in one packing; timings, sizes and fidelity."""
    plain = predict_logits(model, x).astype(np.float64)
    clock = time.perf_counter
    t0 = clock()
    query = client.encrypt(x, packing)
    t1 = clock()
    query_bytes = query.nbytes()
    cpu = time.process_time()
    t2 = clock()
    result = server.infer(query, progress=progress)
    t3 = clock()
    server_cpu = time.process_time() - cpu
    result_bytes = result.nbytes()
    t4 = clock()
    logits = client.decrypt(result)
    t5 = clock()
    n = len(x)
    fidelity = compare(logits, plain, tolerance)
    predictions = predicted_classes(logits)
    record = {
        "samples": n,
        "encrypted_accuracy": float(np.mean(predictions == np.asarray(y))),
        "plaintext_accuracy": float(np.mean(predicted_classes(plain) == np.asarray(y))),
        **fidelity,
        "encrypt_s": round(t1 - t0, 4), "server_s": round(t3 - t2, 4),
        "server_cpu_s": round(server_cpu, 4), "decrypt_s": round(t5 - t4, 4),
        "query_bytes": query_bytes, "result_bytes": result_bytes,
        "query_bytes_per_sample": query_bytes // n, "result_bytes_per_sample": result_bytes // n,
        "ciphertexts_in": len(query.ciphertexts), "ciphertexts_out": len(result.ciphertexts),
        "predictions": predictions.tolist(),
    }
    if packing == "single":
        record["latency_s_per_sample"] = round((t1 - t0 + t3 - t2 + t5 - t4) / n, 4)
        record["server_s_per_sample"] = round((t3 - t2) / n, 4)
        record["rotations_per_sample"] = server._single.rotations
    else:
        slots = client.engine.slots
        record["slots"] = slots
        record["batches"] = len(query.layout)
        record["amortized_s_per_sample"] = round((t3 - t2) / n, 6)
        record["amortized_cpu_s_per_sample"] = round(server_cpu / n, 6)
        # What a full batch costs per sample: the server's time does not depend on how many
        # slots are filled.
        record["amortized_s_per_slot"] = round((t3 - t2) / (len(query.layout) * slots), 6)
        record["amortized_cpu_s_per_slot"] = round(server_cpu / (len(query.layout) * slots), 6)
    return record


def key_sizes(client: HEClient) -> dict:
    """Serialized sizes: the public context the server gets, and the keys inside it."""
    ctx = client.context
    base = len(ctx.serialize(save_public_key=True, save_secret_key=False,
                             save_galois_keys=False, save_relin_keys=False))
    relin = len(ctx.serialize(save_public_key=True, save_secret_key=False,
                              save_galois_keys=False, save_relin_keys=True))
    public = len(client.public_context())
    return {"public_context_bytes": public, "public_key_and_parameters_bytes": base,
            "relin_keys_bytes": relin - base, "galois_keys_bytes": public - relin,
            "secret_context_bytes": len(client.secret_context())}
