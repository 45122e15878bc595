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

from recommendations.engine import neural, sequence
from recommendations.engine.base import EVENT_TYPE_CODES, Interactions
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
    asked = neural.next_gap_codes(history, gaps, lengths, cfg["gap_buckets"])
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
            **({"seq_next_gaps": tf.constant(asked)} if cfg["next_gap"] else {}),
        }
    )
    np.testing.assert_allclose(item_vectors.numpy(), model.item_vectors[pick], atol=1e-5)
    keras_last = states.numpy()[np.arange(rows), np.maximum(lengths - 1, 0)]
    np.testing.assert_allclose(model.shopper_vectors(history), keras_last, atol=1e-5)
    # Causal: what a step sees never depends on later events (serving cuts sequences at their own length).
    np.testing.assert_allclose(
        sequence.encode(model.weights, cfg["blocks"], vectors[:, :3], types[:, :3], gaps[:, :3], asked[:, :3]),
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


def _sessions_shop(n_shoppers: int = 400, seed: int = 1) -> tuple:
    """Shoppers in sessions: inside one (minutes apart) the next item is the series successor of the last; a new
    session (days later) starts at a random product of the shopper's main category most of the time."""
    _, features = make_shop(n_shoppers=10, n_items=120, seed=0)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(features.category == c) for c in range(1, features.n_categories + 1)]
    rows: list[tuple[int, int, float]] = []
    for s in range(n_shoppers):
        main = int(rng.integers(len(members)))
        t = 0.0
        for _ in range(int(rng.integers(4, 8))):
            t += float(rng.uniform(2.0, 10.0))
            pool = members[main if rng.random() < 0.7 else int(rng.integers(len(members)))]
            position = int(rng.integers(pool.size))
            for _ in range(int(rng.integers(3, 6))):
                rows.append((s, int(pool[position % pool.size]), t))
                position += 1
                t += float(rng.uniform(5.0, 30.0)) / 1440.0
    shopper, item, when = (np.array(column) for column in zip(*rows, strict=True))
    interactions = Interactions(
        n_shoppers=n_shoppers,
        n_items=features.n_items,
        shopper=shopper.astype(np.int32),
        item=item.astype(np.int32),
        event_type=np.full(item.size, EVENT_TYPE_CODES["view"], dtype=np.int8),
        weight=np.ones(item.size, dtype=np.float32),
        age_days=(when.max() - when).astype(np.float32),
    )
    return interactions, features, members


@pytest.fixture(scope="module")
def sessions():
    """The sessions shop and two models of it: one reads the gap to the moment asked (`next_gap`), one does not."""
    interactions, features, members = _sessions_shop()
    split = temporal_split(interactions, features, 0.1, 0.1, mode="per_shopper")
    model = SequenceRecommender(**{**SMALL, "next_gap": True})
    model.fit(split.train, features, split.validation)
    plain = SequenceRecommender(**SMALL)
    plain.fit(split.train, features, split.validation)
    return features, members, split, model, plain


def test_a_model_that_reads_the_next_gap_serves_from_numpy_as_keras_computes_it(sessions, tmp_path):
    features, _, split, model, _ = sessions
    model.save(tmp_path)
    verify_keras(tmp_path)  # every step of random probes, random gaps to the moment asked included
    loaded = SequenceRecommender.load(tmp_path, features)
    np.testing.assert_array_equal(loaded.score(split.test.history), model.score(split.test.history))
    with np.load(tmp_path / "serving.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["w_next_gap_embedding.embeddings"] = arrays["w_next_gap_embedding.embeddings"] + np.float32(0.01)
    np.savez(tmp_path / "serving.npz", **arrays)
    with pytest.raises(ValueError, match="differ"):
        verify_keras(tmp_path)


def test_only_a_model_that_reads_the_next_gap_answers_by_the_time_since_the_last_event(sessions):
    features, members, _, model, plain = sessions
    # Two sessions in one category days apart, then one in another, its last view 8 minutes before the moment.
    items = [*members[0][:3], *members[0][5:8], *members[1][:3]]
    ages = np.array([20, 19.99, 19.98, 10, 9.99, 9.98, 0.0112, 0.0084, 0.0056], dtype=np.float32)
    history = history_of(items, features.n_items)
    history.age_days[:] = ages
    soon = model.score(history), plain.score(history)
    history.age_days[:] = ages + 5.0  # the same events, asked about five days later
    later = model.score(history), plain.score(history)
    assert np.abs(later[0] - soon[0]).max() > 1e-3  # the gap to the moment asked is read
    np.testing.assert_array_equal(later[1], soon[1])  # without it, the same events give the same list


def test_training_asks_across_a_moment_inside_the_gap_to_the_next_event():
    history = history_of([1, 2, 3, 4], 10)
    history.age_days[:] = [30.0, 20.0, 20.0 - 1 / 48, 0.0]  # ten days, then 30 minutes, then twenty days
    exact = neural.following_gaps(history, 16)
    np.testing.assert_array_equal(exact, [*neural.gap_bucket(np.array([240.0, 0.5, 479.5]), 16), 0])
    draws = np.array([neural.following_gaps(history, 16, np.random.default_rng(seed)) for seed in range(200)])
    assert (draws <= exact).all() and (draws[:, 3] == 0).all()  # never past the next event; the newest asks nothing
    assert len(np.unique(draws[:, 0])) >= 5  # moments all through the ten days: elapsed days, hours, minutes
    assert (draws[:, 0] == exact[0]).mean() > 0.3  # a uniform moment is mostly in the gap's last log2 bucket


def test_next_gap_codes_are_the_following_gaps_and_the_age_of_the_newest_event():
    history = history_of([3, 4, 5], 10)
    history.age_days[:] = [5.0, 5.0 - 1 / 24, 4.0]  # an hour, then 23 hours; the newest 4 days before the moment
    _items, _types, gaps, lengths = sequence.last_window(history, 5, 16)
    asked = neural.next_gap_codes(history, gaps, lengths, 16)
    hours = np.array([1.0, 23.0, 96.0])
    np.testing.assert_array_equal(asked[0, :3], neural.gap_bucket(hours, 16))
    np.testing.assert_array_equal(asked[0, :2], gaps[0, 1:3])
    assert asked[0, 2] != asked[0, 1] and (asked[0, 3:] == 0).all()
