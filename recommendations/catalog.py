"""The seam to the host's product model: which model, how to read each feature, and the profile sync.

The host names its model in RECOMMENDATIONS["PRODUCT_MODEL"] and maps features to ORM lookups in
["PRODUCT_FIELDS"] (e.g. "category": "category__slug"). Everything else in the app reads products through
here, so the app never imports the host's code.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.db import models, transaction

from recommendations.conf import rec_settings

logger = logging.getLogger(__name__)

SYNC_BATCH = 2000
PROFILE_FIELDS = ("name", "category", "brand", "price", "in_stock", "text", "created_at", "active")


def get_product_model() -> type[models.Model]:
    return apps.get_model(rec_settings.PRODUCT_MODEL)


def product_id_of(instance: models.Model) -> str:
    """The product's id as the app stores it (always a string)."""
    field = rec_settings.PRODUCT_ID_FIELD
    return str(instance.pk if field == "pk" else getattr(instance, field))


def _id_lookup() -> str:
    field = rec_settings.PRODUCT_ID_FIELD
    return "pk" if field == "pk" else field


def _coerce(key: str, value: Any) -> Any:
    """Turn whatever the host stores into the profile's types (stock counts become in/out of stock)."""
    if key == "in_stock":
        if value is None:
            return True
        if isinstance(value, bool):
            return value
        return value > 0
    if key == "active":
        return True if value is None else bool(value)
    if key in {"name", "category", "brand", "text"}:
        return "" if value is None else str(value)
    if key == "price":
        return None if value is None else Decimal(value)
    if key == "created_at":
        return value if isinstance(value, datetime) else None
    return value


def iter_product_rows(queryset: models.QuerySet | None = None) -> Iterator[dict[str, Any]]:
    """Yield one profile dict per host product, reading only the mapped columns."""
    mapping: dict[str, str] = rec_settings.PRODUCT_FIELDS
    qs = queryset if queryset is not None else get_product_model()._default_manager.all()
    id_lookup = _id_lookup()
    lookups = [id_lookup, *mapping.values()]
    for row in qs.order_by(id_lookup).values(*dict.fromkeys(lookups)).iterator(chunk_size=SYNC_BATCH):
        profile = {"product_id": str(row[id_lookup])}
        for key in PROFILE_FIELDS:
            if key in mapping:
                profile[key] = _coerce(key, row[mapping[key]])
        yield profile


def upsert_profiles(rows: Iterable[dict[str, Any]]) -> int:
    """Insert or update profiles by product_id in batches; returns how many rows were written."""
    from recommendations.models import ProductProfile

    written = 0
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal written
        if not batch:
            return
        update_fields = sorted({k for row in batch for k in row if k != "product_id"})
        objs = [ProductProfile(**row) for row in batch]
        ProductProfile.objects.bulk_create(
            objs,
            update_conflicts=True,
            unique_fields=["product_id"],
            update_fields=[*update_fields, "updated_at"] if update_fields else ["updated_at"],
            batch_size=SYNC_BATCH,
        )
        written += len(batch)
        batch.clear()

    for row in rows:
        batch.append(row)
        if len(batch) >= SYNC_BATCH:
            flush()
    flush()
    return written


def sync_products(progress: Any = None) -> dict[str, int]:
    """Bring every profile in step with the host catalog; profiles of deleted products become inactive."""
    from recommendations.models import ProductProfile

    seen: set[str] = set()

    def rows() -> Iterator[dict[str, Any]]:
        for row in iter_product_rows():
            seen.add(row["product_id"])
            if progress is not None:
                progress.update(1)
            yield row

    with transaction.atomic():
        written = upsert_profiles(rows())
        # Compared in Python and updated in chunks so a catalog of 100k ids never becomes one giant NOT IN.
        stale = [
            pid
            for pid in ProductProfile.objects.filter(active=True).values_list("product_id", flat=True)
            if pid not in seen
        ]
        deactivated = 0
        for start in range(0, len(stale), SYNC_BATCH):
            chunk = stale[start : start + SYNC_BATCH]
            deactivated += ProductProfile.objects.filter(product_id__in=chunk).update(active=False)
    return {"synced": written, "deactivated": deactivated}


def sync_product(instance: models.Model) -> None:
    """Refresh one profile after the host saved a product (called from a post_save receiver)."""
    model = get_product_model()
    rows = list(iter_product_rows(model._default_manager.filter(pk=instance.pk)))
    upsert_profiles(rows)


def deactivate_product(instance: models.Model) -> None:
    from recommendations.models import ProductProfile

    ProductProfile.objects.filter(product_id=product_id_of(instance)).update(active=False)


def get_products(product_ids: Iterable[str]) -> dict[str, models.Model]:
    """Host product instances by app product id, for rendering; unknown ids are simply absent."""
    ids = list(dict.fromkeys(str(p) for p in product_ids))
    if not ids:
        return {}
    model = get_product_model()
    lookup = _id_lookup()
    if lookup == "pk":
        pk_field = model._meta.pk
        try:
            keys = [pk_field.to_python(i) for i in ids]
        except Exception:
            keys = []
            for i in ids:
                try:
                    keys.append(pk_field.to_python(i))
                except Exception:  # noqa: S112 - skip ids that are not this model's pk
                    continue
    else:
        keys = ids
    # No ORDER BY: the answer is a dict, and the model's default ordering cost ~0.1 ms per block to compile and sort.
    objs = model._default_manager.filter(**{f"{lookup}__in": keys}).order_by()
    return {product_id_of(obj): obj for obj in objs}


def known_product_ids(product_ids: Iterable[str]) -> set[str]:
    """Which of these ids the shop knows (as a host product or an imported profile)."""
    from recommendations.models import ProductProfile

    ids = {str(p) for p in product_ids if p}
    if not ids:
        return set()
    return set(ProductProfile.objects.filter(product_id__in=ids).values_list("product_id", flat=True))
