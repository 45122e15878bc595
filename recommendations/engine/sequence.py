"""The sequence model: a small causal transformer (SASRec-style) over each shopper's last events; numpy serves it.

Each of a shopper's last `seq_len` events is the item's vector from the two-tower model's item tower (id, category,
brand, price band, price, text tokens: see engine.neural), scaled by √dim so it outweighs the rest at the start,
plus an event-type embedding, an embedding of the log2 bucket of the time since the shopper's previous event, and a
position embedding; with `next_gap`, also an embedding of the bucket of the time to what the step predicts: the next
event's gap in training, and for the newest event the time from it to the moment asked (its age). A "what next"
asked minutes after a view is the rest of a session; asked a week later it is a return visit, which follows the
shopper's taste more than their last product. `blocks` pre-norm transformer blocks (causal multi-head self-
attention, then a ReLU feed-forward, each with a residual) and a final layer norm and projection give a unit vector
after every event; the score of an item is its dot product with the item tower's vector of that item, over a
temperature. The item embeddings are TIED to the item tower, so a product with no events still has a vector from its
features and is scored like the products it resembles.

Training is next-item: every event (except a shopper's first, and repeats of items in the window) is a target for
the state after the events before it, against the other targets of the batch (in-batch softmax with logQ
correction, exactly as engine.neural trains its GRU); early stopping on validation NDCG@10 under `max_seconds`.

It shares the two-tower model's class for everything but the shopper side: catalog preparation, `save` (model.keras,
serving.npz, vocabulary.json) and `load` (new products embedded from their features, numpy only). TensorFlow is
imported only in `fit` and `verify_keras`; `verify_keras` checks the saved Keras model (safe_mode) against this
module's numpy forward.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from recommendations.engine import neural
from recommendations.engine.base import (
    N_EVENT_TYPE_CODES,
    EvalSet,
    Interactions,
    ItemFeatures,
    ProgressCallback,
    Recommender,
)

PROGRESS_STAGE = "train sequence"
LAYER_NORM_EPSILON = 1e-5

DEFAULTS: dict[str, Any] = {
    **{key: neural.DEFAULTS[key] for key in ("id_dim", "category_dim", "brand_dim", "band_dim", "text_dim")},
    **{key: neural.DEFAULTS[key] for key in ("text_len", "vocab_size", "id_dropout", "min_steps_per_epoch")},
    "dim": 64,  # item vectors, attention width, shopper vectors
    "hidden": 128,  # item tower hidden layer
    "heads": 2,
    "blocks": 2,
    "ffn": 128,  # feed-forward width inside a block
    "gap_buckets": 16,  # 0 pads, 1 = first event, 2.. = log2(1 + 4 x hours since the previous event), capped
    "seq_len": 20,
    # Each step also reads the time to what it predicts (the next event; for the newest, the moment asked). Measured
    # better on MovieLens' global split and the medium shop's (docs/benchmarks.md); off by default until the new
    # products' path is as steady with it (tests/engine/test_sequence.py's new-product test fails on its seed).
    "next_gap": False,
    "dropout": 0.2,
    "temperature": 0.05,
    "learning_rate": 0.002,
    "batch_positions": 2048,
    "epochs": 30,
    "patience": 3,
    "max_seconds": 60.0,  # as the two-tower model's: a 1M-event retrain has two minutes for all its candidates
    "seed": 0,
}


# ---- numpy forward ----------------------------------------------------------------------------------------------


def last_window(history: Interactions, seq_len: int, buckets: int) -> tuple[np.ndarray, ...]:
    """(items, event types, gap codes, lengths) of each shopper's last `seq_len` events, oldest first, right-padded
    (-1 / 0 / 0)."""
    items, types, lengths = neural.last_events(history, seq_len)
    return items, types, neural.window_gaps(history, lengths, seq_len, buckets), lengths


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = np.square(x - mean).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + LAYER_NORM_EPSILON) * gamma + beta).astype(np.float32)


def _attention(w: dict[str, np.ndarray], prefix: str, x: np.ndarray) -> np.ndarray:
    """Keras MultiHeadAttention(x, x, use_causal_mask=True) in numpy: per-head softmax(q kᵀ / √d) v, then out."""
    q = np.einsum("btd,dhk->bthk", x, w[f"{prefix}.query.kernel"]) + w[f"{prefix}.query.bias"]
    k = np.einsum("btd,dhk->bthk", x, w[f"{prefix}.key.kernel"]) + w[f"{prefix}.key.bias"]
    v = np.einsum("btd,dhk->bthk", x, w[f"{prefix}.value.kernel"]) + w[f"{prefix}.value.bias"]
    logits = np.einsum("bqhk,bshk->bhqs", q / np.float32(math.sqrt(q.shape[-1])), k)
    steps = x.shape[1]
    causal = np.tril(np.ones((steps, steps), dtype=bool))
    logits = np.where(causal, logits, np.float32(-1e9))
    logits = logits - logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=-1, keepdims=True)
    context = np.einsum("bhqs,bshk->bqhk", weights, v)
    out = np.einsum("bqhk,hkd->bqd", context, w[f"{prefix}.attention_output.kernel"])
    return (out + w[f"{prefix}.attention_output.bias"]).astype(np.float32)


def encode(
    w: dict[str, np.ndarray],
    blocks: int,
    vectors: np.ndarray,
    types: np.ndarray,
    gaps: np.ndarray,
    next_gaps: np.ndarray | None = None,
) -> np.ndarray:
    """The transformer in numpy: the unit shopper vector after every step (shoppers x steps x dim).

    `next_gaps` (a model trained with `next_gap`) are the gap codes from each step to what it is asked about.
    """
    steps = types.shape[1]
    x = (
        vectors.astype(np.float32) * np.float32(math.sqrt(vectors.shape[-1]))
        + w["event_embedding.embeddings"][types]
        + w["gap_embedding.embeddings"][gaps]
        + w["position_embedding.embeddings"][np.arange(steps)][None]
    )
    if "next_gap_embedding.embeddings" in w:
        if next_gaps is None:
            raise ValueError("this model reads the gap to the next event: pass next_gaps")
        x = x + w["next_gap_embedding.embeddings"][next_gaps]
    for b in range(blocks):
        norm = _layer_norm(x, w[f"block{b}_attention_norm.gamma"], w[f"block{b}_attention_norm.beta"])
        x = x + _attention(w, f"block{b}_attention", norm)
        norm = _layer_norm(x, w[f"block{b}_ffn_norm.gamma"], w[f"block{b}_ffn_norm.beta"])
        inner = np.maximum(norm @ w[f"block{b}_ffn_in.kernel"] + w[f"block{b}_ffn_in.bias"], 0.0)
        x = x + inner @ w[f"block{b}_ffn_out.kernel"] + w[f"block{b}_ffn_out.bias"]
    x = _layer_norm(x, w["final_norm.gamma"], w["final_norm.beta"])
    return neural._l2_normalize(x @ w["shopper_out.kernel"] + w["shopper_out.bias"])


# ---- the recommender ------------------------------------------------------------------------------------------------


class SequenceRecommender(neural.NeuralRecommender):
    """Causal transformer over the last events with the two-tower item tower (see the module docstring)."""

    name = "sequence"
    progress_stage = PROGRESS_STAGE
    defaults = DEFAULTS

    def shopper_vectors(self, history: Interactions) -> np.ndarray:
        weights, item_vectors = self._require_fit()
        cfg = self.config
        items, types, gaps, lengths = last_window(history, int(cfg["seq_len"]), int(cfg["gap_buckets"]))
        steps = max(int(lengths.max(initial=0)), 1)
        items, types, gaps = items[:, :steps], types[:, :steps], gaps[:, :steps]
        vectors = np.where((items >= 0)[:, :, None], item_vectors[np.maximum(items, 0)], 0.0).astype(np.float32)
        asked = neural.next_gap_codes(history, gaps, lengths, int(cfg["gap_buckets"])) if cfg["next_gap"] else None
        states = encode(weights, int(cfg["blocks"]), vectors, types, gaps, asked)
        # A shopper with no events reads the state after one padding step: finite, the same for all of them.
        return states[np.arange(states.shape[0]), np.maximum(lengths - 1, 0)]

    @staticmethod
    def reads_next_gap(w: dict[str, np.ndarray]) -> bool:
        return "next_gap_embedding.embeddings" in w

    def fit(
        self,
        train: Interactions,
        features: ItemFeatures,
        validation: EvalSet | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Train the item tower and the transformer together; returns epochs_run, best_epoch, seconds, val_ndcg..."""
        started = time.perf_counter()
        keras, tf, rng = self._start_fit(train, features)
        cfg = self.config
        seq_len, buckets = int(cfg["seq_len"]), int(cfg["gap_buckets"])
        vectorizer, texts, catalog, sizes, ids_for_serving = self._prepare_catalog(keras, tf, train, features)
        item_model = neural._build_item_tower(keras, cfg, sizes)
        encoder = _build_encoder(keras, cfg)
        variables = item_model.trainable_variables + encoder.trainable_variables
        optimizer = neural._LazyAdam(tf, variables, float(cfg["learning_rate"]))
        tables = neural.padded_tables(tf, catalog)
        temperature = float(cfg["temperature"])
        next_gap = bool(cfg["next_gap"])

        int_matrix = tf.TensorSpec([None, None], tf.int32)
        int_vector = tf.TensorSpec([None], tf.int32)
        float_vector = tf.TensorSpec([None], tf.float32)

        @tf.function(input_signature=[int_matrix, int_matrix, int_matrix, int_vector, float_vector, float_vector])
        def train_step(rows, ids, codes, positions, weight, logq):
            # rows / ids: a window's events and the one after (B x steps+1); step p predicts event p+1. `codes`
            # packs event type, gap bucket and the next event's gap bucket ((type x buckets + gap) x buckets +
            # next gap) so the shared windows carry all three.
            shape = tf.shape(rows)
            flat_rows = tf.reshape(rows, [-1])
            steps = tf.broadcast_to(tf.range(shape[1] - 1)[None, :], tf.shape(codes))
            with tf.GradientTape() as tape:
                vectors = neural.item_vectors_tf(tf, item_model, tables, flat_rows, tf.reshape(ids, [-1]))
                dim = tf.shape(vectors)[1]
                vectors = tf.reshape(vectors, tf.stack([shape[0], shape[1], dim]))
                known = codes // buckets
                inputs = [vectors[:, :-1], known // buckets, known % buckets, steps]
                states = encoder([*inputs, codes % buckets] if next_gap else inputs, training=True)
                loss = neural.in_batch_loss(tf, rows, positions, states, vectors, weight, logq, temperature)
            optimizer.apply(tape.gradient(loss, variables))
            return loss

        def take_weights() -> None:
            self.weights = _numpy_weights(item_model, encoder)
            self.item_vectors = neural.catalog_vectors(self.weights, catalog, ids_for_serving)

        windows = neural._Windows(train, seq_len)
        codes = neural.gap_codes(train, buckets)
        # The exact gap to the next event, not a moment drawn inside it as the two-tower model trains: here every
        # step's gap also reaches the later steps through attention, and the drawn moments measured worse
        # (MovieLens global validation 0.102 against 0.151; docs/benchmarks.md).
        asked = neural.following_gaps(train, buckets)
        windows.event_type = (windows.event_type * buckets + codes) * buckets + asked
        stats = self._train_epochs(windows, train_step, take_weights, variables, validation, on_progress, rng, started)
        record = _record_model(keras, item_model, encoder, vectorizer, cfg)
        return self._finish_fit(features, catalog, ids_for_serving, texts, record, stats, started)


# ---- Keras ----------------------------------------------------------------------------------------------------------


def _build_encoder(keras: Any, cfg: dict[str, Any]) -> Any:
    """(item vectors, event types, gap codes, positions) → unit shopper vector after every step; `encode` in Keras."""
    layers = keras.layers
    dim, heads, rate = int(cfg["dim"]), int(cfg["heads"]), float(cfg["dropout"])
    vectors = keras.Input(shape=(None, dim), dtype="float32", name="vectors")
    types = keras.Input(shape=(None,), dtype="int32", name="types")
    gaps = keras.Input(shape=(None,), dtype="int32", name="gaps")
    positions = keras.Input(shape=(None,), dtype="int32", name="positions")
    next_gaps = keras.Input(shape=(None,), dtype="int32", name="next_gaps")
    inputs = [vectors, types, gaps, positions]
    parts = [
        layers.Rescaling(math.sqrt(dim), name="item_scale")(vectors),
        layers.Embedding(N_EVENT_TYPE_CODES, dim, name="event_embedding")(types),
        layers.Embedding(int(cfg["gap_buckets"]), dim, name="gap_embedding")(gaps),
        layers.Embedding(int(cfg["seq_len"]), dim, name="position_embedding")(positions),
    ]
    if cfg["next_gap"]:
        inputs.append(next_gaps)
        parts.append(layers.Embedding(int(cfg["gap_buckets"]), dim, name="next_gap_embedding")(next_gaps))
    x = layers.Add(name="sequence_input")(parts)
    x = layers.Dropout(rate, name="input_dropout")(x)
    for b in range(int(cfg["blocks"])):
        norm = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=f"block{b}_attention_norm")(x)
        attended = layers.MultiHeadAttention(heads, dim // heads, name=f"block{b}_attention")(
            norm, norm, use_causal_mask=True
        )
        x = layers.Add(name=f"block{b}_attention_residual")([x, layers.Dropout(rate)(attended)])
        norm = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=f"block{b}_ffn_norm")(x)
        inner = layers.Dense(int(cfg["ffn"]), activation="relu", name=f"block{b}_ffn_in")(norm)
        inner = layers.Dense(dim, name=f"block{b}_ffn_out")(inner)
        x = layers.Add(name=f"block{b}_ffn_residual")([x, layers.Dropout(rate)(inner)])
    x = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="final_norm")(x)
    out = layers.UnitNormalization(name="shopper_unit")(layers.Dense(dim, name="shopper_out")(x))
    return keras.Model(inputs, out, name="sequence_encoder")


def _record_model(keras: Any, item_model: Any, encoder: Any, vectorizer: Any, cfg: dict[str, Any]) -> Any:
    """The item tower (raw text through TextVectorization) and the encoder in one Keras model: the record."""
    item_inputs = {
        "item_id": keras.Input(shape=(), dtype="int32", name="item_id"),
        "item_category": keras.Input(shape=(), dtype="int32", name="item_category"),
        "item_brand": keras.Input(shape=(), dtype="int32", name="item_brand"),
        "item_band": keras.Input(shape=(), dtype="int32", name="item_band"),
        "item_price_z": keras.Input(shape=(1,), dtype="float32", name="item_price_z"),
        "item_text": keras.Input(shape=(1,), dtype="string", name="item_text"),
    }
    sequence_inputs = {
        "seq_vectors": keras.Input(shape=(None, int(cfg["dim"])), dtype="float32", name="seq_vectors"),
        "seq_types": keras.Input(shape=(None,), dtype="int32", name="seq_types"),
        "seq_gaps": keras.Input(shape=(None,), dtype="int32", name="seq_gaps"),
        "seq_positions": keras.Input(shape=(None,), dtype="int32", name="seq_positions"),
    }
    if cfg["next_gap"]:
        sequence_inputs["seq_next_gaps"] = keras.Input(shape=(None,), dtype="int32", name="seq_next_gaps")
    i = item_inputs
    item_vector = item_model(
        [
            i["item_id"],
            i["item_category"],
            i["item_brand"],
            i["item_band"],
            i["item_price_z"],
            vectorizer(i["item_text"]),
        ]
    )
    states = encoder(list(sequence_inputs.values()))
    return keras.Model({**item_inputs, **sequence_inputs}, [item_vector, states], name="sequence_record")


def _numpy_weights(item_model: Any, encoder: Any) -> dict[str, np.ndarray]:
    """Item tower weights under engine.neural's names; encoder weights as "layer.sublayer.variable"."""
    out = {
        key: np.array(getattr(item_model.get_layer(layer), attribute).numpy(), dtype=np.float32)
        for key, (tower, layer, attribute) in neural._KERAS_WEIGHTS.items()
        if tower == "item"
    }
    for layer in encoder.layers:
        for variable in layer.weights:
            suffix = variable.path.split(f"{layer.name}/", 1)[-1]
            out[f"{layer.name}.{suffix.replace('/', '.')}"] = np.array(variable.numpy(), dtype=np.float32)
    return out


# ---- verification ---------------------------------------------------------------------------------------------------


def verify_keras(directory: Path) -> None:
    """Refuse a sequence artefact whose Keras model and numpy serving weights disagree (or either is unreadable).

    Loads model.keras with safe_mode=True and compares, at engine.neural's tolerance: every weight with its
    serving.npz copy, the item tower as engine.neural checks it, and the Keras encoder against `encode` at every
    step of probe sequences of mixed event types, gaps and lengths (a shorter sequence is a prefix: causal).
    """
    directory = Path(directory)
    neural._quiet_tensorflow()
    import keras

    try:
        record = keras.saving.load_model(directory / neural.KERAS_FILE, safe_mode=True, compile=False)
        serving = neural._read_serving(directory)
        vocabulary = json.loads((directory / neural.VOCABULARY_FILE).read_text())
        config = {**DEFAULTS, **Recommender._read_params(directory)["params"]}
        item_model = record.get_layer("item_tower")
        encoder = record.get_layer("sequence_encoder")
    except Exception as exc:  # a truncated zip, a missing file, a foreign model: all mean "refuse"
        raise ValueError(f"sequence artefact unreadable: {type(exc).__name__}: {exc}") from exc
    w = {key[2:]: value for key, value in serving.items() if key.startswith("w_")}
    config["next_gap"] = SequenceRecommender.reads_next_gap(w)
    neural.compare_weights(_numpy_weights(item_model, encoder), w)
    dim, seq_len = int(config["dim"]), int(config["seq_len"])
    one = np.zeros((1, 1), np.int32)
    sequence = {"seq_vectors": np.zeros((1, 1, dim), np.float32), "seq_types": one, "seq_gaps": one}
    if config["next_gap"]:
        sequence["seq_next_gaps"] = one
    numpy_items = neural.verify_item_tower(
        record, serving, vocabulary, int(config["text_len"]), {**sequence, "seq_positions": one}
    )

    count = max(numpy_items.shape[0], 4)
    rng = np.random.default_rng(0)
    vectors = numpy_items[rng.integers(0, numpy_items.shape[0], size=(count, seq_len))].astype(np.float32)
    types = rng.integers(1, N_EVENT_TYPE_CODES, size=(count, seq_len)).astype(np.int32)
    gaps = rng.integers(1, int(config["gap_buckets"]), size=(count, seq_len)).astype(np.int32)
    positions = np.broadcast_to(np.arange(seq_len, dtype=np.int32), (count, seq_len))
    inputs = [vectors, types, gaps, positions]
    asked = None
    if config["next_gap"]:
        asked = rng.integers(0, int(config["gap_buckets"]), size=(count, seq_len)).astype(np.int32)
        inputs.append(asked)
    keras_states = encoder.predict(inputs, verbose=0)
    numpy_states = encode(w, int(config["blocks"]), vectors, types, gaps, asked)
    neural._compare("sequence encoder", keras_states, numpy_states)
