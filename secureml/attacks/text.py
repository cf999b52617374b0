"""Attacks on text classifiers: in embedding space, and by swapping tokens.

Gradients do not reach token ids, so the model is split at its embedding
(`secureml.models.split.embedding_split`):

- `embedding_fgm` / `embedding_pgd` perturb the embedded sequence, Miyato et al. 2017: an L2
  budget `epsilon` for the whole sequence, measured on embeddings standardized per dimension
  (Miyato et al. normalize the embeddings; here the perturbation is scaled by each dimension's
  standard deviation over the vocabulary, which is the same attack without changing the
  model). The results are vectors, not texts: they measure robustness, and are what adversarial
  training in embedding space trains on, but no real text need correspond to them.
- `token_swap` is a discrete word-substitution attack: greedy, gradient-guided swaps of at most
  `budget` tokens per text (first-order estimate of the loss gain of every (position, word)
  pair, then the best `candidates` evaluated exactly). It yields real adversarial texts.
  Substitutes come from the whole vocabulary, not from synonyms, so a swap may change the
  meaning: read the success rate as the vulnerability to `budget` changed words.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from cleverhans.tf2.utils import clip_eta, optimize_linear

from ..errors import UnsupportedError
from ..evaluation import predict_logits
from ..models.outputs import per_example_loss, predicted_classes
from ..models.split import EmbeddingSplit, embedding_split
from .budget import default_relative_step, parse_epsilon
from .target import AttackTarget, attack_target, batch_starts, check_gradient_path

# Padding (0) and out-of-vocabulary (1) are never inserted by a swap.
_RESERVED_IDS = 2


def embedding_scale(split: EmbeddingSplit) -> tf.Tensor:
    """Per-dimension standard deviation of the embedding matrix: Miyato et al.'s unit."""
    table = tf.convert_to_tensor(split.embedding.embeddings)
    return tf.stop_gradient(tf.math.reduce_std(table, axis=0) + 1e-12)


def embedding_perturbation(split: EmbeddingSplit, ids, y, epsilon, steps=1,
                           step_size=None) -> tf.Tensor:
    """Adversarial perturbation (batch, length, dim) of the embedded `ids`, in the model's units.

    One step of size epsilon (the default `step_size`) is Miyato et al.'s
    r_adv = epsilon * g / ||g||_2 (per sequence, on standardized embeddings); several steps are
    L2 PGD. Padded positions are not perturbed. Example i's perturbation depends only on
    example i and the current weights. Pure TensorFlow, so it runs inside a compiled training
    step; `epsilon` may be a tensor (an epsilon schedule), and so may `steps` (a graph loop,
    which traces once instead of unrolling the model `steps` times).
    """
    vectors, mask = split.embed(ids)
    vectors = tf.stop_gradient(vectors)
    scale = embedding_scale(split)
    valid = tf.ones_like(vectors[..., :1]) if mask is None else \
        tf.cast(mask, vectors.dtype)[..., None]
    step_size = epsilon if step_size is None else step_size
    eta = tf.zeros_like(vectors)
    for _ in tf.range(steps) if tf.is_tensor(steps) else range(steps):
        with tf.GradientTape() as tape:
            tape.watch(eta)
            loss = per_example_loss(split.head(vectors + eta * scale, mask), y)
        eta = clip_eta(eta + optimize_linear(tape.gradient(loss, eta) * valid, step_size, 2), 2,
                       epsilon)
    return tf.stop_gradient(eta * scale)


def split_target(model) -> tuple[AttackTarget, EmbeddingSplit]:
    target = attack_target(model)
    if "split" not in target.compiled:
        target.compiled["split"] = embedding_split(target.logits_model)
    return target, target.compiled["split"]


def _check_ids(ids, y) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(ids)
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer) or len(ids) != len(y):
        raise UnsupportedError(f"text attacks take token ids of shape (N, length) with N labels, "
                               f"got {ids.dtype} array {ids.shape} and {len(y)} labels")
    return ids.astype(np.int32), y


def _check_embedding_gradient(split: EmbeddingSplit, ids, y) -> None:
    vectors, mask = split.embed(tf.constant(ids))
    with tf.GradientTape() as tape:
        tape.watch(vectors)
        loss = per_example_loss(split.head(vectors, mask), tf.constant(y))
    check_gradient_path(tape.gradient(loss, vectors), "embedding")


def embedding_pgd(model, ids, y, epsilon, *, steps: int = 10, step_size: float | None = None,
                  batch_size: int = 256, progress: bool = True) -> np.ndarray:
    """Perturbations (N, length, dim) from L2 PGD in embedding space, `step_size` (in
    standardized units) defaulting to 2.5 * epsilon / steps; `steps=1` is Miyato's FGM."""
    target, split = split_target(model)
    ids, y = _check_ids(ids, y)
    epsilon = parse_epsilon(epsilon, "epsilon")
    if step_size is None:
        step_size = epsilon * default_relative_step(steps)
    _check_embedding_gradient(split, ids[:32], y[:32])
    if "embedding_perturbation" not in target.compiled:
        target.compiled["embedding_perturbation"] = tf.function(
            lambda *args: embedding_perturbation(split, *args), reduce_retracing=True)
    attack = target.compiled["embedding_perturbation"]
    settings = [tf.constant(v, tf.float32) for v in (epsilon, step_size)]
    parts = [attack(tf.constant(ids[s:s + batch_size]), tf.constant(y[s:s + batch_size]),
                    settings[0], tf.constant(steps), settings[1]).numpy()
             for s in batch_starts(len(ids), batch_size, f"embedding PGD-{steps}", progress)]
    if not parts:
        return np.zeros((0, ids.shape[1], split.embedding.output_dim), np.float32)
    return np.concatenate(parts)


def embedding_fgm(model, ids, y, epsilon, *, batch_size: int = 256,
                  progress: bool = True) -> np.ndarray:
    """Perturbations (N, length, dim) from Miyato et al.'s one-step L2 attack."""
    return embedding_pgd(model, ids, y, epsilon, steps=1, batch_size=batch_size,
                         progress=progress)


def perturbed_logits(model, ids, perturbation, batch_size: int = 256) -> np.ndarray:
    """The model's logits when `perturbation` is added to the embedded `ids`."""
    _, split = split_target(model)
    outputs = []
    for s in range(0, len(ids), batch_size):
        vectors, mask = split.embed(tf.constant(ids[s:s + batch_size]))
        outputs.append(split.head(vectors + perturbation[s:s + batch_size], mask).numpy())
    return np.concatenate(outputs)


@dataclass
class TokenSwapResult:
    """What `token_swap` did to each text."""

    ids: np.ndarray             # adversarial token ids (N, length)
    tokens_changed: np.ndarray  # tokens swapped in each text, at most the budget
    # Swaps after which the prediction was first wrong: 0 when it was wrong to begin with,
    # -1 when it never flipped within the budget.
    flipped_at: np.ndarray

    def correct_within(self, budget: int) -> np.ndarray:
        """Per text: still classified correctly after up to `budget` swaps."""
        return (self.flipped_at == -1) | (self.flipped_at > budget)


def token_swap(model, ids, y, budget: int, *, candidates: int = 8, batch_size: int = 16,
               progress: bool = True) -> TokenSwapResult:
    """Greedy gradient-guided substitution of at most `budget` tokens per text.

    Each round estimates, for every non-padding position not yet swapped and every vocabulary
    word w, the loss gain (e_w - e_current) . grad (HotFlip's first-order estimate), evaluates
    the `candidates` best swaps exactly and keeps the best. A text stops changing once it is
    misclassified.
    """
    target, split = split_target(model)
    ids, y = _check_ids(ids, y)
    if budget < 0 or candidates < 1:
        raise UnsupportedError(f"budget must be at least 0 and candidates at least 1, got "
                               f"{budget} and {candidates}")
    _check_embedding_gradient(split, ids[:32], y[:32])
    adversarial = ids.copy()
    changed = np.zeros(ids.shape, bool)
    flipped_at = np.where(predicted_classes(predict_logits(target.logits_model, ids)) != y, 0, -1)
    for start in batch_starts(len(ids), batch_size, f"token swap k={budget}", progress):
        rows = np.arange(start, min(start + batch_size, len(ids)))
        for swap in range(1, budget + 1):
            active = rows[flipped_at[rows] == -1]
            if len(active) == 0:
                break
            position, word, fooled = _best_swaps(target, split, adversarial[active], y[active],
                                                 changed[active], candidates)
            ok = position >= 0  # a text with every position swapped has nothing left to try
            adversarial[active[ok], position[ok]] = word[ok]
            changed[active[ok], position[ok]] = True
            flipped_at[active[ok & fooled]] = swap
    return TokenSwapResult(adversarial, changed.sum(axis=1), flipped_at)


def _best_swaps(target: AttackTarget, split: EmbeddingSplit, ids: np.ndarray, y: np.ndarray,
                changed: np.ndarray, candidates: int):
    """For each text, the best single swap: (position, word, fools the model); position -1
    when no position is left."""
    table = tf.convert_to_tensor(split.embedding.embeddings)
    vocab = int(table.shape[0])
    vectors, mask = split.embed(tf.constant(ids))
    with tf.GradientTape() as tape:
        tape.watch(vectors)
        loss = per_example_loss(split.head(vectors, mask), tf.constant(y))
    gradient = tape.gradient(loss, vectors)
    # First-order loss gain of putting word w at position l: (e_w - v_l) . g_l
    gain = tf.einsum("bld,vd->blv", gradient, table) - \
        tf.reduce_sum(gradient * vectors, -1, keepdims=True)
    words = tf.range(vocab, dtype=tf.int32)
    blocked = (tf.constant((ids == 0) | changed)[..., None]  # padding, or swapped already
               | tf.equal(words, tf.constant(ids)[..., None])  # the word already there
               | (words < _RESERVED_IDS))
    gain = tf.where(blocked, -np.inf, gain)
    k = min(candidates, ids.shape[1] * (vocab - _RESERVED_IDS))
    top_gain, top = tf.math.top_k(tf.reshape(gain, (len(ids), -1)), k=k)
    top, usable = top.numpy(), np.isfinite(top_gain.numpy())
    position, word = top // vocab, top % vocab
    tried = np.repeat(ids, k, axis=0)
    tried[np.arange(len(tried)), position.reshape(-1)] = word.reshape(-1)
    logits = predict_logits(target.logits_model, tried)
    exact = per_example_loss(tf.constant(logits), tf.constant(np.repeat(y, k))).numpy()
    exact = np.where(usable, exact.reshape(len(ids), k), -np.inf)
    best = exact.argmax(axis=1)
    rows = np.arange(len(ids))
    fooled = predicted_classes(logits).reshape(len(ids), k)[rows, best] != y
    chosen = np.where(usable[rows, best], position[rows, best], -1)
    return chosen, word[rows, best], fooled & usable[rows, best]
