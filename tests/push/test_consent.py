"""Marketing e-mail consent: only an opt-in counts by default, leaving a flow leaves only it, a deleted user's
consent and e-mail record go with them, and the settings are checked at start-up."""

from __future__ import annotations

import pytest

from recommendations.conf import check_settings
from recommendations.models import EmailConsent, Message
from recommendations.push import consent
from recommendations.push.sending import send_due_messages
from tests.factories import make_user, recommendations_with

pytestmark = pytest.mark.django_db


def test_only_an_opt_in_counts_and_a_flow_left_is_left_alone(db):
    ann, bob, cy = (make_user(n) for n in ("c-ann", "c-bob", "c-cy"))
    consent.set_email_consent(ann.pk, True)
    consent.set_email_consent(bob.pk, True)
    consent.set_flow_choices(str(bob.pk), wanted=["browse"], offered=["weekly", "browse"])
    ids = [str(u.pk) for u in (ann, bob, cy)]
    assert consent.consenting(ids, "weekly") == {str(ann.pk)}
    assert consent.consenting(ids, "browse") == {str(ann.pk), str(bob.pk)}
    assert set(consent.audience()) == {str(ann.pk), str(bob.pk)}
    consent.set_email_consent(ann.pk, False, via="weekly")
    assert consent.consenting(ids, "browse") == {str(bob.pk)}


def test_a_deleted_user_takes_their_consent_and_email_record_along(smtp, push_shop, weekly):
    send_due_messages()
    ann = push_shop.users["ann"]
    ann_id = str(ann.pk)
    assert Message.objects.filter(user_id=ann_id).exists()
    ann.delete()
    assert not EmailConsent.objects.filter(user_id=ann_id).exists()
    assert not Message.objects.filter(user_id=ann_id).exists()
    assert Message.objects.filter(user_id=str(push_shop.users["bob"].pk)).exists()


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"SITE_URL": "shop.example"}, "SITE_URL"),
        ({"EMAIL_CONSENT": "no.such.module.check"}, "EMAIL_CONSENT"),
        ({"EMAIL_MIN_HOURS_BETWEEN": -1}, "EMAIL_MIN_HOURS_BETWEEN"),
        ({"EMAIL_BATCH_SIZE": 0}, "EMAIL_BATCH_SIZE"),
    ],
)
def test_the_email_settings_are_checked(settings, values, problem):
    good = recommendations_with(SITE_URL="https://shop.example")
    settings.RECOMMENDATIONS = {**good, **values}
    errors = [e for e in check_settings() if e.id == "recommendations.E015"]
    assert len(errors) == 1 and problem in errors[0].msg
    settings.RECOMMENDATIONS = good
    assert not [e for e in check_settings() if e.id == "recommendations.E015"]
