"""What Oscar's own signals become: view, add_to_cart, purchase and search events, and profiles kept in step with
stock records and variants, so a shop records events without forking Oscar's views.

Events go through the public `record_event`, under the profile id of the product (a variant's: its parent's). A
receiver never raises into Oscar's views: a failure is logged and the page goes on.

An order is recorded once, from `post_checkout`, which carries the request (the visitor cookie, the user).
`order_placed` comes first and carries none, so inside a request it only notes the order; if no `post_checkout`
follows before the request ends (a custom checkout, a dashboard action), the order is recorded then for its user, or
the visitor whose cookie the request carried. Outside a request (a script, a task) it is recorded at once for the
order's user. Each order line's event id is fixed ("oscar-line-<line id>"), so a line is never stored twice.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from django.core.signals import request_finished, request_started
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.http import parse_cookie

from recommendations import catalog
from recommendations.conf import rec_settings
from recommendations.contrib.oscar.adapter import OscarProductAdapter
from recommendations.product_fields import ProductAdapter, load_adapter
from recommendations.tracking import current_request, may_track, record_event, valid_visitor_id

logger = logging.getLogger(__name__)

LINE_EVENT_PREFIX = "oscar-line-"


class _RequestState(threading.local):
    """What this thread's current request left for later: orders placed without a post_checkout yet, the visitor
    cookie (Oscar's search signal carries no request), and products whose profiles are due for a sync."""

    def __init__(self) -> None:
        self.in_request = False
        self.visitor_id = ""
        self.pending_orders: dict[Any, Any] = {}
        self.due_products: set[Any] = set()


_state = _RequestState()


def never_raises(receiver: Callable[..., None]) -> Callable[..., None]:
    """Recording is never worth a broken checkout: log and go on."""

    @functools.wraps(receiver)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            receiver(*args, **kwargs)
        except Exception:
            logger.exception("recommendations: Oscar receiver %s failed", receiver.__name__)

    return guarded


def adapter() -> ProductAdapter:
    """The shop's adapter when it names one (its product_id_for decides), else Oscar's."""
    try:
        found = load_adapter()
    except Exception:
        logger.exception("PRODUCT_ADAPTER cannot be loaded; recording under Oscar's default ids")
        found = None
    return found if found is not None else OscarProductAdapter()


def profile_id(product: Any) -> str:
    """The profile id a product's events are recorded under (a variant's parent's)."""
    return adapter().product_id_for(product)


def _user_id(user: Any) -> str:
    return str(user.pk) if user is not None and getattr(user, "is_authenticated", False) else ""


@never_raises
def on_request_started(sender: Any, environ: dict[str, Any] | None = None, **kwargs: Any) -> None:
    _state.in_request = True
    _state.pending_orders = {}
    cookies = parse_cookie(_cookie_header(environ, kwargs.get("scope")))
    visitor_id = cookies.get(rec_settings.VISITOR_COOKIE_NAME, "")
    _state.visitor_id = visitor_id if valid_visitor_id(visitor_id) else ""


def _cookie_header(environ: dict[str, Any] | None, scope: dict[str, Any] | None) -> str:
    """The request's Cookie header: WSGI sends request_started with the environ, ASGI with the scope."""
    if environ:
        return environ.get("HTTP_COOKIE", "")
    for name, value in (scope or {}).get("headers", []):
        if name == b"cookie":
            return value.decode("latin-1")
    return ""


@never_raises
def on_request_finished(sender: Any, **kwargs: Any) -> None:
    pending, _state.pending_orders = _state.pending_orders, {}
    visitor_id, _state.visitor_id = _state.visitor_id, ""
    _state.in_request = False
    for order in pending.values():
        record_order(order, request=None, user=order.user, visitor_id=visitor_id)


@never_raises
def on_product_viewed(sender: Any, product: Any, user: Any = None, request: Any = None, **kwargs: Any) -> None:
    if kwargs.get("raw"):
        return
    _record(request, user, "view", product_id=profile_id(product))


@never_raises
def on_basket_addition(sender: Any, product: Any, user: Any = None, request: Any = None, **kwargs: Any) -> None:
    if kwargs.get("raw"):
        return
    _record(request, user, "add_to_cart", product_id=profile_id(product), quantity=_quantity(request))


@never_raises
def on_post_checkout(sender: Any, order: Any, user: Any = None, request: Any = None, **kwargs: Any) -> None:
    _state.pending_orders.pop(order.pk, None)
    record_order(order, request=request, user=user if user is not None else order.user)


@never_raises
def on_order_placed(sender: Any, order: Any, user: Any = None, **kwargs: Any) -> None:
    if kwargs.get("raw"):
        return
    if _state.in_request:
        request = current_request()
        if request is not None and not may_track(request):
            return  # the shopper placing it has not agreed to be tracked
        _state.pending_orders[order.pk] = order  # post_checkout, if it comes, records it with the request
        return
    record_order(order, request=None, user=user if user is not None else order.user)


@never_raises
def on_user_search(sender: Any, query: str = "", user: Any = None, **kwargs: Any) -> None:
    request = current_request()
    if request is not None:  # the signal carries no request, but the middleware knows it: its consent applies
        if query:
            record_event(request, "search", query=query)
        return
    user_id, visitor_id = _user_id(user), _state.visitor_id
    if not query or not (user_id or visitor_id):
        return  # an anonymous shopper's first page: no cookie yet, nobody to record it for
    record_event(None, "search", user_id=user_id, visitor_id=visitor_id, query=query)


def record_order(order: Any, *, request: Any, user: Any, visitor_id: str = "") -> int:
    """One purchase event per order line (lines of deleted products are skipped); returns how many were recorded."""
    recorded = 0
    for line in order.lines.select_related("product__parent"):
        if line.product is None:
            continue
        fields = {
            "product_id": profile_id(line.product),
            "quantity": line.quantity,
            "value": line.line_price_incl_tax,
            "context": {"order_id": str(order.number)},
            "event_id": f"{LINE_EVENT_PREFIX}{line.pk}",
        }
        if _record(request, user, "purchase", visitor_id=visitor_id, **fields) is not None:
            recorded += 1
    return recorded


def _record(request: Any, user: Any, event_type: str, *, visitor_id: str = "", **fields: Any) -> Any:
    if request is not None:
        return record_event(request, event_type, **fields)
    user_id = _user_id(user)
    visitor_id = visitor_id or _state.visitor_id
    if not (user_id or visitor_id):
        logger.info("recommendations: %s event without a shopper (no request, user or cookie) not recorded", event_type)
        return None
    return record_event(None, event_type, user_id=user_id, visitor_id=visitor_id, **fields)


def _quantity(request: Any) -> int:
    """Oscar's add-to-basket form posts `quantity`; the signal does not carry it."""
    try:
        return max(1, int(request.POST.get("quantity", 1)))
    except (AttributeError, TypeError, ValueError):
        return 1


# Price and stock live on stock records, and on a parent's variants: a change there is a change of the parent's or
# standalone product's profile. Syncs are collected per transaction and run once per product when it commits.


@never_raises
def on_stock_record_changed(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw or instance.product_id is None:
        return
    _sync_later(instance.product_id)


@never_raises
def on_product_saved(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw or getattr(instance, "structure", None) != "child" or instance.parent_id is None:
        return  # the app's own receiver syncs parents and standalone products
    _sync_later(instance.parent_id)


def _sync_later(product_pk: Any) -> None:
    # One callback per change, but the first to run syncs every product due and the rest find nothing left; a
    # rolled-back change leaves its product due, and syncing it once more later reads the rows as they are.
    _state.due_products.add(product_pk)
    transaction.on_commit(_sync_due)


def _sync_due() -> None:
    due, _state.due_products = _state.due_products, set()
    if not due:
        return
    model = catalog.get_product_model()
    for product in model._default_manager.filter(pk__in=due).select_related("parent"):
        target = product.parent if getattr(product, "structure", None) == "child" and product.parent else product
        try:
            catalog.sync_product(target)
        except Exception:
            logger.exception("recommendations: profile sync failed for Oscar product %s", target.pk)


def connect() -> None:
    """Wire Oscar's signals (called from the AppConfig's ready())."""
    from oscar.apps.basket.signals import basket_addition
    from oscar.apps.catalogue.signals import product_viewed
    from oscar.apps.checkout.signals import post_checkout
    from oscar.apps.order.signals import order_placed
    from oscar.apps.search.signals import user_search
    from oscar.core.loading import get_model

    uid = "recommendations_oscar_"
    request_started.connect(on_request_started, dispatch_uid=uid + "request_started")
    request_finished.connect(on_request_finished, dispatch_uid=uid + "request_finished")
    product_viewed.connect(on_product_viewed, dispatch_uid=uid + "product_viewed")
    basket_addition.connect(on_basket_addition, dispatch_uid=uid + "basket_addition")
    post_checkout.connect(on_post_checkout, dispatch_uid=uid + "post_checkout")
    order_placed.connect(on_order_placed, dispatch_uid=uid + "order_placed")
    user_search.connect(on_user_search, dispatch_uid=uid + "user_search")
    stock_record = get_model("partner", "StockRecord")
    post_save.connect(on_stock_record_changed, sender=stock_record, dispatch_uid=uid + "stock_saved")
    post_delete.connect(on_stock_record_changed, sender=stock_record, dispatch_uid=uid + "stock_deleted")
    product = get_model("catalogue", "Product")
    post_save.connect(on_product_saved, sender=product, dispatch_uid=uid + "product_saved")
