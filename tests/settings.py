"""The suite's settings: the demo shop's, plus `tests.shapes`, a host catalog shaped unlike the shop's."""

from shop.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.shapes"]  # noqa: F405
