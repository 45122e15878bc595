"""The suite's settings: the demo shop's, plus `tests.shapes`, a host catalog shaped unlike the shop's."""

from django.conf import global_settings

from shop.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.shapes"]  # noqa: F405

# The suite's shoppers are tracked unless a test says otherwise (opt-out, as where the law allows it): the tests are
# about what tracking does. tests/tracking/test_consent.py and the consent browser test run the app's own default
# (CONSENT_REQUIRED = True: nobody is tracked before agreeing), which the demo shop keeps.
RECOMMENDATIONS = {**RECOMMENDATIONS, "CONSENT_REQUIRED": False}  # noqa: F405
# No quiet hours for e-mail (a flow sent at night would wait for the morning, so the suite would pass by day only);
# tests/push/test_timing.py sets them.
RECOMMENDATIONS["EMAIL_QUIET_HOURS"] = None
# Django's default hasher takes ~0.6 s per password on 2 cores, and the suite makes and logs in hundreds of users:
# a fast hasher first (tests only; the shop's settings keep Django's defaults), the defaults after it so a hash made
# elsewhere still verifies.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *global_settings.PASSWORD_HASHERS]
