"""When the report reads a comparison at all: enough shoppers in each arm and outcomes on both sides."""

from __future__ import annotations

import pytest

from recommendations.experiments import report as stats

pytestmark = pytest.mark.django_db


def test_enough_data_needs_shoppers_in_each_arm_and_outcomes_on_both_sides():
    least = stats.MIN_SHOPPERS_PER_ARM
    assert not stats.enough_data(1, 3, 2, 3)
    assert not stats.enough_data(10, least - 1, 10, 1000)
    assert not stats.enough_data(0, 1000, 0, 1000)  # nobody clicked: no interval to speak of
    assert not stats.enough_data(least, least, least, least)  # everybody clicked, likewise
    assert stats.enough_data(10, 1000, 0, 1000)  # the arm never converted, the control did: readable
    assert stats.enough_data(50, 1000, 80, 1000)
