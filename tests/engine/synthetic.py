"""A small synthetic shop with planted structure, for engine tests (numpy only, deterministic by seed).

What a model can learn from it:
- taste: each shopper prefers one main and one side category, and a price band;
- sequence: inside a category, item j is often followed by item j+1 (a "next in the series" pattern);
- recency: a shopper's main category may switch half way through their history;
- cold start: the last `n_cold` items are created near the end and only get events in the final 10% of the
  time axis, so they are cold (no train events) after a temporal split, but their category, brand, price and
  text say who should like them.
"""

from __future__ import annotations

import numpy as np

from recommendations.engine.base import EVENT_TYPE_CODES, Interactions, ItemFeatures

WORDS = {
    0: "coffee bean roast espresso",
    1: "tea leaf green herbal",
    2: "shoe running trail sole",
    3: "jacket rain wool warm",
    4: "lamp light desk bulb",
    5: "mug ceramic cup handle",
    6: "book novel story paper",
    7: "soap olive bath scent",
}
TYPE_WEIGHTS = {"view": 1.0, "add_to_cart": 4.0, "purchase": 8.0}


def make_shop(
    n_shoppers: int = 300,
    n_items: int = 120,
    n_categories: int = 6,
    seed: int = 0,
    events_per_shopper: tuple[int, int] = (6, 30),
    n_cold: int = 6,
    days: float = 60.0,
    switch_share: float = 0.3,
) -> tuple[Interactions, ItemFeatures]:
    """Interactions (sorted by shopper, then time) and features for a planted-taste shop."""
    rng = np.random.default_rng(seed)
    category = (np.arange(n_items) % n_categories).astype(np.int32)
    brand = rng.integers(0, 4, size=n_items).astype(np.int32)
    price_band = rng.integers(1, 4, size=n_items).astype(np.int32)
    price = np.exp(1.5 + price_band + rng.normal(0, 0.2, n_items))
    popularity_bias = rng.zipf(1.6, size=n_items).clip(1, 50).astype(np.float64)
    cold = np.zeros(n_items, dtype=bool)
    cold[n_items - n_cold :] = True
    created_day = np.where(cold, days * 0.9, 0.0)  # days after the start

    members = [np.flatnonzero(category == c) for c in range(n_categories)]
    shoppers: list[int] = []
    items: list[int] = []
    types: list[int] = []
    weights: list[float] = []
    times: list[float] = []
    type_names = list(TYPE_WEIGHTS)
    for s in range(n_shoppers):
        main, side = rng.choice(n_categories, size=2, replace=False)
        switched = rng.random() < switch_share
        new_main = (main + 1 + rng.integers(0, n_categories - 1)) % n_categories
        band = int(rng.integers(1, 4))
        n_events = int(rng.integers(events_per_shopper[0], events_per_shopper[1] + 1))
        moments = np.sort(rng.uniform(0, days, size=n_events))
        previous = -1
        for t in moments:
            current_main = new_main if switched and t > days / 2 else main
            if previous >= 0 and category[previous] == current_main and rng.random() < 0.5:
                # Next in the series.
                candidates = members[current_main]
                position = int(np.searchsorted(candidates, previous))
                item = int(candidates[(position + 1) % candidates.size])
            else:
                c = current_main if rng.random() < 0.75 else side
                pool = members[c]
                p = popularity_bias[pool] * np.where(price_band[pool] == band, 3.0, 1.0)
                p = p * (created_day[pool] <= t)
                if p.sum() == 0:
                    continue
                item = int(rng.choice(pool, p=p / p.sum()))
            if created_day[item] > t:
                continue
            kind = rng.choice(3, p=[0.75, 0.17, 0.08])
            shoppers.append(s)
            items.append(item)
            types.append(EVENT_TYPE_CODES[type_names[kind]])
            weights.append(TYPE_WEIGHTS[type_names[kind]])
            times.append(float(t))
            previous = item
    shopper_arr = np.asarray(shoppers, dtype=np.int32)
    time_arr = np.asarray(times)
    order = np.lexsort((time_arr, shopper_arr))
    newest = time_arr.max() if time_arr.size else 0.0
    interactions = Interactions(
        n_shoppers=n_shoppers,
        n_items=n_items,
        shopper=shopper_arr[order],
        item=np.asarray(items, dtype=np.int32)[order],
        event_type=np.asarray(types, dtype=np.int8)[order],
        weight=np.asarray(weights, dtype=np.float32)[order],
        age_days=(newest - time_arr[order]).astype(np.float32),
    )
    distinct = np.bincount(
        np.unique(shopper_arr.astype(np.int64) * n_items + np.asarray(items)) % n_items, minlength=n_items
    )
    log_price = np.log1p(price)
    popularity = np.log1p(distinct).astype(np.float32)
    features = ItemFeatures(
        item_ids=[f"p{i}" for i in range(n_items)],
        category=category + 1,
        brand=brand + 1,
        price_z=((log_price - log_price.mean()) / log_price.std()).astype(np.float32),
        price_band=price_band,
        popularity=((popularity - popularity.mean()) / (popularity.std() or 1.0)).astype(np.float32),
        age_days=np.maximum(newest - created_day, 0.0).astype(np.float32),
        text=[f"item {i} {WORDS[int(category[i]) % len(WORDS)]} brand{brand[i]}" for i in range(n_items)],
        categories=[f"cat{c}" for c in range(n_categories)],
        brands=[f"brand{b}" for b in range(4)],
    )
    return interactions, features
