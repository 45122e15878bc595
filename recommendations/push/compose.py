"""What one e-mail of a flow holds: its products, picked by the same serving pipeline as the flow's placement on a
page (rules, merchandising, experiments included), and the message rendered from templates.

`compose` builds a batch of shoppers' blocks in one render pass (profiles, lists and the active set read once per
batch); `good_items` counts the products that come from the shopper's own lists (a best-seller filler is not a reason
to e-mail anyone); `render` fills `recommendations/email/<slug or trigger>.html` and `.txt` (a shop overrides either,
for every flow of a kind or one flow), the subject and the RFC 8058 headers; `email_message` makes the
EmailMultiAlternatives Django's e-mail backend sends, so SMTP or any django-anymail provider works unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template import engines
from django.template.loader import select_template
from django.utils import translation
from django.utils.translation import gettext

from recommendations import catalog, serving
from recommendations.conf import rec_settings
from recommendations.experiments import assignment
from recommendations.models import ExperimentVariant, Flow, ProductProfile
from recommendations.push import tokens
from recommendations.push.triggers import Due, anchor_args, trigger_of
from recommendations.tracking.consent import opted_out_users

# Where an item came from that says something about this shopper (serving's sources): the rest (trending, best
# sellers, rules, pins, exploration) fill any block, so they do not make an e-mail worth sending.
GOOD_SOURCES = frozenset({"stored", "session", "history", "similar"})


@dataclass
class Composed:
    """One shopper's e-mail before rendering: the block serving built and the products that set the flow off."""

    due: Due
    block: serving.Block
    good: int
    viewed: list[Any] = field(default_factory=list)  # the anchors, as EmailItem
    held_out: bool = (
        False  # in the hold-out arm of the flow's experiment: composed (to compare like with like), not sent
    )


@dataclass
class EmailItem:
    """A product as the templates read it: the host's product, the profile's name and price, the tracked link."""

    product_id: str
    product: Any
    name: str
    price: Any
    reason: str = ""
    url: str = ""
    was_price: Any = None  # a price drop's: what it cost before


@dataclass
class Rendered:
    subject: str
    text: str
    html: str
    headers: dict[str, str]
    products: list[str]


def good_items(block: serving.Block) -> int:
    return sum(1 for item in block.items if item.source in GOOD_SOURCES)


def compose(flow: Flow, dues: list[Due], prices_before: dict[str, Any] | None = None) -> list[Composed]:
    """Each due shopper's block from the flow's placement, in one render pass for the batch; `prices_before` (the
    trigger's: what a product that got cheaper cost) goes on the products that set the flow off.

    A shopper who refused personalisation on their account gets the shared lists only (no good items: skipped as
    weak). The products that set the flow off lead a product placement (triggers.anchor_args: similar to the newest,
    bought_together with them all) and are left out of the list. Call it under the shoppers' language.
    """
    refused = opted_out_users(d.user_id for d in dues)
    holdouts = holdout_stamps(flow)
    composed = []
    with serving.render_pass() as memo:
        # Every shopper's events, lists and first candidates' profiles in a few statements for the whole batch.
        serving.read_ahead_many(
            flow.placement, (f"u:{d.user_id}" for d in dues if d.user_id not in refused), limit=flow.size
        )
        for due in dues:
            memo.source_titles.clear()  # one page per shopper: a block never skips a list another shopper's showed
            block = serving.recommend(
                flow.placement,
                shopper="" if due.user_id in refused else f"u:{due.user_id}",
                **anchor_args(flow.placement, due.anchors),
                exclude=due.anchors,
                limit=flow.size,
                preview=True,  # built afresh from the stored lists, never from or into the block cache
                experiment=flow.event_placement,  # an experiment on email:<slug> splits the flow's shoppers
            )
            held_out = bool(block.variant) and block.variant in holdouts
            composed.append(Composed(due=due, block=block, good=0, held_out=held_out))
        # The host's products for all, in one read when a template first needs one (the default ones never do).
        serving.attach_products_many([c.block for c in composed], lazy=True)
        for c in composed:
            c.good = good_items(c.block)
    anchors = {pid for c in composed for pid in c.due.anchors}
    if anchors:
        products = catalog.get_products(anchors)
        profiles = {p.product_id: p for p in ProductProfile.objects.filter(product_id__in=anchors)}
        for c in composed:
            c.viewed = [
                EmailItem(
                    product_id=pid,
                    product=products[pid],
                    name=profiles[pid].name if pid in profiles else str(products[pid]),
                    price=profiles[pid].price if pid in profiles else None,
                    was_price=(prices_before or {}).get(pid),
                )
                for pid in c.due.anchors
                if pid in products
            ]
    return composed


def holdout_stamps(flow: Flow) -> set[str]:
    """The variant stamps of the hold-out arms of the experiment running on the flow's placement (email:<slug>)."""
    return {
        assignment.stamp_of(v["experiment_id"], v["name"])
        for v in assignment.running_for(flow.event_placement) or []
        if v["strategy"] == ExperimentVariant.Strategy.HOLDOUT
    }


def _tracked(links: tokens.Links, c: Composed, item: EmailItem) -> EmailItem:
    # The link names the e-mail (its recommendation id) and the product, never the shopper: see tokens.
    item.url = links.click(tokens.Click(c.block.recommendation_id, item.product_id))
    return item


def _subject(flow: Flow, context: dict[str, Any]) -> str:
    """The flow's subject (or its trigger's), translated, then rendered as a template; one line, never escaped."""
    source = gettext(flow.subject or trigger_of(flow).default_subject)
    return " ".join(_subject_template(source).render(context).split())[:255]


@lru_cache(maxsize=256)
def _subject_template(source: str) -> Any:
    """A subject compiled once per wording and language, not once per e-mail (a template renders in any thread)."""
    return engines["django"].from_string("{% autoescape off %}" + source + "{% endautoescape %}")


def template_names(flow: Flow, extension: str) -> list[str]:
    """The templates an e-mail of this flow renders, first found wins: the flow's own, its trigger's."""
    return [f"recommendations/email/{flow.slug}.{extension}", f"recommendations/email/{flow.trigger}.{extension}"]


def render(flow: Flow, c: Composed, user: Any, links: tokens.Links | None = None) -> Rendered:
    """Subject, plain text and HTML of one shopper's e-mail, in their language (else LANGUAGE_CODE), with the
    unsubscribe link and headers (RFC 8058 one-click: List-Unsubscribe and List-Unsubscribe-Post). A sender passes
    one `links` for a batch."""
    links = links or tokens.Links()
    unsubscribe = links.unsubscribe(c.block.recommendation_id)
    with translation.override(c.due.language or settings.LANGUAGE_CODE):
        products = [
            _tracked(
                links,
                c,
                EmailItem(
                    product_id=item.product_id,
                    product=item.product,
                    name=item.name or str(item.product),
                    price=item.price,
                    reason=item.reason_text,
                ),
            )
            for item in c.block.items
        ]
        viewed = [_tracked(links, c, item) for item in c.viewed]
        context = {
            "flow": flow,
            "user": user,
            "products": products,
            "viewed": viewed,
            "unsubscribe_url": unsubscribe,
            "site_url": str(rec_settings.SITE_URL).rstrip("/") + "/",
        }
        subject = _subject(flow, context)
        context["subject"] = subject
        html = select_template(template_names(flow, "html")).render(context)
        text = select_template(template_names(flow, "txt")).render(context)
    headers = {
        "List-Unsubscribe": f"<{unsubscribe}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    mailto = rec_settings.EMAIL_UNSUBSCRIBE_MAILTO
    if mailto:
        headers["List-Unsubscribe"] += f", <mailto:{mailto}?{urlencode({'subject': 'unsubscribe'})}>"
    return Rendered(subject, text, html, headers, [item.product_id for item in c.block.items])


def email_message(rendered: Rendered, address: str, connection: Any = None) -> EmailMultiAlternatives:
    """The message Django's e-mail backend sends: plain text with the HTML as its alternative."""
    message = EmailMultiAlternatives(
        subject=rendered.subject,
        body=rendered.text,
        from_email=rec_settings.EMAIL_FROM or settings.DEFAULT_FROM_EMAIL,
        to=[address],
        headers=rendered.headers,
        connection=connection,
    )
    message.attach_alternative(rendered.html, "text/html")
    return message
