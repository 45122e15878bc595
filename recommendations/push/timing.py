"""When a shopper's e-mail may go, and in which language: quiet hours and the best hour in their time zone.

- The zone: RECOMMENDATIONS["EMAIL_TIME_ZONE"], a host callable (user) -> IANA name or None, else TIME_ZONE. (The
  app's tracker records no zone, so there is nothing of the shopper's own to learn it from.)
- Quiet hours (EMAIL_QUIET_HOURS, (21, 8) by default: from 21:00 to 08:00 local): a due e-mail waits. Nothing is
  written for it, so the next hourly run finds it due again and sends it once the morning comes; its period key
  still makes it one e-mail.
- The best hour: the hour of the day (local, outside quiet hours) the shopper was most often active in over the last
  EMAIL_BEST_HOUR_DAYS days, when they have at least EMAIL_BEST_HOUR_MIN_EVENTS events then; one grouped query per
  batch. A flow that uses it sends at the first such hour at or after the moment the e-mail became due (for weekly
  picks, the week's start), so the wait is under a day and nobody misses a week. Without a best hour: at once.
- The language: EMAIL_LANGUAGE, a host callable (user) -> language code or None, else the user's `language`
  attribute, else LANGUAGE_CODE; a language the site does not offer counts as none.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db.models import Count
from django.db.models.functions import ExtractHour
from django.utils import timezone, translation
from django.utils.module_loading import import_string

from recommendations.conf import rec_settings
from recommendations.models import Event

logger = logging.getLogger(__name__)

IDS_PER_QUERY = 1000


def _host_callable(key: str) -> Callable[[Any], Any] | None:
    path = getattr(rec_settings, key)
    if path is None:
        return None
    return path if callable(path) else import_string(path)


def zones(users: dict[str, Any]) -> dict[str, tzinfo]:
    """Each user's time zone: the host's answer (EMAIL_TIME_ZONE) when it names a known zone, else TIME_ZONE."""
    default = timezone.get_default_timezone()
    zone_of = _host_callable("EMAIL_TIME_ZONE")
    if zone_of is None:
        return dict.fromkeys(users, default)
    found: dict[str, tzinfo] = {}
    for user_id, user in users.items():
        found[user_id] = default
        try:
            name = zone_of(user)
            if name:
                found[user_id] = ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError):
            logger.warning("EMAIL_TIME_ZONE gave an unknown zone for a shopper; using TIME_ZONE")
        except Exception:
            logger.exception("the time zone callable %r failed; using TIME_ZONE", rec_settings.EMAIL_TIME_ZONE)
    return found


def language_of(user: Any) -> str:
    """The language a shopper's e-mail is written in (a code of LANGUAGES), or "" for LANGUAGE_CODE."""
    try:
        language_for = _host_callable("EMAIL_LANGUAGE")
        code = language_for(user) if language_for is not None else getattr(user, "language", None)
    except Exception:
        logger.exception("the language callable %r failed; using LANGUAGE_CODE", rec_settings.EMAIL_LANGUAGE)
        return ""
    if not code or not isinstance(code, str):
        return ""
    try:
        return translation.get_supported_language_variant(translation.to_language(code))
    except LookupError:
        return ""


def is_quiet(hour: int) -> bool:
    """Whether this local hour is within EMAIL_QUIET_HOURS (start inclusive, end exclusive; past midnight too)."""
    quiet = rec_settings.EMAIL_QUIET_HOURS
    if not quiet:
        return False
    start, end = quiet
    if start == end:
        return False
    return start <= hour < end if start < end else hour >= start or hour < end


def longest_wait_hours(best_hour: bool) -> int:
    """The longest a due e-mail can wait for its hour: the quiet hours, or a day for the best hour."""
    quiet = sum(1 for hour in range(24) if is_quiet(hour))
    return max(quiet, 24 if best_hour else 0)


def _local_hour(utc_hour: int, offset: timedelta) -> int:
    """The local hour most of a UTC hour falls in (its middle), for a zone `offset` from UTC (30-minute zones too)."""
    minutes = utc_hour * 60 + 30 + int(offset.total_seconds() // 60)
    return (minutes // 60) % 24


def best_hours(user_ids: Iterable[str], zones: dict[str, tzinfo], now: datetime) -> dict[str, int]:
    """Each shopper's usual local hour, for those with enough events: one grouped query per IDS_PER_QUERY shoppers
    (events per user and UTC hour), turned into local hours with each zone's offset now."""
    ids = list(dict.fromkeys(user_ids))
    since = now - timedelta(days=int(rec_settings.EMAIL_BEST_HOUR_DAYS))
    least = int(rec_settings.EMAIL_BEST_HOUR_MIN_EVENTS)
    hours: dict[str, Counter[int]] = {}
    for start in range(0, len(ids), IDS_PER_QUERY):
        rows = (
            Event.objects.filter(user_id__in=ids[start : start + IDS_PER_QUERY], occurred_at__gte=since)
            .filter(occurred_at__lte=now)
            .exclude(event_type="impression")  # rendered by the server (and stored for e-mails): not their doing
            .annotate(hour=ExtractHour("occurred_at", tzinfo=UTC))
            .values("user_id", "hour")
            .annotate(n=Count("pk"))
            .order_by()
            .values_list("user_id", "hour", "n")
        )
        for user_id, hour, n in rows:
            hours.setdefault(user_id, Counter())[hour] += n
    best: dict[str, int] = {}
    default = timezone.get_default_timezone()
    for user_id, counts in hours.items():
        if sum(counts.values()) < least:
            continue
        offset = now.astimezone(zones.get(user_id, default)).utcoffset() or timedelta(0)
        local: Counter[int] = Counter()
        for hour, n in counts.items():
            local[_local_hour(hour, offset)] += n
        awake = [(n, hour) for hour, n in local.items() if not is_quiet(hour)]
        if awake:
            best[user_id] = min(awake, key=lambda pair: (-pair[0], pair[1]))[1]  # the most events; ties: earliest
    return best


def send_from(since: datetime, hour: int, zone: tzinfo) -> datetime:
    """The first moment at or after `since` whose local hour is `hour` (less than a day later)."""
    local = since.astimezone(zone)
    start = local.replace(minute=0, second=0, microsecond=0)
    moment = start.replace(hour=hour)
    if moment < start:
        moment += timedelta(days=1)  # wall-clock arithmetic in the zone: the same local hour the next day
    return max(moment, local)


def waiting(
    candidates: Iterable[tuple[str, datetime]], users: dict[str, Any], now: datetime, best_hour: bool
) -> dict[str, str]:
    """Which of these shoppers (user id, the moment their e-mail became due) must wait, and why ("quiet" or
    "best_hour"): quiet hours in their zone now, or their best hour not yet come since the moment it became due."""
    pairs = [(user_id, since) for user_id, since in candidates if user_id in users]
    if not pairs or (not rec_settings.EMAIL_QUIET_HOURS and not best_hour):
        return {}
    their_zones = zones({user_id: users[user_id] for user_id, _ in pairs})
    held = {user_id: "quiet" for user_id, _ in pairs if is_quiet(now.astimezone(their_zones[user_id]).hour)}
    if best_hour:
        rest = [(user_id, since) for user_id, since in pairs if user_id not in held]
        hours = best_hours([user_id for user_id, _ in rest], their_zones, now)
        for user_id, since in rest:
            hour = hours.get(user_id)
            if hour is not None and now < send_from(since, hour, their_zones[user_id]):
                held[user_id] = "best_hour"
    return held
