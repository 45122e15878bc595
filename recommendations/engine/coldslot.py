"""One slot of every list for a new product, chosen on its merit by a model that can judge products without events.

Most recipes cannot rank a product nobody has seen (popularity, trending, item-kNN and EASE give it nothing), so a
shop that serves one of them never shows a newcomer outside exploration. `ColdSlot` keeps its base recipe's list
and, for each shopper, lifts the new product a *scout* ranks highest for them (content reads its category, brand and
price band; the neural and sequence models their item tower) to `position` of the list, where the scout rates it at
least as high as the product it pushes down (on merit: the scout's own comparison of the two), unless the base
already ranks it there. Training chooses the scout and the position on validation (`choose_cold_slot`): the one
reaching the most new products among those whose NDCG@10 cost stays within a tolerance (the earliest position on a
tie), so the exposure has a bounded, measured price.

Numpy only, like every recommender's scoring; "new" means no event in the data the slot was fitted on, and products
the catalog gains after training are new too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recommendations.engine.base import (
    EvalSet,
    Interactions,
    ItemFeatures,
    ProgressCallback,
    Recommender,
    item_id_array,
    read_arrays,
)

MODEL_FILE = "cold.npz"
# The candidate classes whose scores rank a product without events by its features (the others give it nothing).
SCOUT_CLASSES = ("content", "neural", "sequence")
# Tried from the least to the most exposure: 10 is the last slot of the top 10 every candidate is judged on.
POSITIONS = (10, 8, 6, 4)
# The largest share of the base's validation NDCG@10 a position may cost; the bar is 1 %, half leaves room
# for the test set's noise.
TOLERANCE = 0.005
SEARCH_K = 10


def cold_mask(train: Interactions) -> np.ndarray:
    """True for each item without an event in `train`."""
    return np.bincount(train.item, minlength=train.n_items)[: train.n_items] == 0


def best_new(scout_scores: np.ndarray, is_cold: np.ndarray, seen: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(rows, items): each shopper's best-scored new item by the scout, never one in their history."""
    cold = np.flatnonzero(is_cold)
    if not cold.size or not scout_scores.shape[0]:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    candidates = np.array(scout_scores[:, cold], dtype=np.float32)
    hit = sp.csr_matrix(seen)[:, cold].tocoo()
    candidates[hit.row, hit.col] = -np.inf
    best = np.argmax(candidates, axis=1)
    rows = np.flatnonzero(np.isfinite(candidates[np.arange(candidates.shape[0]), best]))
    return rows, cold[best[rows]].astype(np.int64)


def lift(
    scores: np.ndarray,
    rows: np.ndarray,
    items: np.ndarray,
    position: int,
    exclude: sp.spmatrix | None,
    scout_scores: np.ndarray,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """`scores` (changed in place) with each (row, item) raised just above the row's `position`-th best score among
    the items the list may hold (not in `exclude`, in `allowed`), where the scout rates the new item at least as high
    as the one it pushes down: on merit, in the scout's terms.

    An item the base already ranks at `position` or better keeps its score. Where the base ties at `position`, the
    item lands above every tied one.
    """
    from recommendations.engine.metrics import top_k

    if not rows.size:
        return scores
    lists = top_k(scores, position, exclude=exclude, allowed=allowed)[rows]  # every row: no copy of the rows' scores
    last = lists[:, position - 1]
    full = last >= 0  # rows with fewer unseen items than `position` take the new item anywhere above -inf
    floor = np.full(rows.size, -np.inf, dtype=np.float32)
    floor[full] = scores[rows[full], last[full]]
    above = np.nextafter(floor, np.float32(np.inf)).astype(np.float32)
    above[~full] = np.finfo(np.float32).min
    worse = full & (scout_scores[rows, items] < scout_scores[rows, np.maximum(last, 0)])
    above[worse] = -np.inf
    scores[rows, items] = np.maximum(scores[rows, items], above)
    return scores


class ColdSlot(Recommender):
    """The base recipe's scores, with each shopper's best new product (by the scout) at `position` of the list."""

    name = "cold_slot"

    def __init__(
        self,
        base: Recommender,
        scout: Recommender,
        position: int,
        item_ids: Sequence[str] = (),
        is_cold: np.ndarray | None = None,
        scout_name: str = "",
    ) -> None:
        if position < 1:
            raise ValueError("position counts from 1")
        self.base, self.scout = base, scout
        self.item_ids = list(item_ids)
        self.is_cold = np.zeros(len(self.item_ids), dtype=bool) if is_cold is None else np.asarray(is_cold, bool)
        super().__init__(position=int(position), scout=scout_name or scout.name)

    def fit(
        self,
        train: Interactions,
        features: ItemFeatures,
        validation: EvalSet | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """The base and scout come fitted (training chose them); this only learns which products are new."""
        self.item_ids = list(features.item_ids)
        self.is_cold = cold_mask(train)
        return {"new_products": int(self.is_cold.sum())}

    def score(self, history: Interactions) -> np.ndarray:
        """The slot counted among the products the shopper has not seen: the lists evaluation ranks."""
        return self._lifted(history, None, None, evaluation=True)

    def score_for_lists(
        self, history: Interactions, exclude: sp.spmatrix | None, allowed: np.ndarray | None
    ) -> np.ndarray:
        """The slot counted among the products the list will hold: a for_you list keeps the products a shopper only
        viewed, so counting past every seen one would put the new product lower than `position` there."""
        return self._lifted(history, exclude, allowed)

    def _lifted(
        self, history: Interactions, exclude: sp.spmatrix | None, allowed: np.ndarray | None, evaluation: bool = False
    ) -> np.ndarray:
        """`evaluation`: the list leaves out everything seen, so the seen matrix `best_new` reads stands in for
        `exclude` (built once per batch, not twice)."""
        from recommendations.engine.metrics import allowed_mask

        if not self.is_cold.any() or not history.n_shoppers:
            return self.base.score(history)
        scores = self.base.score(history)
        scout_scores = self.scout.score(history)
        seen = history.seen()
        is_cold = self.is_cold
        mask = allowed_mask(allowed, is_cold.size)
        if mask is not None:
            is_cold = is_cold & mask  # an inactive new product would only leave its slot empty
        rows, items = best_new(scout_scores, is_cold, seen)
        position = int(self.params["position"])
        listed = seen if evaluation else exclude
        return lift(np.asarray(scores, dtype=np.float32), rows, items, position, listed, scout_scores, allowed)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        for part, model in (("base", self.base), ("scout", self.scout)):
            (directory / part).mkdir()
            model.save(directory / part)
        np.savez(directory / MODEL_FILE, item_ids=item_id_array(self.item_ids), is_cold=self.is_cold)
        self._write_params(directory)

    @classmethod
    def load(cls, directory: Path, features: ItemFeatures) -> ColdSlot:
        """Products the catalog gained since training are new; products it lost vanish with the base's columns."""
        from recommendations.engine.candidates import RECOMMENDER_CLASSES

        directory = Path(directory)
        stored = cls._read_params(directory)
        parts = []
        for part in ("base", "scout"):
            name = cls._read_params(directory / part)["name"]
            if name not in RECOMMENDER_CLASSES:
                raise ValueError(f"unknown recommender {name!r} in {directory / part}")
            parts.append(RECOMMENDER_CLASSES[name].load(directory / part, features))
        saved = read_arrays(directory / MODEL_FILE)
        was_cold = dict(zip(saved["item_ids"].tolist(), saved["is_cold"].tolist(), strict=True))
        is_cold = np.array([bool(was_cold.get(pk, True)) for pk in features.item_ids], dtype=bool)
        params = stored["params"]
        return cls(parts[0], parts[1], int(params["position"]), features.item_ids, is_cold, str(params["scout"]))


@dataclass
class SlotChoice:
    """What `choose_cold_slot` found: the scout and position to serve (None: no slot), and every try, for the run."""

    scout: str | None
    position: int | None
    tried: list[dict[str, Any]]
    reason: str
    validation: dict[str, float] | None = None  # the chosen slot's validation metrics (the served lists exactly)
    per_shopper: np.ndarray | None = None  # and its NDCG@10 per validation shopper


def choose_cold_slot(
    base: Recommender, scouts: dict[str, Recommender], validation: EvalSet, is_cold: np.ndarray
) -> SlotChoice:
    """The scout whose slot reaches the most new products in validation's top 10, at its earliest position costing
    at most TOLERANCE of the base's NDCG@10 (compared shopper by shopper); None when every position costs more.

    Like content's lift, a slot within the tolerance serves even when validation holds few new products to reach
    (then it ranks the scouts by cost alone): offline NDCG can only lose by showing products nobody could choose
    yet, and a shop has to show them to learn anything about them. A scout that is the base itself adds nothing.
    The base and each scout score each batch once and the base's top 10 is found once: every (scout, position) only
    inserts one item per shopper into it (`insert_new`, which places it where `ColdSlot.score` would), so the search
    costs about one scoring of validation, and the chosen slot's metrics are those of the lists it serves.
    """
    from recommendations.engine.metrics import MetricAccumulator, eval_batches, top_k

    scouts = {name: scout for name, scout in scouts.items() if scout is not base}
    if not scouts:
        return SlotChoice(None, None, [], "no_scout")
    if not is_cold.any():
        return SlotChoice(None, None, [], "no_new_products")
    targets_cold = validation.cold_items
    n = validation.history.n_items
    keys = [(name, p) for name in scouts for p in POSITIONS]
    base_acc = MetricAccumulator(SEARCH_K, n, n, targets_cold)
    accs = {key: MetricAccumulator(SEARCH_K, n, n, targets_cold) for key in keys}
    for codes, history, seen in eval_batches(validation, 1000):
        scouted = {name: scout.score(history) for name, scout in scouts.items()}
        scores = np.asarray(base.score(history), dtype=np.float32)
        targets = base_acc.prepare([validation.targets[c] for c in codes])
        lists = top_k(scores, SEARCH_K, exclude=seen)
        base_acc.add(lists, targets)
        listed = np.where(lists >= 0, np.take_along_axis(scores, np.maximum(lists, 0), axis=1), -np.inf)
        for name in scouts:
            scout_scores = scouted[name]
            rows, items = best_new(scout_scores, is_cold, seen)
            for position in POSITIONS:
                inserted = insert_new(lists, listed, rows, items, position, scout_scores)
                accs[(name, position)].add(inserted, targets)
    base_ndcg = base_acc.per_shopper("ndcg")
    base_result = base_acc.result()
    allowed_cost = TOLERANCE * float(base_ndcg.mean())
    tried: list[dict[str, Any]] = []
    best: tuple[float, int, str] | None = None  # (cold recall, position, scout)
    for name, position in keys:
        result = accs[(name, position)].result()
        cost = float(base_ndcg.mean() - accs[(name, position)].per_shopper("ndcg").mean())
        within = cost <= allowed_cost
        tried.append(
            {
                "scout": name,
                "position": position,
                "ndcg": round(result["ndcg"], 5),
                "cost": round(cost, 5),
                "cold_recall": round(result["cold_recall"], 4),
                "within": within,
            }
        )
        if not within:
            continue
        # Most new products reached; then the most exposure (the earliest position); then the first scout listed.
        if best is None or (result["cold_recall"], -position) > (best[0], -best[1]):
            best = (result["cold_recall"], position, name)
    tried.insert(
        0,
        {
            "scout": None,
            "position": None,
            "ndcg": round(base_result["ndcg"], 5),
            "cost": 0.0,
            "cold_recall": round(base_result["cold_recall"], 4),
            "within": True,
        },
    )
    if best is None:
        return SlotChoice(None, None, tried, "no_slot_within_tolerance")
    chosen = accs[(best[2], best[1])]
    return SlotChoice(best[2], best[1], tried, "slot", chosen.result(), chosen.per_shopper("ndcg"))


def insert_new(
    lists: np.ndarray,
    listed: np.ndarray,
    rows: np.ndarray,
    items: np.ndarray,
    position: int,
    scout_scores: np.ndarray,
) -> np.ndarray:
    """The base's top-k `lists` (scores `listed`) as `lift` would change them: each (row, item) placed just above
    the row's `position`-th item (and so above every item tied with it) where the scout rates it at least as high
    as that item and the list does not already hold it there; a new copy."""
    out = lists.copy()
    k = lists.shape[1]
    for row, item in zip(rows.tolist(), items.tolist(), strict=True):
        pushed = int(lists[row, position - 1])
        if pushed < 0 or scout_scores[row, item] < scout_scores[row, pushed]:
            continue
        head = lists[row, :position].tolist()
        if item in head:
            continue
        at = int(np.count_nonzero(listed[row, :position] > listed[row, position - 1]))
        rest = [x for x in lists[row, at:].tolist() if x != item]
        out[row, at:] = [item, *rest][: k - at]
    return out
