"""Purchase lists: bought_together from co-purchase in one order, buy_again from repeat purchases.

The numpy functions on hand-made logs, then the whole precompute on PostgreSQL: the command, and the sharded path.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings

from recommendations import catalog, tracking
from recommendations.conf import rec_settings
from recommendations.engine import dataset, purchases
from recommendations.engine.cooccurrence import CatalogView
from recommendations.lists import purchases as purchase_rows
from recommendations.lists.precompute import finish_sharded, run_precompute, run_shard
from recommendations.models import RecommendationSet, StoredList
from recommendations.training import loading
from recommendations.training import runs as training
from tests.engine.synthetic import make_shop
from tests.factories import T_END, make_category, make_product, write_shop

pytestmark = pytest.mark.django_db

START = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
_orders = itertools.count(1)


def bought(shopper: str, products: list[Any], at: datetime, order_id: Any = "new") -> list:
    """One order of products (or product ids); with order_id=None, order-less events as an importer writes them."""
    if order_id == "new":
        order_id = next(_orders)
    context = {"order_id": order_id} if order_id is not None else None
    return [
        tracking.build_event(
            "purchase",
            visitor_id=shopper,
            product_id=str(getattr(p, "pk", p)),
            context=context,
            occurred_at=at,
            client_time=at,
        )
        for p in products
    ]


def store(*batches: list) -> None:
    tracking.store_events(event for batch in batches for event in batch)


def active_list(placement: str, subject: Any = "") -> list[list]:
    row = StoredList.objects.filter(
        recommendation_set__status=RecommendationSet.Status.ACTIVE, placement=placement, subject=str(subject)
    ).first()
    return row.items if row else []


def ids(items: list[list]) -> list[str]:
    return [item[0] for item in items]


def with_settings(**override):
    return override_settings(RECOMMENDATIONS={**settings.RECOMMENDATIONS, **override})


@pytest.fixture
def products():
    gear, food = make_category(slug="gear"), make_category(slug="food")
    made = {
        name: make_product(name, category=category)
        for name, category in [
            ("Camera", gear),
            ("Case", gear),
            ("Tripod", gear),
            ("Bag", gear),
            ("Coffee", food),
            ("Tea", food),
            ("Cookies", food),
            ("Kettle", gear),
        ]
    }
    catalog.sync_products()
    return made


# ---- the numpy core ------------------------------------------------------------------------------------------------


def log_of(rows: list[tuple[str, str, datetime, Any]], n_items: int = 6) -> purchases.PurchaseLog:
    return purchases.purchase_log_from_rows(rows, [str(i) for i in range(n_items)])


def test_order_less_purchases_chain_into_baskets_by_the_window_and_orders_stay_per_shopper():
    minutes = [timedelta(minutes=m) for m in (0, 6, 12, 40)]
    rows = [("a", str(i), START + m, None) for i, m in enumerate(minutes)]
    # Two shoppers whose shops both number orders from 1: two baskets, not one.
    rows += [("b", "4", START, 1), ("c", "5", START, 1), ("b", "5", START + timedelta(days=3), 1)]
    log = log_of(rows)
    basket, by_window = purchases.basket_of_event(log, window_minutes=10)
    # 0, 6 and 12 minutes chain (each gap <= 10), 40 starts a new basket.
    assert basket[0] == basket[1] == basket[2] != basket[3]
    assert by_window == 2
    assert basket[4] == basket[6] != basket[5], "one shopper's order 1 is one basket, another shopper's is another"
    assert len(set(basket.tolist())) == 4


def test_a_basket_too_big_to_say_anything_about_pairs_is_left_out():
    rows = [("bulk", str(i), START, 7) for i in range(6)] + [("x", "0", START, 8), ("x", "1", START, 8)]
    log = log_of(rows)
    basket, _ = purchases.basket_of_event(log, 10)
    matrix = purchases.basket_matrix(log, basket, max_items=5)
    assert np.diff(matrix.indptr).tolist() == [0, 2]
    assert purchases.basket_matrix(log, basket, max_items=6).nnz == 8


def test_the_score_takes_the_best_sellers_popularity_out():
    # Anchor 0 is bought with 1 in 4 baskets and with the best seller 2 in 6 (of its 40).
    rows = [(f"k{n}", item, START, f"k{n}") for n in range(4) for item in ("0", "1")]
    rows += [(f"s{n}", item, START, f"s{n}") for n in range(6) for item in ("0", "2")]
    rows += [(f"b{n}", "2", START, f"b{n}") for n in range(34)] + [("solo", "1", START, "solo")]
    log = log_of(rows, 3)
    matrix = purchases.basket_matrix(log, purchases.basket_of_event(log, 10)[0])
    scores = purchases.together_scores(matrix, 5, np.ones(3, dtype=bool)).toarray()
    co = (matrix.T @ matrix).toarray()
    assert co[0, 2] > co[0, 1], "by raw co-count the best seller would come first"
    assert scores[0, 1] > scores[0, 2] > 0
    # score = c / sqrt(n_a n_b) * c / (c + 3)
    assert scores[0, 1] == pytest.approx(4 / np.sqrt(10 * 5) * 4 / 7)
    assert scores[1, 0] == pytest.approx(scores[0, 1]), "alpha = 0.5 is symmetric"
    leaning = purchases.together_scores(matrix, 5, np.ones(3, dtype=bool), alpha=0.9).toarray()
    assert leaning[0, 2] > leaning[0, 1], "alpha near 1 is P(b | a): the best seller wins again"


def test_repeat_occasions_merge_purchases_within_hours_and_the_interval_is_per_buyer():
    day = timedelta(days=1)
    rows = [("frequent", "0", START + k * 7 * day, None) for k in range(5)]  # gaps 7, 7, 7, 7
    rows += [("monthly", "0", START, None), ("monthly", "0", START + 30 * day, None)]
    rows += [("two", "0", START, None), ("two", "0", START + 10 * day, None), ("two", "0", START + 30 * day, None)]
    rows += [("once", "0", START, None)]
    # Two orders three hours apart are one occasion, not a repeat.
    rows += [("split", "1", START, 1), ("split", "1", START + timedelta(hours=3), 2)]
    stats = purchases.repeat_stats(log_of(rows, 2), shrinkage=2.0)
    assert stats.buyers.tolist() == [4, 1]
    assert stats.repeat_buyers.tolist() == [3, 0]
    assert stats.score[0] == pytest.approx(3 / (4 + 2))
    # Per-buyer medians 7, 30 and 15 (gaps 10 and 20); their median is 15. Pooling all gaps would give 7.
    assert stats.interval_days[0] == pytest.approx(15.0)
    assert np.isnan(stats.interval_days[1])


def test_only_active_products_are_listed_or_recommended():
    rows = [(f"s{n}", item, START, f"s{n}") for n in range(3) for item in ("0", "1", "2")]
    log = log_of(rows, 3)
    view = CatalogView.from_rows([("0", "c", True, True), ("1", "c", False, True), ("2", "c", True, False)])
    lists = {(p, s): items for p, s, items in purchases.compute_lists(log, view, purchases.PurchaseParams())}
    assert set(lists) == {("bought_together", "0"), ("bought_together", "2")}
    assert [i[0] for i in lists["bought_together", "0"]] == ["2"], "out of stock is serving's call, inactive is not"


# ---- through the precompute ------------------------------------------------------------------------------------------


def test_a_co_purchase_pattern_comes_back_for_both_sides(products):
    camera, case = products["Camera"], products["Case"]
    store(*(bought(f"p{n}", [camera, case], START + timedelta(days=n)) for n in range(3)))
    run_precompute()
    assert active_list("bought_together", camera.pk)[0][::2] == [str(case.pk), f"together:{camera.pk}"]
    assert active_list("bought_together", case.pk)[0][::2] == [str(camera.pk), f"together:{case.pk}"]


def test_best_sellers_do_not_dominate_a_specific_pairing(products):
    camera, case, cookies = products["Camera"], products["Case"], products["Cookies"]
    batches = [bought(f"k{n}", [camera, case], START + timedelta(days=n)) for n in range(4)]
    # Cookies sell everywhere: in 40 orders, six of them with a camera.
    batches += [bought(f"c{n}", [camera, cookies], START + timedelta(days=n)) for n in range(6)]
    batches += [bought(f"b{n}", [cookies], START + timedelta(days=n)) for n in range(34)]
    store(*batches)
    run_precompute()
    assert ids(active_list("bought_together", camera.pk)) == [str(case.pk), str(cookies.pk)]


def test_a_single_co_purchase_is_below_support(products):
    camera, tripod, bag = products["Camera"], products["Tripod"], products["Bag"]
    store(bought("once", [camera, tripod], START), *(bought(f"t{n}", [camera, bag], START) for n in range(2)))
    run_precompute()
    assert ids(active_list("bought_together", camera.pk)) == [str(bag.pk)]
    assert active_list("bought_together", tripod.pk) == []
    with with_settings(BOUGHT_TOGETHER_MIN_ORDERS=1):
        run_precompute()
    assert set(ids(active_list("bought_together", camera.pk))) == {str(bag.pk), str(tripod.pk)}


def test_purchases_without_an_order_id_are_grouped_by_the_window(products):
    coffee, kettle, tea = products["Coffee"], products["Kettle"], products["Tea"]
    batches = []
    for n in range(3):
        at = START + timedelta(days=n)
        batches += [bought(f"w{n}", [coffee], at, None), bought(f"w{n}", [kettle], at + timedelta(minutes=4), None)]
        # Tea an hour later is another visit, not the same basket.
        batches += [bought(f"w{n}", [tea], at + timedelta(hours=1), None)]
    store(*batches)
    run = run_precompute()
    assert ids(active_list("bought_together", coffee.pk)) == [str(kettle.pk)]
    assert run.stats["purchases"]["baskets_by_window"] == 6
    with with_settings(PURCHASE_WINDOW_MINUTES=90):
        run_precompute()
    assert set(ids(active_list("bought_together", coffee.pk))) == {str(kettle.pk), str(tea.pk)}


def test_buy_again_lists_what_several_shoppers_rebuy_and_not_a_one_off(products):
    coffee, tea, camera = products["Coffee"], products["Tea"], products["Camera"]
    batches = []
    for n in range(4):
        batches += [bought(f"r{n}", [coffee], START + timedelta(days=n + 14 * k)) for k in range(3)]
        batches += [bought(f"o{n}", [camera], START + timedelta(days=n))]
    # One shopper's tea habit is not a shop-wide one.
    batches += [bought("habit", [tea], START + timedelta(days=20 * k)) for k in range(3)]
    # A camera ordered twice the same afternoon (a forgotten address, a split order) is one occasion.
    for n in range(2):
        batches += [bought(f"split{n}", [camera], START), bought(f"split{n}", [camera], START + timedelta(hours=2))]
    store(*batches)
    run_precompute()
    (item,) = active_list("buy_again")
    assert item == [str(coffee.pk), round(4 / (4 + 5.0), 6), "repeat", 14.0]


def test_the_interval_is_read_from_known_dates(products):
    coffee = products["Coffee"]
    day = timedelta(days=1)
    dates = {"a": [0, 9, 18, 27], "b": [0, 21], "c": [3, 15, 30]}  # per-buyer medians 9, 21 and 13.5
    store(*(bought(s, [coffee], START + d * day) for s, days in dates.items() for d in days))
    run_precompute()
    pid, score, reason, interval = active_list("buy_again")[0]
    assert (pid, reason, interval) == (str(coffee.pk), "repeat", 13.5)
    assert score == pytest.approx(3 / (3 + 5.0), abs=1e-6)


def test_the_command_writes_both_placements_into_the_active_set(products):
    camera, case, coffee = products["Camera"], products["Case"], products["Coffee"]
    store(
        *(bought(f"k{n}", [camera, case], START + timedelta(days=n)) for n in range(2)),
        *(bought(f"r{n}", [coffee], START + timedelta(days=10 * k)) for n in range(2) for k in range(2)),
    )
    out = StringIO()
    call_command("precompute_recommendations", "--no-progress", stdout=out)
    active = RecommendationSet.objects.get(status=RecommendationSet.Status.ACTIVE)
    assert active.stats["lists"]["bought_together"] == 2
    assert active.stats["lists"]["buy_again"] == 1
    assert active.lists.filter(placement="bought_together").count() == 2
    assert ids(active.lists.get(placement="buy_again").items) == [str(coffee.pk)]
    lines = [line.split() for line in out.getvalue().splitlines()]
    assert ["lists:", "bought_together", "2"] in lines and ["lists:", "buy_again", "1"] in lines
    assert any(line[:2] == ["seconds:", "purchases"] for line in lines)


def test_a_bad_purchase_setting_fails_the_run(products):
    with with_settings(BOUGHT_TOGETHER_ALPHA=1.5), pytest.raises(ImproperlyConfigured, match="BOUGHT_TOGETHER_ALPHA"):
        run_precompute()
    assert not RecommendationSet.objects.filter(status=RecommendationSet.Status.ACTIVE).exists()


def test_the_sharded_path_writes_the_shared_lists_once_like_an_unsharded_run():
    data, features = make_shop(n_shoppers=120, n_items=40, seed=4)
    write_shop(data, features)
    training.run_training(candidates=["item_knn"])
    # Late arrivals: few events of their own, so the planted pattern decides their lists.
    main, extra, pantry = features.item_ids[-3:]
    orders = []
    for n in range(3):
        at = T_END - timedelta(days=20 - n)
        orders += [(f"x{n}", [main, extra], at), (f"p{n}", [pantry], at), (f"p{n}", [pantry], at + timedelta(days=9))]
    store(*(bought(shopper, pids, at) for shopper, pids, at in orders))

    def shared_lists(set_id: int) -> dict:
        rows = StoredList.objects.filter(recommendation_set_id=set_id, placement__in=["bought_together", "buy_again"])
        return {(row.placement, row.subject): row.items for row in rows}

    whole = run_precompute()
    expected = shared_lists(whole.recommendation_set_id)
    assert ids(expected["bought_together", main])[0] == extra
    assert pantry in ids(expected["buy_again", ""])

    run = run_precompute(shards=2)
    assert run.status == "running"
    for shard in (1, 0, 1):  # shard 1 redelivered: it rewrites its for_you rows and nothing else
        run_shard(run.pk, shard)
    finished = finish_sharded(run.pk)
    assert finished.status == "succeeded"
    assert shared_lists(run.recommendation_set_id) == expected
    assert finished.stats["lists"]["bought_together"] == whole.stats["lists"]["bought_together"]
    assert active_list("bought_together", main) == expected["bought_together", main]


# ---- bots: the training definition, applied to the purchase lists ----------------------------------------------------


def viewed(shopper: str, products: list[Any], at: datetime) -> list:
    return [
        tracking.build_event("view", visitor_id=shopper, product_id=str(getattr(p, "pk", p)), occurred_at=at)
        for p in products
    ]


def test_a_bot_buying_pairs_in_bulk_makes_no_bought_together_pair(products):
    camera, tripod, case = products["Camera"], products["Tripod"], products["Case"]
    # 40 orders of camera + tripod inside one minute: 80 events in a calendar minute, over the limit of 60.
    bulk = [bought("script", [camera, tripod], START + timedelta(seconds=s)) for s in range(40)]
    people = [bought(f"k{n}", [camera, case], START + timedelta(days=n)) for n in range(3)]
    store(*bulk, *people)

    run = run_precompute()
    assert ids(active_list("bought_together", camera.pk)) == [str(case.pk)]
    assert active_list("bought_together", tripod.pk) == []
    assert run.stats["purchases"]["bot_shoppers_left_out"] == 1
    assert run.stats["purchases"]["bot_purchases_left_out"] == 80
    # The same orders under a limit the script stays within: the pair is there, so the filter is what removed it.
    with with_settings(BOT_MAX_EVENTS_PER_MINUTE=100):
        run_precompute()
    assert ids(active_list("bought_together", camera.pk))[0] == str(tripod.pk)
    assert ids(active_list("bought_together", tripod.pk)) == [str(camera.pk)]


def test_a_scraper_is_a_bot_by_its_views_and_its_few_orders_count_for_nothing(products):
    camera, bag = products["Camera"], products["Bag"]
    everything = list(products.values())
    # 72 views in one minute (9 sweeps of the 8 products) make it a bot, as they do for training.
    scraping = [viewed("scraper", everything, START + timedelta(seconds=sweep)) for sweep in range(9)]
    # Its orders, on other days and at a human pace, look like ordinary ones: three camera + bag baskets.
    orders = [bought("scraper", [camera, bag], START + timedelta(days=d)) for d in (1, 2, 3)]
    store(*scraping, *orders)

    run = run_precompute()
    assert active_list("bought_together", camera.pk) == []
    assert run.stats["purchases"]["bot_purchases_left_out"] == 6
    # Purchases alone would not have caught it: judged by its orders it is a person, and the pair is there.
    with with_settings(BOT_MAX_EVENTS_PER_MINUTE=100):
        run_precompute()
    assert ids(active_list("bought_together", camera.pk)) == [str(bag.pk)]


def test_the_purchase_lists_leave_out_exactly_the_shoppers_training_drops(products):
    camera, case = products["Camera"], products["Case"]
    store(
        *(viewed("fast", [camera, case], START + timedelta(seconds=s)) for s in range(31)),  # 62 in a minute
        *(viewed("quick", [camera, case], START + timedelta(seconds=s)) for s in range(30)),  # 60: a person
        bought("fast", [camera], START + timedelta(days=1)),
        bought("quick", [camera], START + timedelta(days=1)),
    )
    weights = {k: float(v) for k, v in rec_settings.EVENT_WEIGHTS.items()}
    item_ids = sorted(str(p.pk) for p in products.values())
    log = loading.load_event_log(item_ids, weights)
    cleaned, cleaning = dataset.clean_log(log, 0.0, 60)
    bots = dataset.bot_shoppers(log, 60)
    assert bots == {"v:fast"}
    assert cleaning.bot_shoppers == 1
    assert {cleaned.shoppers[i] for i in np.unique(cleaned.shopper_idx)} == {"v:quick"}
    purchase_log = purchase_rows.load_purchase_log(item_ids, leave_out=bots)
    assert purchase_log.shoppers == ["v:quick"] and purchase_log.left_out_events == 1


# ---- buy_again: buyers too recent to have re-bought yet ------------------------------------------------------------


DAY = timedelta(days=1)


def test_recent_first_time_buyers_do_not_count_against_the_repeat_rate():
    rows = []
    # Four buyers since day 0, two of them re-buying every 10 days: the habit is 2 in 4.
    for n in range(4):
        rows += [(f"old{n}", "0", START + k * 10 * DAY, None) for k in range(3 if n < 2 else 1)]
    # Ten first-time buyers in the last five days (the data ends at the newest, day 29.5): too new to have re-bought.
    rows += [(f"new{n}", "0", START + (25 + n / 2) * DAY, None) for n in range(10)]
    # A buyer on day 18: observed 11.5 days, longer than the 10-day interval, so it counts (and did not re-buy).
    rows += [("day18", "0", START + 18 * DAY, None)]
    # A recent buyer who already re-bought is left out too: its peers who have not re-bought yet are.
    rows += [("fast", "0", START + 26 * DAY, None), ("fast", "0", START + 29 * DAY, None)]
    log = log_of(rows, 1)

    stats = purchases.repeat_stats(log, shrinkage=0.0)
    assert stats.interval_days[0] == pytest.approx(10.0)  # medians 10, 10 and 3: the fast buyer's gap is real
    assert (stats.buyers[0], stats.repeat_buyers[0], stats.recent_buyers[0]) == (5, 2, 11)
    assert stats.score[0] == pytest.approx(2 / 5)
    # Counting everyone, as before, would make it 3 in 16: the new customers would read as "nobody re-buys".
    everyone = purchases.repeat_stats(log, shrinkage=0.0, min_observation_days=0.0, observed_until_us=10**18)
    assert (everyone.buyers[0], everyone.repeat_buyers[0]) == (16, 3)

    # Where the data ends is the caller's to say: with ten more quiet days, the newcomers have had their chance.
    later = purchases.repeat_stats(log, 0.0, observed_until_us=dataset.micros(START + 40 * DAY))
    assert (later.buyers[0], later.repeat_buyers[0], later.recent_buyers[0]) == (16, 3, 0)


def test_a_short_interval_still_needs_the_minimum_observation():
    # Re-bought every 2 days by two buyers since day 0; one buyer on day 6 of data that ends on day 10.
    rows = [(f"r{n}", "0", START + k * 2 * DAY, None) for n in range(2) for k in range(6)]
    rows += [("newish", "0", START + 6 * DAY, None)]
    log = log_of(rows, 1)
    assert purchases.repeat_stats(log, 0.0).interval_days[0] == pytest.approx(2.0)
    # Four days is twice the interval but less than the seven-day minimum: not yet judged.
    default = purchases.repeat_stats(log, 0.0)
    assert (default.buyers[0], default.recent_buyers[0]) == (2, 1)
    assert purchases.MIN_OBSERVATION_DAYS == 7.0
    shorter = purchases.repeat_stats(log, 0.0, min_observation_days=3.0)
    assert (shorter.buyers[0], shorter.recent_buyers[0]) == (3, 0)
    assert shorter.score[0] == pytest.approx(2 / 3)


def test_a_product_with_many_new_buyers_keeps_its_buy_again_place(products):
    coffee = products["Coffee"]
    batches = []
    # Four regulars re-buy every 14 days; two early buyers bought once.
    for n in range(4):
        batches += [bought(f"r{n}", [coffee], START + (n + 14 * k) * DAY) for k in range(3)]
    batches += [bought(f"once{n}", [coffee], START + n * DAY) for n in range(2)]
    # A promotion brings 30 first-time buyers in the last five days of the data (day 55 to 59).
    batches += [bought(f"new{n}", [coffee], START + (55 + n / 6) * DAY) for n in range(30)]
    store(*batches)

    run = run_precompute()
    # 4 repeat buyers of the 6 observed for 14 days or more, shrunk by 5: 4 / 11. Counting the 30 newcomers would
    # give 4 / 41, under BUY_AGAIN_MIN_SCORE (0.1): coffee would drop out of buy_again.
    [item] = active_list("buy_again")
    assert item == [str(coffee.pk), round(4 / (6 + 5.0), 6), "repeat", 14.0]
    assert run.stats["purchases"]["repeat_buyers_too_recent"] == 30
