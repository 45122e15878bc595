"""The Keras two-tower model: it learns the synthetic shop, serves from numpy exactly as Keras computes it,
scores products added after training from their features, and refuses an artefact whose parts disagree."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recommendations.engine import neural
from recommendations.engine.base import EVENT_TYPE_CODES, Interactions, ItemFeatures
from recommendations.engine.baselines import Popularity
from recommendations.engine.metrics import evaluate
from recommendations.engine.neural import NeuralRecommender, verify_keras
from recommendations.engine.split import temporal_split
from tests.engine.synthetic import WORDS, make_shop

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shop():
    interactions, features = make_shop(n_shoppers=300, n_items=120, seed=0)
    return interactions, features, temporal_split(interactions, features, 0.1, 0.1)


@pytest.fixture(scope="module")
def fitted(shop):
    _, features, split = shop
    progress = []
    model = NeuralRecommender(seed=0, members=1)  # one model: its epochs, Keras record and artefact files
    stats = model.fit(split.train, features, split.validation, on_progress=lambda *a: progress.append(a))
    return model, stats, progress


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    directory = tmp_path_factory.mktemp("neural")
    fitted[0].save(directory)
    return directory


def history_of(items: list[int], n_items: int, kind: str = "view") -> Interactions:
    n = len(items)
    return Interactions(
        n_shoppers=1,
        n_items=n_items,
        shopper=np.zeros(n, dtype=np.int32),
        item=np.array(items, dtype=np.int32),
        event_type=np.full(n, EVENT_TYPE_CODES[kind], dtype=np.int8),
        weight=np.ones(n, dtype=np.float32),
        age_days=np.arange(n, 0, -1, dtype=np.float32),
    )


def with_new_products(features: ItemFeatures, new: list[dict]) -> ItemFeatures:
    """The catalog plus products no training event ever saw (appended in the given order)."""

    def add(name, dtype):
        return np.r_[getattr(features, name), [p[name] for p in new]].astype(dtype)

    return dataclasses.replace(
        features,
        item_ids=[*features.item_ids, *(p["item_ids"] for p in new)],
        category=add("category", np.int32),
        brand=add("brand", np.int32),
        price_z=add("price_z", np.float32),
        price_band=add("price_band", np.int32),
        popularity=np.r_[features.popularity, np.zeros(len(new))].astype(np.float32),
        age_days=np.r_[features.age_days, np.zeros(len(new))].astype(np.float32),
        text=[*features.text, *(p["text"] for p in new)],
    )


def new_product(pid: str, category_code: int) -> dict:
    """A product of this category (its words in the text), mid price, brand 1: only its features say who likes it."""
    return {
        "item_ids": pid,
        "category": category_code,
        "brand": 1,
        "price_z": 0.0,
        "price_band": 2,
        "text": f"new arrival {WORDS[(category_code - 1) % len(WORDS)]} brand0",
    }


def test_training_reports_its_epochs_and_beats_popularity_on_validation(shop, fitted):
    _, features, split = shop
    model, stats, progress = fitted
    assert stats["epochs_run"] == len(stats["val_ndcg"]) >= 2
    assert 1 <= stats["best_epoch"] <= stats["epochs_run"]
    assert stats["val_ndcg"][stats["best_epoch"] - 1] == max(stats["val_ndcg"])
    assert progress[-1] == ("train neural", stats["epochs_run"], model.config["epochs"])
    assert [p[1] for p in progress] == list(range(stats["epochs_run"] + 1))
    popularity = Popularity()
    popularity.fit(split.train, features)
    ours, theirs = evaluate(model, split.validation)["ndcg"], evaluate(popularity, split.validation)["ndcg"]
    # The best epoch's weights were restored: what serves is what validation chose.
    assert ours == pytest.approx(max(stats["val_ndcg"]), abs=1e-6)
    assert ours > 2 * theirs, (ours, theirs)


def test_numpy_forward_equals_the_keras_forward_after_fit(shop, fitted):
    import tensorflow as tf

    _, features, split = shop
    model = fitted[0]
    record = model._keras_record
    n = features.n_items
    catalog = model._train_catalog
    item_vectors, _ = record(
        {
            "item_id": tf.constant(catalog["ids"]),
            "item_category": tf.constant(catalog["category"]),
            "item_brand": tf.constant(catalog["brand"]),
            "item_band": tf.constant(catalog["band"]),
            "item_price_z": tf.constant(catalog["price_z"][:, None]),
            "item_text": tf.constant([[t] for t in features.text]),
            "seq_vectors": tf.zeros((n, 1, model.item_vectors.shape[1])),
            "seq_types": tf.zeros((n, 1), dtype=tf.int32),
            "seq_next_gaps": tf.zeros((n, 1), dtype=tf.int32),
        }
    )
    np.testing.assert_allclose(item_vectors.numpy(), model.item_vectors, atol=1e-5)

    history = split.validation.history
    items, types, lengths = neural.last_events(history, model.config["seq_len"])
    asked = neural.asked_gaps(history, lengths, model.config["seq_len"], model.gap_buckets())
    assert model.gap_buckets() and (asked > 1).any()  # the default model reads the gap to the next event
    sequence = np.where((items >= 0)[:, :, None], model.item_vectors[np.maximum(items, 0)], 0.0).astype(np.float32)
    _, steps = record(
        {
            "item_id": tf.zeros((history.n_shoppers,), dtype=tf.int32),
            "item_category": tf.zeros((history.n_shoppers,), dtype=tf.int32),
            "item_brand": tf.zeros((history.n_shoppers,), dtype=tf.int32),
            "item_band": tf.zeros((history.n_shoppers,), dtype=tf.int32),
            "item_price_z": tf.zeros((history.n_shoppers, 1)),
            "item_text": tf.constant([[""]] * history.n_shoppers),
            "seq_vectors": tf.constant(sequence),
            "seq_types": tf.constant(types),
            "seq_next_gaps": tf.constant(asked),
        }
    )
    keras_last = steps.numpy()[np.arange(history.n_shoppers), lengths - 1]
    np.testing.assert_allclose(model.shopper_vectors(history), keras_last, atol=1e-5)


def test_a_model_saved_before_next_gap_existed_loads_and_serves_as_it_was_saved(shop, tmp_path):
    _, features, split = shop
    old = NeuralRecommender(seed=0, next_gap=False, epochs=2, members=1)
    old.fit(split.train, features)
    old.save(tmp_path)
    params = json.loads((tmp_path / "params.json").read_text())
    del params["params"]["next_gap"]  # as params.json was written before the setting
    (tmp_path / "params.json").write_text(json.dumps(params))
    loaded = NeuralRecommender.load(tmp_path, features)
    assert loaded.config["next_gap"] is False and loaded.gap_buckets() == 0
    history = split.test.history
    np.testing.assert_array_equal(loaded.score(history), old.score(history))
    history.age_days[:] += 30.0  # the moment asked moves nothing in a model that never read it
    np.testing.assert_array_equal(loaded.score(history), old.score(history))
    neural.verify_keras(tmp_path)


def test_numpy_tokenizer_equals_textvectorization(fitted):
    model = fitted[0]
    texts = [*neural.PROBE_TEXTS, "Coffee BEAN roast, espresso!!", "tea-leaf\tgreen\u00a0herbal", "unseenword x"]
    keras_tokens = model._keras_record.get_layer("text_vectorization")(np.array(texts)).numpy()
    assert np.array_equal(neural.tokenize(texts, model.vocabulary, model.config["text_len"]), keras_tokens)


def test_save_and_load_give_the_same_scores_without_tensorflow_state(shop, fitted, saved):
    _, features, split = shop
    model = fitted[0]
    assert sorted(p.name for p in saved.iterdir()) == ["model.keras", "params.json", "serving.npz", "vocabulary.json"]
    loaded = NeuralRecommender.load(saved, features)
    history = split.validation.history
    np.testing.assert_array_equal(loaded.score(history), model.score(history))
    # Reordered catalog: scores follow the product ids, not the positions.
    order = np.arange(features.n_items)[::-1]
    reordered = dataclasses.replace(
        features,
        item_ids=[features.item_ids[i] for i in order],
        category=features.category[order],
        brand=features.brand[order],
        price_z=features.price_z[order],
        price_band=features.price_band[order],
        popularity=features.popularity[order],
        age_days=features.age_days[order],
        text=[features.text[i] for i in order],
    )
    moved = NeuralRecommender.load(saved, reordered)
    renumbered = dataclasses.replace(history, item=(features.n_items - 1 - history.item).astype(np.int32))
    np.testing.assert_allclose(moved.score(renumbered)[:, order], model.score(history), atol=1e-5)


def test_a_feature_only_product_keeps_its_saved_vector_until_its_features_change(shop, fitted, saved):
    _, features, _ = shop
    stored = neural._read_serving(saved)
    untrained = np.flatnonzero(stored["train_ids"] == 0)
    assert untrained.size, "the synthetic shop has products without training events"
    j = int(untrained[0])
    loaded = NeuralRecommender.load(saved, features)
    np.testing.assert_array_equal(loaded.item_vectors[untrained], stored["item_vectors"][untrained])
    category = features.category.copy()
    category[j] = category[j] % features.n_categories + 1  # another existing category
    moved = NeuralRecommender.load(saved, dataclasses.replace(features, category=category))
    assert not np.allclose(moved.item_vectors[j], stored["item_vectors"][j], atol=1e-4)
    others = np.setdiff1d(np.arange(features.n_items), [j])
    np.testing.assert_array_equal(moved.item_vectors[others], loaded.item_vectors[others])


def test_new_products_are_scored_from_their_features_for_shoppers_whose_taste_matches(shop, fitted, saved):
    """One new product per category, none seen in training: a shopper who browsed one category gets its new
    product first among the new ones, and above (nearly) every known product of the other categories."""
    _, features, _ = shop
    codes = list(range(1, features.n_categories + 1))
    newer = with_new_products(features, [new_product(f"new-{c}", c) for c in codes])
    loaded = NeuralRecommender.load(saved, newer)
    # The products it knew keep their trained vectors; the new ones get feature vectors.
    np.testing.assert_array_equal(loaded.item_vectors[: features.n_items], fitted[0].item_vectors)
    beaten = []
    for code in codes:
        history = history_of(np.flatnonzero(features.category == code)[:6].tolist(), newer.n_items)
        scores = loaded.score(history)[0]
        new_scores = scores[features.n_items :]
        match = new_scores[code - 1]
        assert match != 0.0 and np.isfinite(match)
        assert int(np.argmax(new_scores)) == code - 1, (code, new_scores)
        other_categories = scores[: features.n_items][features.category != code]
        beaten.append(float((other_categories < match).mean()))
    assert min(beaten) >= 0.85 and np.mean(beaten) >= 0.95, beaten


def test_verify_keras_accepts_the_artefact_and_refuses_a_corrupt_or_tampered_one(saved, tmp_path):
    verify_keras(saved)

    truncated = tmp_path / "truncated"
    shutil.copytree(saved, truncated)
    data = (truncated / "model.keras").read_bytes()
    (truncated / "model.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="unreadable"):
        verify_keras(truncated)

    for key in ("w_gru_recurrent_kernel", "item_vectors", "w_token_embedding"):
        tampered = tmp_path / f"tampered-{key}"
        shutil.copytree(saved, tampered)
        with np.load(tampered / "serving.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        arrays[key] = arrays[key].copy()
        arrays[key][-1] += 0.01
        np.savez(tampered / "serving.npz", **arrays)
        with pytest.raises(ValueError, match="differ"):
            verify_keras(tampered)


def test_same_seed_same_model_and_a_time_budget_stops_training(shop):
    _, features, split = shop
    small = {"epochs": 2, "min_steps_per_epoch": 8, "seed": 3, "members": 1}
    first, second = NeuralRecommender(**small), NeuralRecommender(**small)
    stats = first.fit(split.train, features, split.validation)
    assert second.fit(split.train, features, split.validation)["val_ndcg"] == stats["val_ndcg"]
    np.testing.assert_array_equal(first.item_vectors, second.item_vectors)

    hurried = NeuralRecommender(epochs=5, max_seconds=0.0)
    stats = hurried.fit(split.train, features, None)
    assert stats["epochs_run"] == 1 and stats["stopped"] == "max_seconds" and stats["steps"] == [1]
    assert np.isfinite(hurried.score(split.validation.history)).all()


def test_members_train_while_the_budget_lasts_and_serve_the_mean_of_their_scores(shop, tmp_path):
    _, features, split = shop
    model = NeuralRecommender(seed=0, members=3, epochs=3)
    stats = model.fit(split.train, features, split.validation)
    assert stats["members"] == 3 == 1 + len(model.members) == len(stats["member_seconds"])
    assert [member.config["seed"] for member in model.members] == [1, 2]
    history = split.validation.history
    own = [model._own_score(history)] + [member._own_score(history) for member in model.members]
    assert not np.allclose(own[0], own[1], atol=1e-3), "another seed, another model"
    np.testing.assert_allclose(model.score(history), np.mean(own, axis=0), rtol=1e-5, atol=1e-5)

    model.save(tmp_path)
    names = ["member-1", "member-2", "model.keras", "params.json", "serving.npz", "vocabulary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    loaded = NeuralRecommender.load(tmp_path, features)
    assert len(loaded.members) == 2
    np.testing.assert_array_equal(loaded.score(history), model.score(history))
    for member in ("member-1", "member-2"):
        verify_keras(tmp_path / member)

    # A first model that takes the whole budget leaves no time for another: a big shop trains one, as before.
    hurried = NeuralRecommender(seed=0, members=3, epochs=50, patience=50, max_seconds=2.0)
    assert hurried.fit(split.train, features, None)["members"] == 1 and not hurried.members


def test_importing_the_module_does_not_import_tensorflow():
    script = (
        "import sys; import recommendations.engine.neural as n; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
