"""`send_due_messages`: every enabled flow's due e-mails, composed in batches and sent through Django's e-mail
backend, each at most once.

Per batch of due shoppers (EMAIL_BATCH_SIZE): shoppers whose key (flow, shopper, period) is already taken are
passed over; those without marketing consent or an address are counted and left alone (no row: most shoppers never
opted in, and a row each per period would be most of the table); so are those whose hour has not come (push.timing:
quiet hours in their zone, the flow's wait for their best hour), counted as waiting, whom a later run finds due
again; the frequency caps write a `skipped_cap` row (one e-mail of any flow per EMAIL_MIN_HOURS_BETWEEN hours, one of
this flow per its `cap_days` calendar days); the rest are composed through the serving pipeline in their language, a
weak list (fewer than `min_good_items` of the shopper's own) is a `skipped_weak` row.

Once a batch is composed, consent and the caps are read once more for all of it (an unsubscribe during the compose
holds). Then each e-mail that goes out is first claimed: its Message row is inserted with status "sending" and
committed on its own. The unique key makes a second worker, a retried task or a rerun find it taken and send nothing.
Then the e-mail is sent, and the row becomes "sent" (in the statement that claims the next e-mail: one round trip
an e-mail on PostgreSQL) or "failed" with the error: a failure is recorded, never lost, and never retried within its
period. The batch's sent e-mails are stored as impressions on placement email:<slug>
in one insert at its end (clicks find their e-mail through its Message row either way).

At most once, not exactly once: a process that dies between the claim and the send leaves a "sending" row, and
whether the SMTP server took the e-mail is unknown. A later run marks such rows, older than INTERRUPTED_AFTER,
"failed" ("interrupted") and never sends them again: a shopper missing one e-mail costs less than one getting two
(and, for a provider, a complaint). At most one row per dying process is in that state, since each row is claimed
right before its own send.

Call it outside a transaction (the task and the `send_flows` command do): each claim must commit before its send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import get_connection
from django.db import IntegrityError, connection, transaction
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from recommendations.conf import rec_settings
from recommendations.models import Flow, Message, ProductChange
from recommendations.push import compose, consent, timing, tokens
from recommendations.push.triggers import Candidate, Due, Trigger, message_key, trigger_of, uses_best_hour
from recommendations.tracking.events import build_event, insert_events

logger = logging.getLogger(__name__)

INTERRUPTED_AFTER = timedelta(minutes=30)  # far longer than one SMTP send, so a live sender's row is never taken
COUNTED = (Message.Status.SENT, Message.Status.SENDING)  # what the caps count: e-mails that went (or may have) out
CHANGES_KEPT = timedelta(days=7)  # ProductChange rows older than this set no trigger off (triggers.CHANGE_WINDOW)
Progress = Callable[[str, int, int], None]  # (flow slug, done, total), as management.stage_bars.StageBars takes it


class NotConfigured(Exception):
    """Nothing can be sent: the setting it names is missing."""


@dataclass
class FlowReport:
    """What one run did for one flow; `sent` counts what would be sent on a dry run."""

    due: int = 0
    already: int = 0
    not_consented: int = 0
    no_address: int = 0
    skipped_cap: int = 0
    skipped_weak: int = 0
    skipped_no_consent: int = 0
    waiting: int = 0  # quiet hours or their best hour not come yet: no row, a later run sends it
    skipped_holdout: int = 0
    failed: int = 0
    sent: int = 0


def send_due_messages(
    flow: str | None = None, *, dry_run: bool = False, now: datetime | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    """Send every enabled flow's due e-mails (or only flow `flow`, a slug); returns what happened, per flow.

    `dry_run` composes and counts without writing a row or sending anything. Raises NotConfigured without SITE_URL:
    every link in an e-mail starts with it.
    """
    if not rec_settings.SITE_URL:
        raise NotConfigured(_("RECOMMENDATIONS['SITE_URL'] is not set, so e-mail links would lead nowhere."))
    now = now or timezone.now()
    interrupted = 0 if dry_run else resolve_interrupted(now)
    if not dry_run:
        ProductChange.objects.filter(at__lt=now - CHANGES_KEPT).delete()
    flows = Flow.objects.filter(enabled=True).order_by("pk")
    if flow is not None:
        flows = flows.filter(slug=flow)
    reports = {}
    for row in flows:
        try:
            report = _send_flow(row, now, dry_run, progress)
        except Exception as exc:  # one broken flow (a placement no longer configured) never stops the others
            logger.exception("flow %s could not be sent", row.slug)
            reports[row.slug] = {**asdict(FlowReport()), "error": repr(exc)}
            continue
        reports[row.slug] = asdict(report)
        logger.info("flow %s%s: %s", row.slug, " (dry run)" if dry_run else "", reports[row.slug])
    return {"dry_run": dry_run, "interrupted": interrupted, "flows": reports}


def resolve_interrupted(now: datetime) -> int:
    """Mark "sending" rows older than INTERRUPTED_AFTER failed: their process died mid-send; never sent again."""
    stale = Message.objects.filter(status=Message.Status.SENDING, created_at__lt=now - INTERRUPTED_AFTER)
    count = stale.update(
        status=Message.Status.FAILED,
        error="interrupted between the claim and the send; not sent again (at most once)",
    )
    if count:
        logger.warning("%d e-mails were interrupted mid-send and are marked failed, not sent again", count)
    return count


def _send_flow(flow: Flow, now: datetime, dry_run: bool, progress: Progress | None) -> FlowReport:
    report = FlowReport()
    try:
        trigger = trigger_of(flow)
    except KeyError:
        logger.error("flow %s has a trigger this version does not know (%r); skipped", flow.slug, flow.trigger)
        return report
    candidates = list(trigger.candidates(flow, now))
    report.due = len(candidates)
    size = int(rec_settings.EMAIL_BATCH_SIZE)
    sender = _Sender(dry_run)
    try:
        for start in range(0, len(candidates), size):
            _send_batch(flow, trigger, candidates[start : start + size], now, sender, report)
            if progress is not None:
                progress(flow.slug, min(start + size, len(candidates)), len(candidates))
    finally:
        sender.close()
    return report


class _Sender:
    """One connection of the e-mail backend for a flow's run, opened at the first e-mail; after a failure it is
    closed so the next e-mail opens a fresh one (an SMTP server that hung up fails one e-mail, not the rest)."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.connection: Any = None

    def send(self, message: Any) -> None:
        if self.connection is None:
            self.connection = get_connection()
            self.connection.open()  # kept open for the flow's e-mails: the backend closes only what it opened itself
        message.connection = self.connection
        try:
            if message.send() != 1:
                raise RuntimeError("the e-mail backend did not take the message")
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:
                logger.debug("closing the e-mail connection failed", exc_info=True)
            self.connection = None


def _send_batch(
    flow: Flow, trigger: Trigger, batch: list[Candidate], now: datetime, sender: _Sender, report: FlowReport
) -> None:
    keys = {message_key(flow, c.user_id, c.period): c for c in batch}
    taken = set(Message.objects.filter(key__in=list(keys)).values_list("key", flat=True))
    report.already += len(taken)
    fresh = [(c.user_id, c.period) for key, c in keys.items() if key not in taken]
    since = {c.user_id: c.since for key, c in keys.items() if key not in taken}
    users = consent.load_users(user_id for user_id, _ in fresh)
    allowed = consent.consenting([user_id for user_id, _ in fresh], flow.slug, users)
    # A consent row of an account since deleted or deactivated counts as no consent.
    reachable = {u: users[u] for u in allowed if u in users and getattr(users[u], "is_active", True)}
    report.not_consented += len(fresh) - len(reachable)
    addresses = consent.addresses(reachable)
    report.no_address += len(reachable) - len(addresses)
    ready = [(user_id, period) for user_id, period in fresh if user_id in addresses]
    # Quiet hours, or their best hour still to come: no row, so a later run finds them due again.
    held = timing.waiting(((u, since[u]) for u, _ in ready), users, now, uses_best_hour(flow))
    report.waiting += len(held)
    ready = [(user_id, period) for user_id, period in ready if user_id not in held]
    capped = capped_users(flow, [user_id for user_id, _ in ready], now)
    for user_id, period in ready:
        if user_id in capped:
            report.skipped_cap += _record(flow, user_id, period, Message.Status.SKIPPED_CAP, now, sender.dry_run)
    ready = [(user_id, period) for user_id, period in ready if user_id not in capped]
    anchors = trigger.anchors(flow, now, [user_id for user_id, _ in ready]) if ready else {}
    dues = [Due(u, period, anchors.get(u, ()), timing.language_of(users[u])) for u, period in ready]
    before = trigger.prices_before(now, {pid for products in anchors.values() for pid in products})
    outgoing: list[tuple[compose.Composed, compose.Rendered, Any]] = []
    links = tokens.Links()  # the site and the link paths, looked up once for the batch
    for composed in _compose(flow, dues, before):
        due = composed.due
        products = [item.product_id for item in composed.block.items]
        if composed.good < flow.min_good_items or composed.held_out:
            # A held-out shopper's e-mail would have gone out: they are the baseline an experiment measures lift by.
            weak = composed.good < flow.min_good_items
            status = Message.Status.SKIPPED_WEAK if weak else Message.Status.SKIPPED_HOLDOUT
            variant = composed.block.variant  # the arm, so an experiment's report counts every row per arm
            done = _record(
                flow, due.user_id, due.period, status, now, sender.dry_run, products=products, variant=variant
            )
            setattr(report, status, getattr(report, status) + done)
            continue
        try:
            rendered = compose.render(flow, composed, users[due.user_id], links)
            message = compose.email_message(rendered, addresses[due.user_id])
        except Exception as exc:
            logger.exception("could not render flow %s's e-mail", flow.slug)
            report.failed += _record(
                flow, due.user_id, due.period, Message.Status.FAILED, now, sender.dry_run, error=repr(exc)
            )
            continue
        if sender.dry_run:
            report.sent += 1
            continue
        outgoing.append((composed, rendered, message))
    if outgoing:
        _send_outgoing(flow, outgoing, users, now, sender, report)


def _send_outgoing(
    flow: Flow,
    outgoing: list[tuple[compose.Composed, compose.Rendered, Any]],
    users: dict[str, Any],
    now: datetime,
    sender: _Sender,
    report: FlowReport,
) -> None:
    """Claim and send a batch's composed e-mails one by one; consent and the global cap are read once more for the
    whole batch first (an unsubscribe during the compose holds), the impressions are stored together at the end."""
    ids = [composed.due.user_id for composed, _rendered, _message in outgoing]
    still = consent.consenting(ids, flow.slug, users)
    capped = capped_users(flow, ids, now)
    impressions = []
    went: tuple[int, datetime] | None = None  # the last e-mail that went out, not yet marked sent: the next claim does
    try:
        for composed, rendered, message in outgoing:
            user_id = composed.due.user_id
            if user_id not in still:
                status = Message.Status.SKIPPED_NO_CONSENT
            elif user_id in capped:
                status = Message.Status.SKIPPED_CAP
            else:
                status = Message.Status.SENDING
            row = _claim(flow, composed, rendered, status, now, went)
            went = None
            if row is None:
                report.already += 1
                continue
            if status != Message.Status.SENDING:
                setattr(report, status, getattr(report, status) + 1)
                continue
            try:
                sender.send(message)
            except Exception as exc:
                logger.warning("flow %s: the e-mail to shopper %s failed: %r", flow.slug, user_id, exc)
                Message.objects.filter(pk=row.pk).update(status=Message.Status.FAILED, error=repr(exc)[:2000])
                report.failed += 1
                continue
            went = (row.pk, timezone.now())
            report.sent += 1
            impressions.append(_impression(flow, composed, row))
    finally:
        if went is not None:
            _mark_sent(*went)
        _store_impressions(impressions)


def _mark_sent(pk: int, at: datetime) -> None:
    Message.objects.filter(pk=pk).update(status=Message.Status.SENT, sent_at=at)


def _compose(flow: Flow, dues: list[Due], prices_before: dict[str, Any] | None = None) -> list[compose.Composed]:
    """compose.compose per language, each under it: the reasons serving words are in the shopper's language."""
    by_language: dict[str, list[Due]] = {}
    for due in dues:
        by_language.setdefault(due.language, []).append(due)
    composed: list[compose.Composed] = []
    for language, group in by_language.items():
        with translation.override(language or settings.LANGUAGE_CODE):
            composed.extend(compose.compose(flow, group, prices_before))
    return composed


def capped_users(flow: Flow, user_ids: list[str], now: datetime) -> set[str]:
    """Which of these shoppers an e-mail of this flow would exceed a cap for: any flow's within the last
    EMAIL_MIN_HOURS_BETWEEN hours, or this flow's within its cap_days, counted in calendar days (UTC): an e-mail
    sent at 20:00 does not hold back the next week's at 08:00 when the shopper's best hour moved."""
    if not user_ids:
        return set()
    capped: set[str] = set()
    hours = float(rec_settings.EMAIL_MIN_HOURS_BETWEEN)
    recent = Message.objects.filter(user_id__in=user_ids, status__in=COUNTED)
    if hours > 0:
        capped |= set(recent.filter(created_at__gte=now - timedelta(hours=hours)).values_list("user_id", flat=True))
    if flow.cap_days > 0:
        today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        mine = recent.filter(flow=flow, created_at__gte=today - timedelta(days=flow.cap_days - 1))
        capped |= set(mine.values_list("user_id", flat=True))
    return capped


def _record(
    flow: Flow,
    user_id: str,
    period: str,
    status: str,
    now: datetime,
    dry_run: bool,
    *,
    products: list[str] | None = None,
    error: str = "",
    variant: str = "",
) -> int:
    """Write a row for an e-mail that does not go out (its key is then spent for the period); 1 if written (or, on a
    dry run, would be), 0 if another run wrote the key first."""
    if dry_run:
        return 1
    row = Message(
        key=message_key(flow, user_id, period),
        flow=flow,
        user_id=user_id,
        period=period,
        status=status,
        products=products or [],
        variant=variant,
        created_at=now,
        error=error[:2000],
    )
    return 1 if _insert(row) else 0


def _claim(
    flow: Flow,
    composed: compose.Composed,
    rendered: compose.Rendered,
    status: str,
    now: datetime,
    went: tuple[int, datetime] | None = None,
) -> Message | None:
    """Insert the e-mail's row, committed before it is sent ("sending", or the skip the batch's last look found);
    None when another run holds the key. `went` (the previous e-mail's row and when it went out) is marked sent in
    the same statement."""
    due = composed.due
    row = Message(
        key=message_key(flow, due.user_id, due.period),
        flow=flow,
        user_id=due.user_id,
        period=due.period,
        status=status,
        recommendation_id=composed.block.recommendation_id,
        variant=composed.block.variant,
        products=rendered.products,
        subject=rendered.subject,
        created_at=now,
    )
    return row if _insert(row, went) else None


def _insert(row: Message, went: tuple[int, datetime] | None = None) -> bool:
    """Insert a Message; False when its key is taken (another run wrote it first). One INSERT: outside a transaction
    (as the task and the command run) it commits by itself, and a key taken raises before anything is written.

    `went`: a row to mark sent first. On PostgreSQL both are one statement (`WITH ... UPDATE` and `INSERT ... ON
    CONFLICT DO NOTHING`): a sent e-mail then costs one round trip, its claim, instead of a claim and a mark. The
    previous e-mail is marked when the next is claimed, right after its send; a process that dies between the two
    leaves it "sending", as one dying between a send and its mark always did (at most once either way)."""
    if connection.vendor == "postgresql":
        return _insert_postgresql(row, went)
    if went is not None:
        _mark_sent(*went)
    try:
        if connection.in_atomic_block:  # a caller's transaction (tests): a savepoint keeps it usable after a clash
            with transaction.atomic():
                row.save(force_insert=True)
        else:
            row.save(force_insert=True)
    except IntegrityError:
        return False
    return True


def _insert_postgresql(row: Message, went: tuple[int, datetime] | None) -> bool:
    """`_insert` in one statement: a key taken inserts nothing (no error, so no savepoint inside a transaction)."""
    ops = connection.ops
    table = ops.quote_name(Message._meta.db_table)
    fields = [f for f in Message._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(ops.quote_name(f.column) for f in fields)
    values = [f.get_db_prep_save(f.pre_save(row, add=True), connection) for f in fields]
    statement = (
        f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))}) "  # noqa: S608
        f"ON CONFLICT ({ops.quote_name('key')}) DO NOTHING RETURNING {ops.quote_name('id')}"
    )
    if went is not None:
        statement = (
            f"WITH sent AS (UPDATE {table} SET {ops.quote_name('status')} = %s, "  # noqa: S608
            f"{ops.quote_name('sent_at')} = %s WHERE {ops.quote_name('id')} = %s) {statement}"
        )
        sent_at = Message._meta.get_field("sent_at").get_db_prep_save(went[1], connection)
        values = [Message.Status.SENT, sent_at, went[0], *values]
    with connection.cursor() as cursor:
        cursor.execute(statement, values)
        found = cursor.fetchone()
    if found is None:
        return False
    row.pk = found[0]
    row._state.adding, row._state.db = False, connection.alias
    return True


def _impression(flow: Flow, composed: compose.Composed, row: Message) -> Any:
    """The e-mail's block as an impression on email:<slug>: clicks name it, analytics count it."""
    block = composed.block
    return build_event(
        "impression",
        user_id=row.user_id,
        placement=flow.event_placement,
        recommendation_id=block.recommendation_id,
        variant=block.variant,
        context={
            "items": [item.product_id for item in block.items],
            "sources": [item.source for item in block.items],
            "message": row.key,
        },
        event_id=f"email-{block.recommendation_id}",
    )


def _store_impressions(events: list[Any]) -> None:
    """A batch's impressions in one insert, kept only for shoppers who did not refuse tracking on their account
    (insert_events drops those); a failure costs the impressions, never an e-mail."""
    if not events:
        return
    try:
        insert_events(events)
    except Exception:
        logger.exception("could not store the impressions of %d e-mails", len(events))


def _timing_notes(flow: Flow, user_id: str, user: Any, now: datetime) -> list[str]:
    """What the shopper's zone says of sending now: quiet hours, their best hour."""
    zone = timing.zones({user_id: user})[user_id]
    local = now.astimezone(zone)
    notes = []
    if timing.is_quiet(local.hour):
        notes.append(
            _("It is %(time)s for this shopper (%(zone)s), within quiet hours: the e-mail would wait for the morning.")
            % {"time": f"{local:%H:%M}", "zone": str(zone)}
        )
    if uses_best_hour(flow):
        hour = timing.best_hours([user_id], {user_id: zone}, now).get(user_id)
        if hour is None:
            notes.append(_("Too few events to learn this shopper's best hour: it would go as soon as it is due."))
        else:
            notes.append(
                _("This flow waits for the shopper's best hour, %(hour)s (%(zone)s), within a day of being due.")
                % {"hour": f"{hour:02d}:00", "zone": str(zone)}
            )
    return notes


def preview(flow: Flow, user_id: str, now: datetime | None = None) -> dict[str, Any]:
    """The e-mail this flow would send this shopper now, rendered exactly as it would go out, with what would stop it
    (consent, address, a cap, a weak list); for the admin. Writes nothing; its links record no click (no sent row)."""
    now = now or timezone.now()
    user = consent.load_users([user_id]).get(user_id)
    if user is None:
        return {"error": _("No user has the id “%(id)s”.") % {"id": user_id}}
    notes = []
    if not rec_settings.SITE_URL:
        notes.append(_("RECOMMENDATIONS['SITE_URL'] is not set: nothing is sent, and the links below are relative."))
    if not consent.may_email(user_id, flow.slug):
        notes.append(_("This shopper has not agreed to marketing e-mail, or left this flow: nothing would be sent."))
    address = consent.addresses({user_id: user}).get(user_id, "")
    if not address:
        notes.append(_("This shopper has no e-mail address: nothing would be sent."))
    if capped_users(flow, [user_id], now):
        notes.append(_("A frequency cap holds for this shopper now: this e-mail would be skipped."))
    trigger = trigger_of(flow)
    anchors = trigger.anchors(flow, now, [user_id]).get(user_id, ())
    if flow.trigger == Flow.Trigger.BROWSE_ABANDONMENT and not anchors:
        notes.append(_("This shopper viewed nothing in the flow's window: the trigger would not fire."))
    elif trigger.has_anchors and not anchors:
        notes.append(_("Nothing this shopper did sets this trigger off now: it would not fire."))
    notes.extend(_timing_notes(flow, user_id, user, now))
    before = trigger.prices_before(now, set(anchors))
    composed = _compose(flow, [Due(user_id, "preview", anchors, timing.language_of(user))], before)[0]
    if composed.good < flow.min_good_items:
        notes.append(
            _("Only %(good)d of the products come from the shopper's own lists (%(min)d needed): skipped as weak.")
            % {"good": composed.good, "min": flow.min_good_items}
        )
    if composed.held_out:
        notes.append(_("This shopper is in the hold-out arm of the flow's experiment: nothing would be sent."))
    rendered = compose.render(flow, composed, user)
    return {
        "rendered": rendered,
        "address": address,
        "notes": notes,
        "items": composed.block.items,
        "good": composed.good,
        "variant": composed.block.variant,
    }
