"""Purchase events read from the database for the purchase lists (`engine.purchases` builds them from the rows)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet

from recommendations.engine.dataset import LOAD_CHUNK
from recommendations.engine.purchases import PurchaseLog, purchase_log_from_rows
from recommendations.models import Event
from recommendations.training.loading import readable


def count_purchase_events() -> int:
    """How many rows `load_purchase_log` will read, for an honest progress bar."""
    return readable(Event.objects.filter(event_type="purchase").exclude(product_id="").exclude(shopper="")).count()


def load_purchase_log(
    item_ids: Sequence[str],
    on_row_chunk: Callable[[int], None] | None = None,
    leave_out: AbstractSet[str] = frozenset(),
) -> PurchaseLog:
    """Every purchase event with its order id (a JSON key read by the database, not by Python), except those of
    the shoppers in `leave_out`: the precompute passes the bots of its event log (`dataset.bot_shoppers`)."""
    qs = (
        readable(Event.objects.filter(event_type="purchase"))
        .exclude(product_id="")
        .exclude(shopper="")
        .values_list("shopper", "product_id", "occurred_at", "context__order_id")
    )
    return purchase_log_from_rows(qs.iterator(chunk_size=LOAD_CHUNK), item_ids, on_row_chunk, leave_out)
