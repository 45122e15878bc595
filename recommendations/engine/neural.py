"""The hybrid two-tower model: Keras trains it, numpy serves it.

Item tower: id embedding (index 0 = unknown / cold) + category, brand and price band embeddings + price_z + the
mean of name/description token embeddings (tokenized by Keras' TextVectorization) → Dense(relu) → Dense →
L2-normalized vector. Ids are dropped to 0 at random while training, so the feature path alone places a
brand-new product near the products like it. Shopper tower: a GRU reads the shopper's last `seq_len` events as
(item tower vector, event-type embedding, embedding of the time since the event when asked: `next_gap`) triples →
Dense → L2-normalized vector. Score = dot / temperature.

TensorFlow is imported only inside `fit` and `verify_keras` (importing this module never loads it); `score`,
`save` and `load` are numpy. `save` writes the Keras model (`model.keras`, the record and what `verify_keras`
checks) and `serving.npz` + `vocabulary.json`: every weight the numpy forward needs, so new products can be
embedded from their features at `load` without TensorFlow. Never pickle.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import string
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from recommendations.engine.base import (
    N_EVENT_TYPE_CODES,
    EvalSet,
    Interactions,
    ItemFeatures,
    ProgressCallback,
    Recommender,
    check_items,
    item_id_array,
    read_arrays,
)

KERAS_FILE = "model.keras"
SERVING_FILE = "serving.npz"
VOCABULARY_FILE = "vocabulary.json"
MEMBER_PREFIX = "member-"  # the further members' directories inside a saved model: member-1, member-2, ...
PROGRESS_STAGE = "train neural"
MIN_PRICE_BANDS = 5  # dataset.N_PRICE_BANDS; the band table never shrinks below it, so any catalog's bands fit
VERIFY_ATOL = 1e-4
LAZY_MIN_ROWS = 8192  # embedding tables with more rows update only the rows a batch touched
ITEM_CHUNK = 4096  # items per numpy item-tower block (bounds the token-embedding temporaries)
# Strings verify_keras also tokenizes both ways: what the numpy standardize/split must get exactly like TensorFlow.
PROBE_TEXTS = (
    "",
    "   ",
    "ÉCOLE Straße ДОМ Café-au-lait, 100% [new]!",
    "tabs\tand\nnew\x0blines\x0c\r and\xa0nbsp\u2003em-space \x1cfs",
    'it\'s a "quoted" back\\slash path/to/item_name (x2) {a|b} ~tilde~ `tick` ^caret^ @at #hash $5 & more',
)

# Keras TextVectorization's "lower_and_strip_punctuation" + "whitespace": ASCII-only lowercasing (tf.strings.lower
# without an encoding), ASCII punctuation removed, split on runs of ASCII whitespace (not \xa0 and friends).
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_PUNCTUATION = re.compile(r'[!"#$%&()\*\+,\-\./:;<=>?@\[\\\]^_`{|}~\']')
_WHITESPACE = re.compile(r"[ \t\n\v\f\r]+")

# Numpy weight name -> (tower, Keras layer name, attribute); the GRU's are on its cell.
_KERAS_WEIGHTS: dict[str, tuple[str, str, str]] = {
    "id_embedding": ("item", "id_embedding", "embeddings"),
    "category_embedding": ("item", "category_embedding", "embeddings"),
    "brand_embedding": ("item", "brand_embedding", "embeddings"),
    "band_embedding": ("item", "band_embedding", "embeddings"),
    "token_embedding": ("item", "token_embedding", "embeddings"),
    "item_hidden_kernel": ("item", "item_hidden", "kernel"),
    "item_hidden_bias": ("item", "item_hidden", "bias"),
    "item_out_kernel": ("item", "item_out", "kernel"),
    "item_out_bias": ("item", "item_out", "bias"),
    "event_embedding": ("shopper", "event_embedding", "embeddings"),
    "next_gap_embedding": ("shopper", "next_gap_embedding", "embeddings"),
    "gru_kernel": ("shopper", "gru", "kernel"),
    "gru_recurrent_kernel": ("shopper", "gru", "recurrent_kernel"),
    "gru_bias": ("shopper", "gru", "bias"),
    "shopper_out_kernel": ("shopper", "shopper_out", "kernel"),
    "shopper_out_bias": ("shopper", "shopper_out", "bias"),
}

_OPTIONAL_WEIGHTS = {"next_gap_embedding"}  # only in a model trained with `next_gap`

DEFAULTS: dict[str, Any] = {
    "dim": 32,  # item / shopper vector size
    "id_dim": 32,
    "category_dim": 16,
    "brand_dim": 16,
    "band_dim": 4,
    "text_dim": 32,
    "text_len": 24,  # tokens of name + description read per item
    "vocab_size": 5000,  # TextVectorization max_tokens (padding and OOV included)
    "hidden": 64,
    "gru_units": 64,
    "event_dim": 8,
    "seq_len": 20,  # recent events the shopper tower reads
    # Each step also reads how long it has been since its event when it is asked: in training a moment drawn inside
    # the gap to the next event (the target), in serving the newest event's age. Asked minutes after a view, the
    # next product follows the last one (the rest of a session); asked a week later it follows the shopper's taste
    # (docs/benchmarks.md, "The time since the last event").
    "next_gap": True,
    "gap_buckets": 16,  # 0 pads, 1 = none before, 2.. = log2(1 + 4 x hours), capped (gap_bucket)
    "temperature": 0.05,
    "id_dropout": 0.25,
    "learning_rate": 0.003,
    "batch_positions": 1024,  # (query, target) pairs per step: the in-batch softmax is batch x batch
    "min_steps_per_epoch": 40,  # small data: one "epoch" repeats the data up to this many steps
    "epochs": 8,
    "patience": 2,
    "max_seconds": 60.0,  # training budget (validation of the epoch in progress still runs)
    # Models trained one after another while the budget lasts (seeds seed, seed + 1, ...; each its own early
    # stopping), their scores averaged: one seed's model moves a lot from seed to seed on small data (MovieLens per
    # shopper 0.173-0.182), the mean of three is steadier and better (0.188). A shop whose first model takes the
    # whole budget gets that one alone.
    "members": 3,
    "seed": 0,
}


NO_TENSORFLOW = (
    "TensorFlow is not installed (pip install 'django-recommendations[neural]' adds it); "
    "the other candidates trained with numpy"
)


def tensorflow_available() -> bool:
    """Whether the deep model can train here: a web-only install of the app leaves TensorFlow out."""
    return importlib.util.find_spec("tensorflow") is not None


def padded_tables(tf: Any, catalog: dict[str, np.ndarray]) -> dict[str, Any]:
    """The catalog's feature tables as constants with a zero row in front: row 0 is padding, product i is row i+1."""
    return {
        key: tf.constant(np.concatenate([np.zeros((1, *value.shape[1:]), value.dtype), value]))
        for key, value in catalog.items()
    }


def item_vectors_tf(tf: Any, item_model: Any, tables: dict[str, Any], rows: Any, ids: Any) -> Any:
    """The item tower in a training step over catalog rows (`padded_tables` rows), `ids` its id input (0 where
    dropped out): both Keras models embed a batch's events and targets with it."""
    return item_model(
        [
            ids,
            tf.gather(tables["category"], rows),
            tf.gather(tables["brand"], rows),
            tf.gather(tables["band"], rows),
            tf.gather(tables["price_z"], rows)[:, None],
            tf.gather(tables["tokens"], rows),
        ],
        training=True,
    )


def catalog_vectors(w: dict[str, np.ndarray], catalog: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    """Every catalog product's vector from the numpy item tower (`ids`: index + 1, or 0 for the feature path)."""
    parts = (catalog[key] for key in ("category", "brand", "band", "price_z", "tokens"))
    return item_tower(w, ids, *parts)


def in_batch_loss(
    tf: Any, rows: Any, positions: Any, states: Any, vectors: Any, weight: Any, logq: Any, temperature: float
) -> Any:
    """Next-item softmax over the batch's own targets, logQ-corrected for popularity; a target that is the same
    product as the true one is not counted as a negative. `states` (B x steps x dim) predict `vectors[:, 1:]`; only
    `positions` (flat indexes of real targets) count. Both Keras models train with it."""
    n = tf.shape(positions)[0]
    target_rows = tf.gather(tf.reshape(rows[:, 1:], [-1]), positions)
    duplicate = tf.logical_and(
        tf.equal(target_rows[:, None], target_rows[None, :]), tf.logical_not(tf.eye(n, dtype=tf.bool))
    )
    dim = tf.shape(vectors)[2]
    queries = tf.gather(tf.reshape(states, [-1, dim]), positions)
    targets = tf.gather(tf.reshape(vectors[:, 1:], [-1, dim]), positions)
    logits = tf.matmul(queries, targets, transpose_b=True) / temperature - logq[None, :]
    logits = tf.where(duplicate, tf.constant(-1e9, tf.float32), logits)
    loss_each = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.range(n), logits=logits)
    return tf.reduce_sum(weight * loss_each) / tf.reduce_sum(weight)


def _quiet_tensorflow() -> None:
    """Set before TensorFlow's first import: no C++ log spam, and no oneDNN (its float rounding varies by run)."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"


# ---- numpy forward ----------------------------------------------------------------------------------------------


def standardize(text: str) -> str:
    """TextVectorization's default standardize, in Python: ASCII lowercase, then strip ASCII punctuation."""
    return _PUNCTUATION.sub("", text.translate(_ASCII_LOWER))


def tokenize(texts: list[str], vocabulary: list[str], length: int) -> np.ndarray:
    """Token ids as TextVectorization(output_sequence_length=length) gives them: 0 pads, 1 is out-of-vocabulary."""
    index = {token: i for i, token in enumerate(vocabulary) if i >= 2}
    out = np.zeros((len(texts), length), dtype=np.int32)
    for row, text in enumerate(texts):
        tokens = [t for t in _WHITESPACE.split(standardize(text)) if t][:length]
        if tokens:
            out[row, : len(tokens)] = [index.get(t, 1) for t in tokens]
    return out


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norm = np.sqrt(np.sum(np.square(x), axis=-1, keepdims=True))
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def item_tower(
    w: dict[str, np.ndarray],
    ids: np.ndarray,
    category: np.ndarray,
    brand: np.ndarray,
    band: np.ndarray,
    price_z: np.ndarray,
    tokens: np.ndarray,
) -> np.ndarray:
    """The item tower in numpy: items x dim, unit length. `ids` are catalog index + 1, or 0 for feature-only."""
    out = np.zeros((len(ids), w["item_out_kernel"].shape[1]), dtype=np.float32)
    for start in range(0, len(ids), ITEM_CHUNK):
        part = slice(start, start + ITEM_CHUNK)
        x = np.concatenate(
            [
                w["id_embedding"][ids[part]],
                w["category_embedding"][category[part]],
                w["brand_embedding"][brand[part]],
                w["band_embedding"][band[part]],
                np.asarray(price_z[part], dtype=np.float32)[:, None],
                w["token_embedding"][tokens[part]].mean(axis=1),
            ],
            axis=1,
        )
        hidden = np.maximum(x @ w["item_hidden_kernel"] + w["item_hidden_bias"], 0.0)
        out[part] = _l2_normalize(hidden @ w["item_out_kernel"] + w["item_out_bias"])
    return out


def shopper_tower(
    w: dict[str, np.ndarray],
    vectors: np.ndarray,
    types: np.ndarray,
    lengths: np.ndarray,
    all_steps: bool = False,
    next_gaps: np.ndarray | None = None,
) -> np.ndarray:
    """The shopper tower in numpy: a Keras GRU (reset_after=True, gates z, r, h) over each row's first `lengths` steps.

    Returns each shopper's vector after its last event (shoppers x dim), or with `all_steps` the vector after every
    step (shoppers x steps x dim). A shopper with no events gets the output layer's bias direction.
    """
    n, steps = types.shape
    kernel, recurrent, bias = w["gru_kernel"], w["gru_recurrent_kernel"], w["gru_bias"]
    units = recurrent.shape[0]
    parts = [vectors.astype(np.float32), w["event_embedding"][types]]
    if "next_gap_embedding" in w:
        if next_gaps is None:
            raise ValueError("this model reads the gap to the next event: pass next_gaps")
        parts.append(w["next_gap_embedding"][next_gaps])
    x = np.concatenate(parts, axis=2)
    projected = x @ kernel + bias[0]
    h = np.zeros((n, units), dtype=np.float32)
    states = np.zeros((n, steps, units), dtype=np.float32) if all_steps else None
    for t in range(steps):
        inner = h @ recurrent + bias[1]
        xt = projected[:, t]
        z = expit(xt[:, :units] + inner[:, :units])
        r = expit(xt[:, units : 2 * units] + inner[:, units : 2 * units])
        candidate = np.tanh(xt[:, 2 * units :] + r * inner[:, 2 * units :])
        new = (z * h + (1.0 - z) * candidate).astype(np.float32)
        h = np.where((t < lengths)[:, None], new, h)
        if states is not None:
            states[:, t] = new
    hidden = states if states is not None else h
    return _l2_normalize(hidden @ w["shopper_out_kernel"] + w["shopper_out_bias"])


FIRST_EVENT_GAP = 1  # gap code of a shopper's first event; 0 pads


def gap_bucket(hours: np.ndarray, buckets: int) -> np.ndarray:
    """2 + the capped log2 bucket of a gap in hours (15-minute steps at the short end): a burst of browsing and a
    return next week read differently."""
    return (2 + np.minimum(np.floor(np.log2(1.0 + 4.0 * np.maximum(hours, 0.0))), buckets - 3)).astype(np.int32)


def _hours_between(history: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """For each event but the last: whether the next event is the same shopper's, and the hours between them."""
    same = history.shopper[1:] == history.shopper[:-1]
    return same, np.maximum(history.age_days[:-1].astype(np.float64) - history.age_days[1:], 0.0) * 24.0


def gap_codes(history: Interactions, buckets: int) -> np.ndarray:
    """Per event: FIRST_EVENT_GAP for a shopper's first event, else the bucket of the hours since the previous one."""
    codes = np.full(history.n_events, FIRST_EVENT_GAP, dtype=np.int32)
    if history.n_events > 1:
        same, hours = _hours_between(history)
        codes[1:] = np.where(same, gap_bucket(hours, buckets), FIRST_EVENT_GAP)
    return codes


def following_gaps(history: Interactions, buckets: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Per event, the gap code of the shopper's next event (what training asks the state after it across); 0 for a
    shopper's newest, which never predicts in training. With `rng`, the code of a moment drawn uniformly inside the
    gap instead: what serving knows is the time elapsed since the last event, and the next event is at least that
    far away."""
    following = np.zeros(history.n_events, dtype=np.int32)
    if history.n_events > 1:
        same, hours = _hours_between(history)
        if rng is not None:
            hours = hours * rng.random(hours.size)
        following[:-1] = np.where(same, gap_bucket(hours, buckets), 0)
    return following


def window_gaps(history: Interactions, lengths: np.ndarray, seq_len: int, buckets: int) -> np.ndarray:
    """`gap_codes` of the events `last_events` returns (shoppers x seq_len, 0 pads)."""
    ptr = history.indptr()
    position = np.arange(seq_len)
    valid = position[None, :] < lengths[:, None]
    gaps = np.zeros((lengths.size, seq_len), dtype=np.int32)
    if history.n_events:
        index = np.where(valid, (ptr[1:] - lengths)[:, None] + position[None, :], 0)
        gaps = np.where(valid, gap_codes(history, buckets)[index], 0).astype(np.int32)
    return gaps


def next_gap_codes(history: Interactions, gaps: np.ndarray, lengths: np.ndarray, buckets: int) -> np.ndarray:
    """Per step of a window, the gap code to what that step is asked about: the following event's gap, and for a
    shopper's newest event the time from it to the history's moment (its age: from the cut in evaluation, from the
    newest event of the shop in serving)."""
    asked = np.zeros_like(gaps)
    asked[:, :-1] = gaps[:, 1:]
    has = lengths > 0
    if history.n_events and has.any():
        newest = history.indptr()[1:][has] - 1
        hours = history.age_days[newest].astype(np.float64) * 24.0
        asked[np.flatnonzero(has), lengths[has] - 1] = gap_bucket(hours, buckets)
    return asked


def asked_gaps(history: Interactions, lengths: np.ndarray, seq_len: int, buckets: int) -> np.ndarray:
    """`next_gap_codes` of the windows `last_events` returns."""
    return next_gap_codes(history, window_gaps(history, lengths, seq_len, buckets), lengths, buckets)


def last_events(history: Interactions, seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items, event types, lengths) of each shopper's last `seq_len` events, oldest first, right-padded (-1 / 0)."""
    ptr = history.indptr()
    lengths = np.minimum(np.diff(ptr), seq_len)
    position = np.arange(seq_len)
    valid = position[None, :] < lengths[:, None]
    index = np.where(valid, (ptr[1:] - lengths)[:, None] + position[None, :], 0)
    if history.n_events == 0:
        shape = (history.n_shoppers, seq_len)
        return np.full(shape, -1, dtype=np.int64), np.zeros(shape, dtype=np.int32), lengths
    items = np.where(valid, history.item[index], -1).astype(np.int64)
    types = np.where(valid, np.clip(history.event_type[index], 0, N_EVENT_TYPE_CODES - 1), 0).astype(np.int32)
    return items, types, lengths


def shopper_vectors(
    w: dict[str, np.ndarray], item_vectors: np.ndarray, history: Interactions, seq_len: int, gap_buckets: int = 0
) -> np.ndarray:
    """Each history row's shopper vector from its last `seq_len` events (and, with `gap_buckets`, the gap from each
    to what it is asked about: a model trained with `next_gap`)."""
    items, types, lengths = last_events(history, seq_len)
    asked = asked_gaps(history, lengths, seq_len, gap_buckets) if gap_buckets else None
    vectors = np.where((items >= 0)[:, :, None], item_vectors[np.maximum(items, 0)], 0.0).astype(np.float32)
    return shopper_tower(w, vectors, types, lengths, next_gaps=asked)


# ---- the recommender ------------------------------------------------------------------------------------------------


class NeuralRecommender(Recommender):
    """Hybrid two-tower model (see the module docstring); parameters and their defaults are in DEFAULTS.

    Training targets: every event of a shopper's train sequence, except the first, is a target for the shopper
    tower's state after the events before it (the GRU runs once over a window of up to `seq_len` events and
    predicts at every step, which is ~seq_len times cheaper than one GRU pass per target). Windows of long
    histories overlap by half so every target sees at least seq_len/2 events of context. A target whose item is
    among the shopper's previous `seq_len` events is skipped: evaluation (and a for_you list) asks for items not
    yet in the history, and repeats would teach "show them what they just saw". Each target weighs
    log1p(its event type weight), normalized to mean 1, so a purchase counts ~3x a view. The loss is in-batch
    softmax: each query against every target of the batch, logits minus log(q) where q is the item's share of
    all targets (logQ correction, so popular items are not over-penalized as negatives); other rows with the
    same item as a query's positive are masked. Early stopping on validation NDCG@10 (numpy forward, the exact
    serving path) restores the best epoch's weights.
    """

    name = "neural"
    progress_stage = PROGRESS_STAGE
    defaults: dict[str, Any] = DEFAULTS  # the sequence model shares this class with its own parameters

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(f"unknown {self.name} parameters: {sorted(unknown)}")
        super().__init__(**params)
        self.config: dict[str, Any] = {**self.defaults, **params}
        self.item_ids: list[str] | None = None
        self.weights: dict[str, np.ndarray] | None = None
        self.item_vectors: np.ndarray | None = None
        self.vocabulary: list[str] = []
        self.categories: list[str] = []
        self.brands: list[str] = []
        # The training catalog, kept for save (verification probe, and vectors of known products at load).
        self._train_catalog: dict[str, np.ndarray] = {}
        self._train_text: list[str] = []
        self._keras_record: Any = None
        self.members: list[NeuralRecommender] = []  # the models trained after this one (`members`), each whole

    # -- scoring (numpy) --

    def _require_fit(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        if self.weights is None or self.item_vectors is None:
            raise RuntimeError(f"{self.name} is not fitted")
        return self.weights, self.item_vectors

    def gap_buckets(self) -> int:
        """The `gap_buckets` of `last_events` for this model: 0 unless it reads the gap to the next event."""
        return int(self.config["gap_buckets"]) if self.config["next_gap"] else 0

    def shopper_vectors(self, history: Interactions) -> np.ndarray:
        weights, item_vectors = self._require_fit()
        return shopper_vectors(weights, item_vectors, history, int(self.config["seq_len"]), self.gap_buckets())

    def score(self, history: Interactions) -> np.ndarray:
        scores = self._own_score(history)
        for member in self.members:
            scores += member._own_score(history)
        if self.members:
            scores /= np.float32(1 + len(self.members))
        return scores

    def _own_score(self, history: Interactions) -> np.ndarray:
        _, item_vectors = self._require_fit()
        check_items(history, item_vectors.shape[0])
        shoppers = self.shopper_vectors(history)  # the sequence model encodes its own way, scores the same
        # Dividing the (rows x dim) shopper vectors rather than the (rows x items) product saves a pass and a
        # copy over the scores; asarray copies nothing when they are float32 already (they are).
        scaled = shoppers / np.float32(self.config["temperature"])
        return np.asarray(scaled @ item_vectors.T, dtype=np.float32)

    # -- fit (TensorFlow) --

    def fit(
        self,
        train: Interactions,
        features: ItemFeatures,
        validation: EvalSet | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Train the towers; returns epochs_run, best_epoch, seconds, val_ndcg (per epoch) and sizes."""
        started = time.perf_counter()
        keras, tf, rng = self._start_fit(train, features)
        cfg = self.config
        seq_len = int(cfg["seq_len"])

        vectorizer, texts, catalog, sizes, ids_for_serving = self._prepare_catalog(keras, tf, train, features)

        item_model, shopper_model = _build_towers(keras, cfg, sizes)
        variables = item_model.trainable_variables + shopper_model.trainable_variables
        optimizer = _LazyAdam(tf, variables, float(cfg["learning_rate"]))

        tables = padded_tables(tf, catalog)
        temperature = float(cfg["temperature"])
        next_gap, gap_buckets = bool(cfg["next_gap"]), int(cfg["gap_buckets"])

        int_matrix = tf.TensorSpec([None, None], tf.int32)
        int_vector = tf.TensorSpec([None], tf.int32)
        float_vector = tf.TensorSpec([None], tf.float32)

        @tf.function(input_signature=[int_matrix, int_matrix, int_matrix, int_vector, float_vector, float_vector])
        def train_step(rows, ids, types, positions, weight, logq):
            # rows / ids: a window's events and the one after (B x steps+1); step p predicts event p+1.
            shape = tf.shape(rows)
            flat_rows = tf.reshape(rows, [-1])
            with tf.GradientTape() as tape:
                vectors = item_vectors_tf(tf, item_model, tables, flat_rows, tf.reshape(ids, [-1]))
                dim = tf.shape(vectors)[1]
                vectors = tf.reshape(vectors, tf.stack([shape[0], shape[1], dim]))
                inputs = (
                    [vectors[:, :-1], types // gap_buckets, types % gap_buckets]
                    if next_gap
                    else [vectors[:, :-1], types]
                )
                states = shopper_model(inputs, training=True)
                loss = in_batch_loss(tf, rows, positions, states, vectors, weight, logq, temperature)
            gradients = tape.gradient(loss, variables)
            optimizer.apply(gradients)
            return loss

        def take_weights() -> None:
            """The numpy serving state from the Keras weights: what validation scores and `score` serves."""
            self.weights = _numpy_weights(item_model, shopper_model)
            self.item_vectors = catalog_vectors(self.weights, catalog, ids_for_serving)

        windows = _Windows(train, seq_len)
        if next_gap:  # each step's type and the gap to its target travel in one code through the shared windows
            windows.event_type = windows.event_type * gap_buckets + following_gaps(train, gap_buckets, rng)
        stats = self._train_epochs(windows, train_step, take_weights, variables, validation, on_progress, rng, started)
        record = _record_model(keras, item_model, shopper_model, vectorizer, cfg)
        stats = self._finish_fit(features, catalog, ids_for_serving, texts, record, stats, started)
        return {**stats, **self._fit_members(train, features, validation, on_progress, started)}

    def _fit_members(
        self,
        train: Interactions,
        features: ItemFeatures,
        validation: EvalSet | None,
        on_progress: ProgressCallback | None,
        started: float,
    ) -> dict[str, Any]:
        """Train the further `members` (seed + 1, ...) while another whole one fits in the budget, as long as the
        first took; their scores are averaged with this model's. Returns the members' count and seconds."""
        self.members = []
        budget = float(self.config["max_seconds"])
        first = time.perf_counter() - started
        seconds = [round(first, 3)]
        for offset in range(1, max(int(self.config.get("members", 1)), 1)):
            elapsed = time.perf_counter() - started
            if elapsed + first > budget:
                break
            member = NeuralRecommender(
                **{
                    **self.params,
                    "seed": int(self.config["seed"]) + offset,
                    "members": 1,
                    "max_seconds": budget - elapsed,
                }
            )
            began = time.perf_counter()
            member.fit(train, features, validation, on_progress)
            self.members.append(member)
            seconds.append(round(time.perf_counter() - began, 3))
        return {
            "members": 1 + len(self.members),
            "member_seconds": seconds,
            "seconds": round(time.perf_counter() - started, 3),
        }

    def _finish_fit(
        self,
        features: ItemFeatures,
        catalog: dict[str, np.ndarray],
        ids_for_serving: np.ndarray,
        texts: list[str],
        record: Any,
        stats: dict[str, Any],
        started: float,
    ) -> dict[str, Any]:
        """What both Keras models keep after training (for `save`) and report: the epochs' stats, time and sizes."""
        self.item_ids = list(features.item_ids)
        self._train_catalog = {**catalog, "ids": ids_for_serving}
        self._train_text = texts
        self._keras_record = record
        return {
            **stats,
            "seconds": round(time.perf_counter() - started, 3),
            "n_items": features.n_items,
            "vocabulary": len(self.vocabulary),
        }

    def _start_fit(self, train: Interactions, features: ItemFeatures) -> tuple[Any, Any, np.random.Generator]:
        """How both Keras models begin a fit: the inputs checked, TensorFlow imported quietly, every seed set.

        Returns (keras, tensorflow, the numpy generator of the batches)."""
        if train.n_items != features.n_items:
            raise ValueError(f"interactions cover {train.n_items} items, features {features.n_items}")
        if not tensorflow_available():
            raise ValueError(NO_TENSORFLOW)  # the run leaves this candidate out and records why
        _quiet_tensorflow()
        import keras
        import tensorflow as tf

        seed = int(self.config["seed"])
        keras.utils.set_random_seed(seed)
        return keras, tf, np.random.default_rng(seed)

    def _train_epochs(
        self,
        windows: Any,
        train_step: Callable[..., Any],
        take_weights: Callable[[], None],
        variables: list[Any],
        validation: EvalSet | None,
        on_progress: ProgressCallback | None,
        rng: np.random.Generator,
        started: float,
    ) -> dict[str, Any]:
        """Epochs of `train_step` over the windows, each scored on validation with the numpy serving state; stops on
        patience or the time budget and leaves the best epoch's weights in place. The sequence model shares it."""
        from recommendations.engine.metrics import evaluate_scores

        cfg = self.config
        n_targets = int(windows.active.sum()) if windows.n_windows else 0
        epochs = max(int(cfg["epochs"]), 1)
        max_seconds = float(cfg["max_seconds"])
        patience = int(cfg["patience"])
        val_ndcg: list[float] = []
        losses: list[float] = []
        best_epoch, best_score, best_state = 0, -math.inf, None
        stopped = "epochs"
        epoch_seconds: list[float] = []
        steps: list[int] = []
        epochs_run = 0
        if on_progress is not None:
            on_progress(self.progress_stage, 0, epochs)
        for epoch in range(1, epochs + 1):
            epoch_started = time.perf_counter()
            over_budget = False
            total, count = 0.0, 0
            if n_targets:
                for batch in windows.epoch_batches(rng, int(cfg["batch_positions"]), int(cfg["min_steps_per_epoch"])):
                    ids = np.where(rng.random(batch.rows.shape) < cfg["id_dropout"], 0, batch.rows)
                    loss = train_step(
                        batch.rows, ids.astype(np.int32), batch.types, batch.positions, batch.weight, batch.logq
                    )
                    total += float(loss)
                    count += 1
                    if time.perf_counter() - started > max_seconds:
                        over_budget = True
                        break
            epochs_run = epoch
            losses.append(round(total / max(count, 1), 5))
            take_weights()
            steps.append(count)
            if validation is not None and validation.n_shoppers:
                ndcg = float(evaluate_scores(self.score, validation, k=10)["ndcg"])
                val_ndcg.append(round(ndcg, 6))
                if ndcg > best_score:
                    best_epoch, best_score = epoch, ndcg
                    best_state = [v.numpy().copy() for v in variables]
            else:
                best_epoch = epoch
            epoch_seconds.append(round(time.perf_counter() - epoch_started, 3))
            if on_progress is not None:
                on_progress(self.progress_stage, epoch, epochs)
            if over_budget:
                stopped = "max_seconds"
                break
            if validation is not None and val_ndcg and epoch - best_epoch >= patience:
                stopped = "patience"
                break
        if best_state is not None and best_epoch != epochs_run:
            for variable, value in zip(variables, best_state, strict=True):
                variable.assign(value)
            take_weights()
        return {
            "epochs_run": epochs_run,
            "best_epoch": best_epoch,
            "val_ndcg": val_ndcg,
            "loss": losses,
            "epoch_seconds": epoch_seconds,
            "steps": steps,
            "stopped": stopped,
            "max_seconds": max_seconds,  # the budget it had (a late retrain gives less: training.runs.deep_budget)
            "n_targets": n_targets,
            "n_windows": windows.n_windows,
        }

    def _prepare_catalog(
        self, keras: Any, tf: Any, train: Interactions, features: ItemFeatures
    ) -> tuple[Any, list[str], dict[str, np.ndarray], dict[str, int], np.ndarray]:
        """The item tower's inputs for the whole catalog: (vectorizer, texts, feature tables, table sizes, ids).

        Sets the vocabulary and the category / brand names; ids are catalog index + 1 for products with train
        events and 0 (feature path only) for the others.
        """
        cfg = self.config
        n_items = features.n_items
        # Catalog: text vocabulary and tokens from TextVectorization, feature tables (row 0 = padding).
        texts = [str(t) for t in features.text]
        vectorizer = _text_vectorizer(keras, cfg)
        vectorizer.adapt(tf.constant(texts if texts else [""]))
        self.vocabulary = [str(t) for t in vectorizer.get_vocabulary()]
        tokens = _vectorize(vectorizer, tf, texts, int(cfg["text_len"]))
        catalog = {
            "category": np.asarray(features.category, dtype=np.int32),
            "brand": np.asarray(features.brand, dtype=np.int32),
            "band": np.asarray(features.price_band, dtype=np.int32),
            "price_z": np.asarray(features.price_z, dtype=np.float32),
            "tokens": tokens,
        }
        sizes = {
            "n_ids": n_items + 1,
            "n_categories": max(int(catalog["category"].max(initial=0)), features.n_categories) + 1,
            "n_brands": max(int(catalog["brand"].max(initial=0)), features.n_brands) + 1,
            "n_bands": max(int(catalog["band"].max(initial=0)), MIN_PRICE_BANDS) + 1,
            "n_tokens": len(self.vocabulary),
        }
        self.categories, self.brands = list(features.categories), list(features.brands)
        has_id = np.bincount(train.item, minlength=n_items) > 0
        ids_for_serving = np.where(has_id, np.arange(1, n_items + 1), 0).astype(np.int32)
        return vectorizer, texts, catalog, sizes, ids_for_serving

    # -- persistence --

    def save(self, directory: Path) -> None:
        """model.keras (the Keras record), serving.npz (numpy weights, vectors, training catalog), vocabulary.json."""
        weights, item_vectors = self._require_fit()
        if self._keras_record is None or self.item_ids is None:
            raise RuntimeError("only a model fitted in this process can be saved (load gives a numpy-only model)")
        directory = Path(directory)
        with warnings.catch_warnings():
            # Keras 3.15 calls np.array(variable, copy=False) on its own variables; numpy 2 warns, harmlessly.
            warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
            self._keras_record.save(directory / KERAS_FILE)
        catalog = self._train_catalog
        probe = _probe_rows(len(self.item_ids))
        np.savez(
            directory / SERVING_FILE,
            item_ids=item_id_array(self.item_ids),
            item_vectors=item_vectors,
            train_ids=catalog["ids"],
            train_category=catalog["category"],
            train_brand=catalog["brand"],
            train_band=catalog["band"],
            train_price_z=catalog["price_z"],
            train_tokens=catalog["tokens"],
            probe_rows=probe,
            probe_text=np.array([self._train_text[i] for i in probe] + list(PROBE_TEXTS), dtype=str),
            **{f"w_{key}": value for key, value in weights.items()},
        )
        (directory / VOCABULARY_FILE).write_text(json.dumps(self.vocabulary, ensure_ascii=False))
        self._write_params(directory, {"categories": self.categories, "brands": self.brands})
        for number, member in enumerate(self.members, start=1):
            # Each member is a whole model of its own (verify_artefact checks every model.keras it finds).
            (directory / f"{MEMBER_PREFIX}{number}").mkdir()
            member.save(directory / f"{MEMBER_PREFIX}{number}")

    @classmethod
    def load(cls, directory: Path, features: ItemFeatures) -> NeuralRecommender:
        """Numpy-only model for `features`: known products keep their trained vector, new ones get a feature vector."""
        directory = Path(directory)
        model, stored = cls._from_params(directory)
        serving = _read_serving(directory)
        model.weights = {key[2:]: value for key, value in serving.items() if key.startswith("w_")}
        model.config["next_gap"] = model.reads_next_gap(model.weights)  # an artefact saved before the setting
        model.vocabulary = json.loads((directory / VOCABULARY_FILE).read_text())
        model.categories, model.brands = list(stored.get("categories", [])), list(stored.get("brands", []))
        model.item_ids = list(features.item_ids)
        old_position = {str(pid): i for i, pid in enumerate(serving["item_ids"].tolist())}
        trained = serving["train_ids"] > 0
        vectors = np.zeros((features.n_items, serving["item_vectors"].shape[1]), dtype=np.float32)
        fresh, untrained, saved_rows = [], [], []
        for j, pid in enumerate(model.item_ids):
            i = old_position.get(pid)
            if i is not None and trained[i]:
                vectors[j] = serving["item_vectors"][i]
            elif i is not None:
                untrained.append(j)
                saved_rows.append(i)
            else:
                fresh.append(j)
        w = model.weights
        if untrained:
            # Feature-only products the model already embedded: reuse the saved vector when their features are
            # unchanged, so a loaded model scores exactly as the saved one (a recompute on fewer rows may round
            # differently in float32), and re-embed only the ones whose features changed.
            rows, old = np.array(untrained, dtype=np.int64), np.array(saved_rows, dtype=np.int64)
            inputs = model._feature_inputs(features, rows)
            same = (
                (inputs[0] == serving["train_category"][old])
                & (inputs[1] == serving["train_brand"][old])
                & (inputs[2] == serving["train_band"][old])
                & (inputs[3] == serving["train_price_z"][old])
                & (inputs[4] == serving["train_tokens"][old]).all(axis=1)
            )
            vectors[rows[same]] = serving["item_vectors"][old[same]]
            fresh.extend(rows[~same].tolist())
        if fresh:
            rows = np.array(sorted(fresh), dtype=np.int64)
            vectors[rows] = item_tower(w, np.zeros(rows.size, dtype=np.int64), *model._feature_inputs(features, rows))
        model.item_vectors = vectors
        model.members = [
            cls.load(directory / f"{MEMBER_PREFIX}{number}", features)
            for number in range(1, len(list(directory.glob(f"{MEMBER_PREFIX}*"))) + 1)
        ]
        return model

    @staticmethod
    def reads_next_gap(w: dict[str, np.ndarray]) -> bool:
        """Whether these weights were trained with `next_gap` (an artefact saved before it existed was not)."""
        return "next_gap_embedding" in w

    def _feature_inputs(self, features: ItemFeatures, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """The item tower's feature inputs (category, brand, band, price, tokens) for `rows`, in training codes."""
        w = self.weights
        category = _remap(features.category[rows], features.categories, self.categories)
        brand = _remap(features.brand[rows], features.brands, self.brands)
        return (
            _in_table(category, w["category_embedding"]),
            _in_table(brand, w["brand_embedding"]),
            _in_table(np.asarray(features.price_band)[rows], w["band_embedding"]),
            np.asarray(features.price_z, dtype=np.float32)[rows],
            tokenize([features.text[j] for j in rows.tolist()], self.vocabulary, int(self.config["text_len"])),
        )


# ---- verification ---------------------------------------------------------------------------------------------------


def verify_keras(directory: Path) -> None:
    """Refuse an artefact whose Keras model and numpy serving weights disagree (or either is unreadable).

    Loads model.keras with safe_mode=True and compares, at atol 1e-4: every Keras weight with its serving.npz copy;
    the Keras item tower (raw text through TextVectorization) against the numpy tower + tokenizer on probe products
    and tricky strings; the Keras item tower against every stored item vector of the training catalog; the Keras
    shopper tower (GRU) against the numpy GRU at every step of probe sequences. Raises ValueError on any mismatch.
    """
    directory = Path(directory)
    _quiet_tensorflow()
    import keras

    try:
        record = keras.saving.load_model(directory / KERAS_FILE, safe_mode=True, compile=False)
        serving = _read_serving(directory)
        vocabulary = json.loads((directory / VOCABULARY_FILE).read_text())
        config = {**DEFAULTS, **Recommender._read_params(directory)["params"]}
        item_model = record.get_layer("item_tower")
        shopper_model = record.get_layer("shopper_tower")
    except Exception as exc:  # a truncated zip, a missing file, a foreign model: all mean "refuse"
        raise ValueError(f"neural artefact unreadable: {type(exc).__name__}: {exc}") from exc
    w = {key[2:]: value for key, value in serving.items() if key.startswith("w_")}
    compare_weights(_numpy_weights(item_model, shopper_model), w)
    dim = w["item_out_kernel"].shape[1]
    gap = "next_gap_embedding" in w
    one = np.zeros((1, 1), np.int32)
    sequence = {
        "seq_vectors": np.zeros((1, 1, dim), np.float32),
        "seq_types": one,
        **({"seq_next_gaps": one} if gap else {}),
    }
    numpy_items = verify_item_tower(record, serving, vocabulary, int(config["text_len"]), sequence)

    # The shopper tower at every step of probe sequences of mixed lengths and event types.
    seq_len = int(config["seq_len"])
    count = max(numpy_items.shape[0], 4)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, numpy_items.shape[0], size=(count, seq_len))
    vectors = numpy_items[picks].astype(np.float32)
    types = rng.integers(1, N_EVENT_TYPE_CODES, size=(count, seq_len)).astype(np.int32)
    gaps = rng.integers(0, w["next_gap_embedding"].shape[0], size=(count, seq_len)).astype(np.int32) if gap else None
    keras_states = shopper_model.predict([vectors, types] + ([gaps] if gap else []), verbose=0)
    numpy_states = shopper_tower(w, vectors, types, np.full(count, seq_len), all_steps=True, next_gaps=gaps)
    _compare("shopper tower", keras_states, numpy_states)
    lengths = np.arange(count) % seq_len + 1
    last = shopper_tower(w, vectors, types, lengths, next_gaps=gaps)
    _compare("shopper tower (last event)", keras_states[np.arange(count), lengths - 1], last)


def compare_weights(keras_weights: dict[str, np.ndarray], w: dict[str, np.ndarray]) -> None:
    """Every Keras weight against its serving.npz copy (ValueError when one is missing, reshaped or different)."""
    for key, value in keras_weights.items():
        if key not in w or w[key].shape != value.shape:
            raise ValueError(f"serving weight {key} is missing or has the wrong shape")
        _compare(f"serving weight {key}", value, w[key])


def verify_item_tower(
    record: Any, serving: dict[str, np.ndarray], vocabulary: list[str], text_len: int, sequence: dict[str, np.ndarray]
) -> np.ndarray:
    """The record's item tower (raw text through its TextVectorization) against the numpy tower and tokenizer on
    probe products and tricky strings, and against every stored item vector; returns the probes' numpy vectors.

    `sequence` holds one row of each sequence input the record also takes (repeated, never looked at here).
    """
    import tensorflow as tf

    w = {key[2:]: value for key, value in serving.items() if key.startswith("w_")}
    item_model = record.get_layer("item_tower")
    probe = serving["probe_rows"].astype(np.int64)
    if not probe.size:
        raise ValueError("the artefact has an empty catalog")
    texts = [str(t) for t in serving["probe_text"].tolist()]
    extra = len(texts) - probe.size
    rows = np.r_[probe, np.full(extra, probe[0])].astype(np.int64)
    ids = np.r_[serving["train_ids"][probe], np.zeros(extra, dtype=np.int32)].astype(np.int32)
    features = {key: serving[f"train_{key}"][rows] for key in ("category", "brand", "band", "price_z")}
    keras_items = record(
        {
            "item_id": tf.constant(ids),
            "item_category": tf.constant(features["category"]),
            "item_brand": tf.constant(features["brand"]),
            "item_band": tf.constant(features["band"]),
            "item_price_z": tf.constant(features["price_z"][:, None]),
            "item_text": tf.constant([[t] for t in texts], dtype=tf.string),
            **{key: tf.constant(np.repeat(value, len(texts), axis=0)) for key, value in sequence.items()},
        },
        training=False,
    )[0].numpy()
    numpy_tokens = tokenize(texts, vocabulary, text_len)
    numpy_items = item_tower(
        w, ids, features["category"], features["brand"], features["band"], features["price_z"], numpy_tokens
    )
    _compare("item tower (text probe)", keras_items, numpy_items)
    _compare("stored item vectors (probe)", keras_items[: probe.size], serving["item_vectors"][probe])

    # Every stored vector of the training catalog, from the stored tokens (the Keras item tower without its text layer).
    n = serving["item_vectors"].shape[0]
    for start in range(0, n, 8192):
        part = slice(start, start + 8192)
        keras_part = item_model.predict(
            [
                serving["train_ids"][part],
                serving["train_category"][part],
                serving["train_brand"][part],
                serving["train_band"][part],
                serving["train_price_z"][part][:, None],
                serving["train_tokens"][part],
            ],
            verbose=0,
            batch_size=4096,
        )
        _compare("stored item vectors", keras_part, serving["item_vectors"][part])

    return numpy_items


def _compare(what: str, keras_values: np.ndarray, numpy_values: np.ndarray) -> None:
    keras_values, numpy_values = np.asarray(keras_values), np.asarray(numpy_values)
    if keras_values.shape != numpy_values.shape:
        raise ValueError(f"{what}: Keras shape {keras_values.shape} != numpy {numpy_values.shape}")
    if not np.all(np.isfinite(numpy_values)) or not np.allclose(keras_values, numpy_values, atol=VERIFY_ATOL, rtol=0):
        gap = float(np.nanmax(np.abs(keras_values - numpy_values))) if keras_values.size else 0.0
        raise ValueError(f"{what}: Keras and numpy values differ (max gap {gap:.2e})")


# ---- helpers --------------------------------------------------------------------------------------------------------


def _read_serving(directory: Path) -> dict[str, np.ndarray]:
    return read_arrays(Path(directory) / SERVING_FILE)


def _probe_rows(n_items: int, count: int = 16) -> np.ndarray:
    return np.unique(np.linspace(0, n_items - 1, num=min(count, n_items)).round().astype(np.int64))


def _remap(codes: np.ndarray, names: list[str], trained_names: list[str]) -> np.ndarray:
    """Category / brand codes of a catalog re-coded to the training catalog's codes by name (unknown names: 0).

    Codes are positions in sorted name lists, so a new category shifts them; without names, codes pass as they are.
    """
    codes = np.asarray(codes, dtype=np.int64)
    if not names or not trained_names:
        return codes
    trained = {name: i + 1 for i, name in enumerate(trained_names)}
    table = np.array([0] + [trained.get(name, 0) for name in names], dtype=np.int64)
    return table[np.clip(codes, 0, len(names))]


def _in_table(codes: np.ndarray, table: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.int64)
    return np.where((codes >= 0) & (codes < table.shape[0]), codes, 0)


def _numpy_weights(item_model: Any, shopper_model: Any) -> dict[str, np.ndarray]:
    towers = {"item": item_model, "shopper": shopper_model}
    out = {}
    for key, (tower, layer_name, attribute) in _KERAS_WEIGHTS.items():
        if key in _OPTIONAL_WEIGHTS and layer_name not in [layer.name for layer in towers[tower].layers]:
            continue
        layer = towers[tower].get_layer(layer_name)
        holder = layer.cell if hasattr(layer, "cell") else layer
        out[key] = np.array(getattr(holder, attribute).numpy(), dtype=np.float32)
    return out


def _text_vectorizer(keras: Any, cfg: dict[str, Any]) -> Any:
    return keras.layers.TextVectorization(
        max_tokens=int(cfg["vocab_size"]),
        standardize="lower_and_strip_punctuation",
        split="whitespace",
        output_mode="int",
        output_sequence_length=int(cfg["text_len"]),
        name="text_vectorization",
    )


def _vectorize(vectorizer: Any, tf: Any, texts: list[str], length: int) -> np.ndarray:
    if not texts:
        return np.zeros((0, length), dtype=np.int32)
    parts = [vectorizer(tf.constant(texts[i : i + 8192])).numpy() for i in range(0, len(texts), 8192)]
    return np.concatenate(parts).astype(np.int32)


def _build_item_tower(keras: Any, cfg: dict[str, Any], sizes: dict[str, int]) -> Any:
    """The item tower (ids, features, token ids → unit vector); `item_tower` is its numpy forward."""
    layers = keras.layers
    item_id = keras.Input(shape=(), dtype="int32", name="id")
    category = keras.Input(shape=(), dtype="int32", name="category")
    brand = keras.Input(shape=(), dtype="int32", name="brand")
    band = keras.Input(shape=(), dtype="int32", name="band")
    price = keras.Input(shape=(1,), dtype="float32", name="price_z")
    tokens = keras.Input(shape=(int(cfg["text_len"]),), dtype="int32", name="tokens")
    text = layers.GlobalAveragePooling1D(name="text_mean")(
        layers.Embedding(sizes["n_tokens"], int(cfg["text_dim"]), name="token_embedding")(tokens)
    )
    joined = layers.Concatenate(name="item_features")(
        [
            layers.Embedding(sizes["n_ids"], int(cfg["id_dim"]), name="id_embedding")(item_id),
            layers.Embedding(sizes["n_categories"], int(cfg["category_dim"]), name="category_embedding")(category),
            layers.Embedding(sizes["n_brands"], int(cfg["brand_dim"]), name="brand_embedding")(brand),
            layers.Embedding(sizes["n_bands"], int(cfg["band_dim"]), name="band_embedding")(band),
            price,
            text,
        ]
    )
    hidden = layers.Dense(int(cfg["hidden"]), activation="relu", name="item_hidden")(joined)
    item_vector = layers.UnitNormalization(name="item_unit")(layers.Dense(int(cfg["dim"]), name="item_out")(hidden))
    return keras.Model([item_id, category, brand, band, price, tokens], item_vector, name="item_tower")


def _build_towers(keras: Any, cfg: dict[str, Any], sizes: dict[str, int]) -> tuple[Any, Any]:
    """The item tower and the shopper tower (vectors, types → vector per step)."""
    layers = keras.layers
    item_model = _build_item_tower(keras, cfg, sizes)
    vectors = keras.Input(shape=(None, int(cfg["dim"])), dtype="float32", name="vectors")
    types = keras.Input(shape=(None,), dtype="int32", name="types")
    events = layers.Embedding(N_EVENT_TYPE_CODES, int(cfg["event_dim"]), name="event_embedding")(types)
    inputs, parts = [vectors, types], [vectors, events]
    if cfg["next_gap"]:
        gaps = keras.Input(shape=(None,), dtype="int32", name="next_gaps")
        inputs.append(gaps)
        parts.append(layers.Embedding(int(cfg["gap_buckets"]), int(cfg["event_dim"]), name="next_gap_embedding")(gaps))
    steps = layers.GRU(int(cfg["gru_units"]), return_sequences=True, reset_after=True, name="gru")(
        layers.Concatenate(name="sequence_input")(parts)
    )
    shopper_vector = layers.UnitNormalization(name="shopper_unit")(
        layers.Dense(int(cfg["dim"]), name="shopper_out")(steps)
    )
    shopper_model = keras.Model(inputs, shopper_vector, name="shopper_tower")
    return item_model, shopper_model


def _record_model(keras: Any, item_model: Any, shopper_model: Any, vectorizer: Any, cfg: dict[str, Any]) -> Any:
    """Both towers in one Keras model, the item tower reading raw text through TextVectorization: the record."""
    item_id = keras.Input(shape=(), dtype="int32", name="item_id")
    category = keras.Input(shape=(), dtype="int32", name="item_category")
    brand = keras.Input(shape=(), dtype="int32", name="item_brand")
    band = keras.Input(shape=(), dtype="int32", name="item_band")
    price = keras.Input(shape=(1,), dtype="float32", name="item_price_z")
    text = keras.Input(shape=(1,), dtype="string", name="item_text")
    vectors = keras.Input(shape=(None, int(cfg["dim"])), dtype="float32", name="seq_vectors")
    types = keras.Input(shape=(None,), dtype="int32", name="seq_types")
    gaps = keras.Input(shape=(None,), dtype="int32", name="seq_next_gaps")
    item_vector = item_model([item_id, category, brand, band, price, vectorizer(text)])
    shopper_steps = shopper_model([vectors, types, gaps] if cfg["next_gap"] else [vectors, types])
    return keras.Model(
        {
            **({"seq_next_gaps": gaps} if cfg["next_gap"] else {}),
            "item_id": item_id,
            "item_category": category,
            "item_brand": brand,
            "item_band": band,
            "item_price_z": price,
            "item_text": text,
            "seq_vectors": vectors,
            "seq_types": types,
        },
        [item_vector, shopper_steps],
        name="neural_record",
    )


class _LazyAdam:
    """Adam whose embedding tables update only the rows a batch touched (sparse gradients), like LazyAdam.

    Keras 3's Adam densifies embedding gradients and updates all of a 20k x 32 id table plus its two moments on
    every step: that was two thirds of a step's time at 20k products. Dense gradients, and those of tables up to
    LAZY_MIN_ROWS rows (the token table: a batch touches most of it anyway), get plain Adam.
    """

    def __init__(self, tf: Any, variables: list[Any], learning_rate: float) -> None:
        self.tf = tf
        self.variables = [_tf_variable(tf, v) for v in variables]
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.steps = tf.Variable(0.0, trainable=False)
        self.learning_rate = learning_rate
        self.beta_1, self.beta_2, self.epsilon = 0.9, 0.999, 1e-7

    def apply(self, gradients: list[Any]) -> None:
        tf, b1, b2 = self.tf, self.beta_1, self.beta_2
        t = self.steps.assign_add(1.0)
        rate = self.learning_rate * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
        for variable, m, v, gradient in zip(self.variables, self.m, self.v, gradients, strict=True):
            if gradient is None:
                continue
            if isinstance(gradient, tf.IndexedSlices) and variable.shape[0] <= LAZY_MIN_ROWS:
                gradient = tf.math.unsorted_segment_sum(gradient.values, gradient.indices, variable.shape[0])
            if isinstance(gradient, tf.IndexedSlices):
                rows, position = tf.unique(gradient.indices)
                g = tf.math.unsorted_segment_sum(gradient.values, position, tf.size(rows))
                m_rows = b1 * tf.gather(m, rows) + (1.0 - b1) * g
                v_rows = b2 * tf.gather(v, rows) + (1.0 - b2) * tf.square(g)
                m.scatter_update(tf.IndexedSlices(m_rows, rows))
                v.scatter_update(tf.IndexedSlices(v_rows, rows))
                variable.scatter_sub(tf.IndexedSlices(rate * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))
            else:
                m.assign(b1 * m + (1.0 - b1) * gradient)
                v.assign(b2 * v + (1.0 - b2) * tf.square(gradient))
                variable.assign_sub(rate * m / (tf.sqrt(v) + self.epsilon))


def _tf_variable(tf: Any, variable: Any) -> Any:
    """The tf.Variable behind a Keras 3 variable (the TensorFlow backend keeps one in `.value`)."""
    value = variable.value if not isinstance(variable, tf.Variable) else variable
    if not isinstance(value, tf.Variable):
        raise TypeError(f"{variable.path} is not backed by a tf.Variable")
    return value


class _Batch:
    __slots__ = ("logq", "positions", "rows", "types", "weight")

    def __init__(self, **arrays: np.ndarray) -> None:
        for key, value in arrays.items():
            setattr(self, key, value)


class _Windows:
    """Training windows over the train events: start event, length, first scored step; plus per-event targets."""

    def __init__(self, train: Interactions, seq_len: int) -> None:
        self.seq_len = seq_len
        self.item = train.item.astype(np.int32)
        self.event_type = np.clip(train.event_type, 0, N_EVENT_TYPE_CODES - 1).astype(np.int32)
        n = train.n_events
        ptr = train.indptr()
        shopper = train.shopper.astype(np.int64)
        # An event is a target when it has a predecessor and its item is not among the previous seq_len events.
        is_target = np.zeros(n, dtype=bool)
        is_target[1:] = shopper[1:] == shopper[:-1]
        for lag in range(1, seq_len + 1):
            if lag >= n:
                break
            repeat = (shopper[lag:] == shopper[:-lag]) & (self.item[lag:] == self.item[:-lag])
            is_target[lag:] &= ~repeat
        self.is_target = is_target
        weight = np.log1p(np.maximum(train.weight, 0)).astype(np.float64)
        mean = weight[is_target].mean() if is_target.any() else 1.0
        self.target_weight = (weight / (mean or 1.0)).astype(np.float32)
        counts = np.bincount(self.item[is_target], minlength=train.n_items).astype(np.float64)
        self.logq = np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0)).astype(np.float32)

        stride = max(seq_len // 2, 1)
        starts, lengths, first = [], [], []
        for s in range(train.n_shoppers):
            a, b = int(ptr[s]), int(ptr[s + 1])
            n_targets = b - a - 1
            if n_targets <= 0:
                continue
            k = 0
            while True:
                start = a + k * stride
                length = min(seq_len, b - 1 - start)
                starts.append(start)
                lengths.append(length)
                first.append(0 if k == 0 else seq_len - stride)
                if start + length >= b - 1:
                    break
                k += 1
        self.start = np.array(starts, dtype=np.int64)
        self.length = np.array(lengths, dtype=np.int64)
        self.first = np.array(first, dtype=np.int64)
        steps = np.arange(seq_len)
        if self.start.size:
            index = self.start[:, None] + 1 + steps[None, :]
            valid = (steps[None, :] < self.length[:, None]) & (steps[None, :] >= self.first[:, None])
            self.active = valid & is_target[np.where(valid, index, 0)]
        else:
            self.active = np.zeros((0, seq_len), dtype=bool)
        keep = self.active.any(axis=1)
        self.start, self.length, self.first, self.active = (
            self.start[keep],
            self.length[keep],
            self.first[keep],
            self.active[keep],
        )

    @property
    def n_windows(self) -> int:
        return int(self.start.size)

    def epoch_batches(self, rng: np.random.Generator, batch_positions: int, min_steps: int) -> list[_Batch]:
        """Shuffled batches of windows of similar length (<= batch_positions steps each, padded to the longest).

        Windows are shuffled, then sorted by length (so little padding) and cut into batches; the data repeats
        until there are `min_steps` batches, so a tiny shop still trains for a useful number of steps.
        """
        batches: list[_Batch] = []
        while self.n_windows:
            order = rng.permutation(self.n_windows)
            order = order[np.argsort(self.length[order], kind="stable")]
            plan, start = [], 0
            while start < order.size:
                # Sorted ascending, so the batch's longest window is its last: take windows while they fit.
                stop = start + 1
                while stop < order.size and (stop - start + 1) * self.length[order[stop]] <= batch_positions:
                    stop += 1
                plan.append(order[start:stop])
                start = stop
            for j in rng.permutation(len(plan)).tolist():
                batches.append(self._batch(plan[j]))
            if len(batches) >= min_steps:
                break
        return batches

    def _batch(self, windows: np.ndarray) -> _Batch:
        """Windows padded to the longest: their events plus the next one (rows = catalog index + 1), scored steps.

        Steps past a window's own length hold whatever events follow it: the GRU is causal, so they never reach
        a scored step.
        """
        length = int(self.length[windows].max())
        index = np.minimum(self.start[windows][:, None] + np.arange(length + 1)[None, :], self.item.size - 1)
        flat = np.flatnonzero(self.active[windows][:, :length].ravel())
        target_events = index[:, 1:].ravel()[flat]
        return _Batch(
            rows=(self.item[index] + 1).astype(np.int32),
            types=self.event_type[index[:, :-1]],
            positions=flat.astype(np.int32),
            weight=self.target_weight[target_events],
            logq=self.logq[self.item[target_events]],
        )
