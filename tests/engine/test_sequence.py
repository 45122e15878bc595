"""The sequence model (causal transformer): it learns the synthetic shop's "next in the series" pattern, serves from
numpy exactly as Keras computes it, round-trips through an artefact under its hash, scores new products from their
features, and stops at its time budget."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recommendations.engine import sequence
from recommendations.engine.baselines import Popularity
from recommendations.engine.metrics import evaluate
from recommendations.engine.sequence import SequenceRecommender, verify_keras
from recommendations.engine.split import temporal_split
from recommendations.training import artefacts
from tests.engine.synthetic import make_shop
from tests.engine.test_neural import history_of, new_product, with_new_products

ROOT = Path(__file__).resolve().parents[2]
# Small enough to fit in a few seconds on two busy cores, big enough to learn the planted patterns.
SMALL = {"dim": 32, "hidden": 64, "ffn": 64, "seq_len": 12, "epochs": 5, "patience": 5, "max_seconds": 120.0}


@pytest.fixture(scope="module")
def shop():
    interactions, features = make_shop(n_shoppers=300, n_items=120, seed=0)
    return interactions, features, temporal_split(interactions, features, 0.1, 0.1)


@pytest.fixture(scope="module")
def fitted(shop):
    _, features, split = shop
    progress = []
    model = SequenceRecommender(**SMALL)
    stats = model.fit(split.train, features, split.validation, on_progress=lambda *a: progress.append(a))
    return model, stats, progress


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    directory = tmp_path_factory.mktemp("sequence")
    fitted[0].save(directory)
    return directory


def test_it_learns_the_planted_sequence_better_than_popularity(shop, fitted):
    _, features, split = shop
    model, stats, progress = fitted
    assert progress[-1] == ("train sequence", stats["epochs_run"], model.config["epochs"])
    assert stats["val_ndcg"][stats["best_epoch"] - 1] == max(stats["val_ndcg"])
    popularity = Popularity()
    popularity.fit(split.train, features)
    ours, theirs = evaluate(model, split.test)["ndcg"], evaluate(popularity, split.test)["ndcg"]
    assert ours > 2 * theirs, (ours, theirs)
    # The order itself: after items j-2, j-1, j of one category, the next in the series (j+1) ranks near the top;
    # the same three items in another order (ending at j-1, whose successor j is already seen) rank it lower.
    hits, reordered_hits, tries = 0, 0, 0
    for code in range(1, features.n_categories + 1):
        members = np.flatnonzero(features.category == code)
        for start in range(0, members.size - 4, 3):
            run = members[start : start + 3].tolist()
            following = int(members[start + 3])
            for history, counter in ((run, "hits"), ([run[2], run[0], run[1]], "reordered")):
                scores = model.score(history_of(history, features.n_items))[0]
                scores[history] = -np.inf
                top = following in np.argsort(-scores)[:5]
                hits, reordered_hits = (
                    (hits + top, reordered_hits) if counter == "hits" else (hits, reordered_hits + top)
                )
            tries += 1
    assert hits >= 0.6 * tries and hits >= reordered_hits + 0.2 * tries, (hits, reordered_hits, tries)


def test_numpy_forward_equals_the_keras_forward(shop, fitted):
    import tensorflow as tf

    _, features, split = shop
    model = fitted[0]
    catalog, history, n = model._train_catalog, split.validation.history, features.n_items
    cfg = model.config
    items, types, gaps, lengths = sequence.last_window(history, cfg["seq_len"], cfg["gap_buckets"])
    assert gaps[lengths > 0, 0].min() >= 1 and (gaps[:, 1:] > 1).any()  # real gap buckets, not only "first event"
    vectors = np.where((items >= 0)[:, :, None], model.item_vectors[np.maximum(items, 0)], 0.0).astype(np.float32)
    rows = history.n_shoppers
    pick = np.arange(rows) % n  # one catalog row per sequence row: the record takes both in one batch
    item_vectors, states = model._keras_record(
        {
            "item_id": tf.constant(catalog["ids"][pick]),
            "item_category": tf.constant(catalog["category"][pick]),
            "item_brand": tf.constant(catalog["brand"][pick]),
            "item_band": tf.constant(catalog["band"][pick]),
            "item_price_z": tf.constant(catalog["price_z"][pick, None]),
            "item_text": tf.constant([[features.text[i]] for i in pick]),
            "seq_vectors": tf.constant(vectors),
            "seq_types": tf.constant(types),
            "seq_gaps": tf.constant(gaps),
            "seq_positions": tf.constant(np.broadcast_to(np.arange(items.shape[1], dtype=np.int32), items.shape)),
        }
    )
    np.testing.assert_allclose(item_vectors.numpy(), model.item_vectors[pick], atol=1e-5)
    keras_last = states.numpy()[np.arange(rows), np.maximum(lengths - 1, 0)]
    np.testing.assert_allclose(model.shopper_vectors(history), keras_last, atol=1e-5)
    # Causal: what a step sees never depends on later events (serving cuts sequences at their own length).
    np.testing.assert_allclose(
        sequence.encode(model.weights, cfg["blocks"], vectors[:, :3], types[:, :3], gaps[:, :3]),
        states.numpy()[:, :3],
        atol=1e-5,
    )


def test_an_artefact_round_trips_under_its_hash_and_its_keras_file_is_verified(shop, fitted):
    _, features, split = shop
    model = fitted[0]
    path, sha = artefacts.write_artefact(model, "run-sequence")
    assert sorted(p.name for p in path.iterdir()) == ["model.keras", "params.json", "serving.npz", "vocabulary.json"]
    artefacts.verify_artefact(path, sha, features)
    loaded = artefacts.load_recommender(path, sha, features)
    assert isinstance(loaded, SequenceRecommender)
    np.testing.assert_array_equal(loaded.score(split.test.history), model.score(split.test.history))
    (path / "params.json").write_text((path / "params.json").read_text().replace('"ffn": 64', '"ffn": 32'))
    with pytest.raises(artefacts.ArtefactError, match="hash"):
        artefacts.load_recommender(path, sha, features)


def test_verify_keras_refuses_a_tampered_encoder_weight(saved, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(saved, tampered)
    with np.load(tampered / "serving.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    key = "w_block1_attention.value.kernel"
    arrays[key] = arrays[key].copy()
    arrays[key][0, 0, 0] += 0.01
    np.savez(tampered / "serving.npz", **arrays)
    with pytest.raises(ValueError, match="differ"):
        verify_keras(tampered)


def test_a_new_product_with_features_only_reaches_the_top_10_of_a_shopper_whose_taste_matches(shop, saved):
    _, features, _ = shop
    codes = list(range(1, features.n_categories + 1))
    newer = with_new_products(features, [new_product(f"new-{c}", c) for c in codes])
    loaded = SequenceRecommender.load(saved, newer)
    for code in codes:
        run = np.flatnonzero(features.category == code)[:6].tolist()
        scores = loaded.score(history_of(run, newer.n_items))[0]
        match = scores[features.n_items + code - 1]
        assert np.isfinite(match) and match != 0.0
        scores[run] = -np.inf
        assert features.n_items + code - 1 in np.argsort(-scores)[:10], code
        assert int(np.argmax(scores[features.n_items :])) == code - 1, code


def test_the_time_budget_stops_training(shop):
    _, features, split = shop
    hurried = SequenceRecommender(**{**SMALL, "max_seconds": 0.0})
    stats = hurried.fit(split.train, features, split.validation)
    assert stats["epochs_run"] == 1 and stats["stopped"] == "max_seconds" and stats["steps"] == [1]
    assert np.isfinite(hurried.score(split.validation.history)).all()


def test_unknown_parameters_are_refused_and_importing_does_not_import_tensorflow():
    with pytest.raises(ValueError, match="unknown sequence parameters"):
        SequenceRecommender(gru_units=3)
    script = (
        "import sys; import recommendations.engine.sequence as s; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
