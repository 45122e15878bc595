"""The two links in every e-mail, answered without a session or a login (a mail client, another device):

- `/e/c/<token>/` records a click on the flow's placement (`email:<slug>`) with the e-mail's recommendation id, so an
  add to cart or purchase of that product within ATTRIBUTION_HOURS is the flow's (tracking.attribution), and redirects
  to the product. The token names the e-mail and the product, not the shopper: the sent Message row (found by its
  recommendation id) says who got it and from which flow. A link altered by hand is a 400 page with a way home; an
  expired one still leads to the product but counts nothing.
- `/e/u/<token>/`: a POST of `List-Unsubscribe=One-Click` (RFC 8058: the mail client's own unsubscribe button, no
  cookies) unsubscribes the shopper from every flow at once; a GET shows a small preference page (pick flows, or leave
  all), whose form is a POST with a CSRF token like any other. CSRF is waived for the one-click POST alone. The token
  names the e-mail; its Message row names the shopper. Each leave is counted for the flow's analytics (an Unsubscribe
  row without the shopper), once: a second POST or an unticked flow already left writes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods

from recommendations import catalog
from recommendations.conf import rec_settings
from recommendations.models import Flow, Message, Unsubscribe
from recommendations.push import consent, tokens
from recommendations.tracking import record_event

logger = logging.getLogger(__name__)

ONE_CLICK = ("List-Unsubscribe", "One-Click")


def _home() -> str:
    return str(rec_settings.SITE_URL).rstrip("/") + "/" if rec_settings.SITE_URL else "/"


def with_campaign(url: str, flow: str) -> str:
    """A product URL with the flow as its campaign (utm_medium=email, utm_campaign=<slug>): the shop's own analytics
    count the visit as the flow's, and cold-start rules that match a campaign apply (tracking's campaign cookie)."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode({"utm_medium": "email", "utm_campaign": flow})) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _bad_link(request: HttpRequest, message: str) -> HttpResponse:
    response = render(request, "recommendations/email/bad_link.html", {"message": message, "home": _home()})
    response.status_code = HttpResponseBadRequest.status_code
    return response


@never_cache
@require_http_methods(["GET", "HEAD"])
def email_click(request: HttpRequest, token: str) -> HttpResponse:
    """Record the click (GET only: a HEAD is a link checker) and redirect to the product."""
    counted = True
    try:
        click = tokens.read_click(token)
    except tokens.ExpiredToken:
        click, counted = tokens.read_click(token, expired_ok=True), False
    except tokens.BadToken:
        return _bad_link(request, _("This link is not valid. It may have been cut or changed on the way."))
    sent = _sent_message(click)
    flow = sent.flow.slug if sent is not None else click.flow
    product = catalog.get_products([click.product_id]).get(click.product_id)
    url = getattr(product, "get_absolute_url", None)
    target = (with_campaign(url(), flow) if flow else url()) if callable(url) else _home()
    if counted and request.method == "GET" and sent is not None:
        # No request: the browser that opened the e-mail may be anyone's, and its cookies say nothing about who
        # got the e-mail; record_event still drops it for a shopper who refused tracking on their account.
        record_event(
            None,
            "click",
            user_id=sent.user_id,
            product_id=click.product_id,
            placement=sent.flow.event_placement,
            recommendation_id=sent.recommendation_id,
            context={"via": "email"},
        )
    return HttpResponseRedirect(target)


def _sent_message(click: tokens.Click) -> Message | None:
    """The e-mail a click link belongs to, if it went out: a preview's links (the admin) or a failed send's count no
    click. A first-format token also names the shopper, who must be the message's."""
    rows = Message.objects.select_related("flow").filter(
        recommendation_id=click.recommendation_id, status=Message.Status.SENT
    )
    if click.user_id:
        rows = rows.filter(user_id=click.user_id)
    return rows.only("user_id", "recommendation_id", "flow__slug").first()


@dataclass(frozen=True)
class Recipient:
    """Whom an unsubscribe link is about: the shopper and the slug of the flow whose e-mail carried it."""

    user_id: str
    flow: str


def _recipient(found: tokens.Unsubscribe) -> Recipient | None:
    """The shopper and flow of an unsubscribe link: from its message, or (first-format token) from the token itself;
    None when no e-mail has that recommendation id (a preview's link, or a message erased with its shopper)."""
    if not found.recommendation_id:
        return Recipient(found.user_id, found.flow)
    row = (
        Message.objects.filter(recommendation_id=found.recommendation_id)
        .select_related("flow")
        .only("user_id", "flow__slug")
        .first()
    )
    return Recipient(row.user_id, row.flow.slug) if row is not None else None


def _count_leave(flows: list[str], kind: str) -> None:
    """An Unsubscribe row per flow left (slugs of flows since deleted are left out): the flow's analytics count them."""
    rows = [Unsubscribe(flow=f, kind=kind) for f in Flow.objects.filter(slug__in=flows)]
    if rows:
        Unsubscribe.objects.bulk_create(rows)


@csrf_exempt
@never_cache
@require_http_methods(["GET", "POST"])
def email_unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """One-click POST: unsubscribe at once. GET: the preference page. Another POST: the page's form (CSRF-checked)."""
    one_click = request.method == "POST" and request.POST.get(ONE_CLICK[0]) == ONE_CLICK[1]
    try:
        found = tokens.read_unsubscribe(token)
    except tokens.ExpiredToken:
        if not one_click:
            return _bad_link(request, _("This link has expired. Sign in to the shop to change your e-mail choices."))
        # Leaving is honoured whatever the link's age: it can only stop e-mail, and refusing it would be a complaint.
        found = tokens.read_unsubscribe(token, expired_ok=True)
    except tokens.BadToken:
        return _bad_link(request, _("This link is not valid. It may have been cut or changed on the way."))
    who = _recipient(found)
    if who is None and one_click:
        # Signed by us, but no e-mail of that id is on record: its shopper was erased (their consent with them) or it
        # is a preview's link. Nothing is sent to anyone under it, and a mail client's "unsubscribe" must not fail.
        return HttpResponse(_("You are unsubscribed."), content_type="text/plain; charset=utf-8")
    if who is None:
        return _bad_link(request, _("This link is not valid. It may have been cut or changed on the way."))
    if one_click:
        subscribed, _left = consent.preferences(who.user_id)
        consent.set_email_consent(who.user_id, False, via=who.flow)
        if subscribed:
            _count_leave([who.flow], Unsubscribe.Kind.ONE_CLICK)
        return HttpResponse(_("You are unsubscribed."), content_type="text/plain; charset=utf-8")
    if request.method == "POST":
        return csrf_protect(_save_preferences)(request, who)
    return _preferences_page(request, who)


def _offered() -> list[Flow]:
    return list(Flow.objects.filter(enabled=True).order_by("name", "pk"))


def _preferences_page(request: HttpRequest, who: Recipient, saved: bool = False) -> HttpResponse:
    subscribed, left = consent.preferences(who.user_id)
    flows = [{"slug": f.slug, "name": f.name, "wanted": subscribed and f.slug not in left} for f in _offered()]
    origin = Flow.objects.filter(slug=who.flow).first()
    context = {"flows": flows, "subscribed": subscribed, "origin": origin, "saved": saved, "home": _home()}
    return render(request, "recommendations/email/preferences.html", context)


def _save_preferences(request: HttpRequest, who: Recipient) -> HttpResponse:
    subscribed, left = consent.preferences(who.user_id)
    if request.POST.get("action") == "all":
        consent.set_email_consent(who.user_id, False, via=who.flow)
        if subscribed:
            _count_leave([who.flow], Unsubscribe.Kind.ALL)
    else:
        offered = {f.slug for f in _offered()}
        row = consent.set_flow_choices(who.user_id, request.POST.getlist("flows"), offered)
        if subscribed:
            _count_leave(sorted(set(row.unsubscribed_flows or []) - left), Unsubscribe.Kind.FLOW)
    return _preferences_page(request, who, saved=True)
