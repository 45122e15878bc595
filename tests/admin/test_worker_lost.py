"""What staff see of a run whose worker was lost: the attempts column in both run lists, and on the run's page which
worker was lost, at what stage and when it was taken over (or that the run gave up)."""

from __future__ import annotations

from datetime import timedelta
from html import unescape

import pytest
from django.urls import reverse
from django.utils import timezone

from recommendations.models import PrecomputeRun, TrainingRun
from recommendations.training import liveness
from tests.factories import recommendations_with

pytestmark = pytest.mark.django_db

LOST = "worker-7:4242/0badc0de"


def taken_over(model: type, **fields) -> object:
    """A run whose worker `LOST` died at stage "similar" and that this process took over."""
    beat = timezone.now() - timedelta(hours=1)
    run = model.objects.create(status="running", attempts=1, heartbeat_at=beat, worker=LOST, stage="similar", **fields)
    assert liveness.claim(model, run.pk).took_over
    return model.objects.get(pk=run.pk)


def page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200
    return unescape(response.content.decode())


@pytest.mark.parametrize("model", [PrecomputeRun, TrainingRun])
def test_the_run_lists_and_pages_say_a_worker_was_lost_and_the_run_taken_over(staff_client, model):
    run = taken_over(model)
    untouched = model.objects.create(status="succeeded", attempts=1)
    name = model._meta.model_name

    listing = page(staff_client, reverse(f"admin:recommendations_{name}_changelist"))
    assert "2 (worker lost; taken over at" in listing
    detail = page(staff_client, reverse(f"admin:recommendations_{name}_change", args=[run.pk]))
    assert (
        "Taken over at" in detail and "(attempt 2): worker worker-7:4242/0badc0de was lost at stage similar" in detail
    )
    assert run.worker in detail  # the attempt running it now
    plain = page(staff_client, reverse(f"admin:recommendations_{name}_change", args=[untouched.pk]))
    assert "Taken over at" not in plain and "worker lost;" not in plain


def test_a_run_that_gave_up_says_so_on_its_page(staff_client, settings):
    settings.RECOMMENDATIONS = recommendations_with(RUN_MAX_ATTEMPTS=1)
    beat = timezone.now() - timedelta(hours=1)
    run = PrecomputeRun.objects.create(status="running", attempts=1, heartbeat_at=beat, worker=LOST, stage="for_you")
    assert liveness.claim(PrecomputeRun, run.pk).why == "exhausted"

    detail = page(staff_client, reverse("admin:recommendations_precomputerun_change", args=[run.pk]))
    assert "Gave up at" in detail and "was lost at stage for_you" in detail and "no attempts left" in detail
    assert "Gave up after 1 attempts" in detail  # the run's error
