"""The co-occurrence engine on tiny known patterns: similar, for_you, trending, weights and recency.

These run the same `compute_lists` the precompute runs, on rows built in memory (no database needed).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from recommendations.engine import cooccurrence, dataset
from recommendations.engine.cooccurrence import CatalogView, ListParams, compute_lists

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
WEIGHTS = {"view": 1.0, "favorite": 3.0, "add_to_cart": 4.0, "purchase": 8.0, "click": 1.0}
ITEMS = ["A", "B", "C", "D", "E", "F", "G", "R"]


def catalog(items=ITEMS, inactive=(), out_of_stock=(), categories=None):
    categories = categories or {}
    return CatalogView.from_rows(
        (pid, categories.get(pid, ""), pid not in inactive, pid not in out_of_stock) for pid in items
    )


def ev(shopper, product, event_type="view", days_ago=0.0, at=NOW):
    return (shopper, product, event_type, at - timedelta(days=days_ago))


def pattern():
    """Shoppers a0..a4 view A and B; c0..c4 view C and D; one shopper bridges A and C once."""
    rows = []
    for n in range(5):
        rows += [ev(f"v:a{n}", "A", days_ago=1), ev(f"v:a{n}", "B", days_ago=1)]
        rows += [ev(f"v:c{n}", "C", days_ago=1), ev(f"v:c{n}", "D", days_ago=1)]
    rows += [ev("v:bridge", "A", days_ago=1), ev("v:bridge", "C", days_ago=1)]
    return rows


def lists(rows, cat=None, **params):
    cat = cat or catalog()
    log = dataset.event_log_from_rows(rows, cat.item_ids, WEIGHTS)
    result: dict[tuple[str, str], list] = {}
    for placement, subject, items in compute_lists(log, cat, ListParams(**params)):
        assert (placement, subject) not in result, "a list was produced twice"
        result[(placement, subject)] = items
    return result


def ids(items):
    return [pid for pid, _, _ in items]


def test_similar_starts_with_the_co_viewed_item_and_never_lists_itself():
    out = lists(pattern())
    assert ids(out[("similar", "A")])[0] == "B"
    assert ids(out[("similar", "D")])[0] == "C"
    for (placement, subject), items in out.items():
        if placement == "similar":
            assert subject not in ids(items)
            assert all(reason == "also" for _, _, reason in items)
            scores = [s for _, s, _ in items]
            assert scores == sorted(scores, reverse=True)


def test_for_you_recommends_the_neighbour_with_the_anchor_as_reason():
    rows = [*pattern(), ev("v:new", "A")]
    mine = lists(rows)[("for_you", "v:new")]
    assert mine[0][0] == "B"
    assert mine[0][2] == "because:A"


def test_bought_items_are_excluded_but_viewed_ones_may_stay():
    rows = [*pattern(), ev("v:buyer", "A"), ev("v:buyer", "B", "purchase")]
    mine = ids(lists(rows)[("for_you", "v:buyer")])
    assert "B" not in mine
    # A was only viewed, and B (bought) points back at it: it stays, ranked by its score.
    assert "A" in mine


def test_shoppers_without_training_history_get_no_list():
    rows = [*pattern(), ("v:searcher", "A", "search", NOW), ("v:ghost", "unknown-product", "view", NOW)]
    out = lists(rows)
    assert ("for_you", "v:searcher") not in out
    assert ("for_you", "v:ghost") not in out


def test_one_co_shopper_does_not_outrank_four():
    # A is popular (20 shoppers). B is popular too (20), four of them also saw A. R was seen once, with A.
    rows = []
    for n in range(20):
        rows.append(ev(f"v:a{n}", "A"))
        rows.append(ev(f"v:b{n}" if n >= 4 else f"v:a{n}", "B"))
    rows.append(ev("v:a19", "R"))
    plain_cosine = lists(rows, shrinkage=0.0)[("similar", "A")]
    assert ids(plain_cosine)[0] == "R", "without shrinkage the one-shopper pair wins (the case shrinkage is for)"
    assert ids(lists(rows)[("similar", "A")])[0] == "B"


def test_an_old_event_counts_less_than_a_new_one():
    log = dataset.event_log_from_rows([ev("v:s", "A", days_ago=90), ev("v:s", "C", days_ago=0)], ITEMS, WEIGHTS)
    matrix = dataset.interaction_matrix(log, half_life_days=30)
    a, c = ITEMS.index("A"), ITEMS.index("C")
    assert matrix[0, a] < matrix[0, c]
    assert matrix[0, c] == pytest.approx(np.log1p(1.0))
    assert matrix[0, a] == pytest.approx(np.log1p(0.125))  # three half-lives

    rows = [*pattern(), ev("v:s", "A", days_ago=90), ev("v:s", "C", days_ago=0)]
    mine = ids(lists(rows)[("for_you", "v:s")])
    assert mine.index("D") < mine.index("B")


def test_history_from_1998_gives_the_same_lists():
    rows = [*pattern(), ev("v:s", "A", days_ago=40), ev("v:s", "C", days_ago=2), ev("v:t", "B", "purchase")]
    shift = NOW - datetime(1998, 3, 14, 9, 30, tzinfo=UTC)
    old_rows = [(s, p, t, when - shift) for s, p, t, when in rows]
    today, then = lists(rows), lists(old_rows)
    assert today.keys() == then.keys()
    assert ("trending", "") in today
    for key, items in today.items():
        assert ids(then[key]) == ids(items), key
        assert [r for _, _, r in then[key]] == [r for _, _, r in items]
        assert [s for _, s, _ in then[key]] == pytest.approx([s for _, s, _ in items])


def test_a_purchase_weighs_more_than_a_view():
    rows = [*pattern(), ev("v:s", "A", "purchase"), ev("v:s", "C", "view")]
    mine = ids(lists(rows)[("for_you", "v:s")])
    assert mine.index("B") < mine.index("D")
    rows = [*pattern(), ev("v:s", "A", "view"), ev("v:s", "C", "purchase")]
    mine = ids(lists(rows)[("for_you", "v:s")])
    assert mine.index("D") < mine.index("B")


def test_trending_counts_distinct_shoppers_not_events():
    bot = [ev("v:bot", "E", days_ago=0.01 * n) for n in range(1000)]
    real = [ev(f"v:real{n}", "F", days_ago=1) for n in range(20)]
    top = lists(bot + real)[("trending", "")]
    assert ids(top)[:2] == ["F", "E"]
    assert top[1][1] == pytest.approx(1.0, rel=0.01), "the bot is one shopper with one (recent) view"


def test_trending_weighs_types_keeps_the_window_and_serves_only_active_in_stock():
    rows = [ev(f"v:p{n}", "A", "purchase", days_ago=1) for n in range(3)]
    rows += [ev(f"v:v{n}", "B", "view", days_ago=1) for n in range(3)]
    rows += [ev(f"v:old{n}", "C", "view", days_ago=30) for n in range(50)]  # outside the 14-day window
    rows += [ev(f"v:x{n}", "D", "view", days_ago=1) for n in range(9)]  # out of stock
    rows += [ev(f"v:y{n}", "E", "view", days_ago=1) for n in range(9)]  # inactive
    rows += [ev("v:newest", "G", days_ago=0)]
    cat = catalog(inactive={"E"}, out_of_stock={"D"}, categories={"A": "tools", "B": "tools", "G": "toys"})
    out = lists(rows, cat)
    assert ids(out[("trending", "")]) == ["A", "B", "G"]
    assert ids(out[("trending", "category:tools")]) == ["A", "B"]
    assert ids(out[("trending", "category:toys")]) == ["G"]
    assert all(reason == "trending" for _, _, reason in out[("trending", "")])


def test_inactive_products_are_never_recommended_but_still_teach():
    rows = [*pattern(), ev("v:s", "A")]
    out = lists(rows, catalog(inactive={"B"}))
    assert ("similar", "B") not in out
    assert "B" not in ids(out[("similar", "A")])
    assert "B" not in ids(out[("for_you", "v:s")])
    # B is gone from the outputs, but the shoppers who saw it still link A to C through the bridge.
    assert ids(out[("similar", "A")]) == ["C"]


def test_top_n_and_similar_n_cap_the_lists():
    rows = [ev(f"v:s{n}", pid) for n in range(4) for pid in ITEMS]
    out = lists(rows, top_n=3, similar_n=2)
    assert len(out[("trending", "")]) == 3
    assert all(len(items) == 2 for (placement, _), items in out.items() if placement == "similar")


def test_chunked_computation_equals_one_block():
    rng = np.random.default_rng(4)
    items = [f"p{n}" for n in range(40)]
    rows = [
        (f"v:{rng.integers(60)}", items[rng.integers(40)], "view", NOW - timedelta(days=float(rng.integers(30))))
        for _ in range(600)
    ]
    cat = catalog(items)
    whole = lists(rows, cat, item_chunk=4096, shopper_chunk=4096)
    chunked = lists(rows, cat, item_chunk=3, shopper_chunk=7)
    assert whole.keys() == chunked.keys()
    for key in whole:
        assert ids(whole[key]) == ids(chunked[key]), key
        assert [s for _, s, _ in whole[key]] == pytest.approx([s for _, s, _ in chunked[key]])


def test_neighbours_match_a_dense_reference():
    rng = np.random.default_rng(9)
    dense = (rng.random((30, 12)) < 0.3) * rng.random((30, 12))
    import scipy.sparse as sp

    matrix = sp.csr_matrix(dense)
    shrink = 2.0
    got = cooccurrence.item_neighbours(matrix, k=12, allowed=np.ones(12, bool), shrinkage=shrink, chunk_size=5)
    norms = np.linalg.norm(dense, axis=0)
    support = (dense > 0).T.astype(float) @ (dense > 0).astype(float)
    expected = (dense.T @ dense) / np.outer(norms, norms) * support / (support + shrink)
    np.fill_diagonal(expected, 0)
    assert np.allclose(got.toarray(), expected)
