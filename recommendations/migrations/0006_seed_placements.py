"""Seed one Placement row per configured surface, from RECOMMENDATIONS["PLACEMENTS"] as it is at migrate time.

From then on staff edit the rows in the admin; the setting still serves any placement that has no row.
"""

from django.db import migrations

FIELDS = ("title", "size", "allow_bought", "max_per_category", "max_per_brand", "fallback")


def seed(apps, schema_editor):
    from recommendations.conf import rec_settings

    Placement = apps.get_model("recommendations", "Placement")
    for name, config in rec_settings.PLACEMENTS.items():
        values = {key: config[key] for key in FIELDS if key in config}
        values["fallback"] = list(values.get("fallback", []))
        Placement.objects.get_or_create(name=name, defaults=values)


def unseed(apps, schema_editor):
    pass  # rows staff may have edited are left alone


class Migration(migrations.Migration):
    dependencies = [("recommendations", "0005_admin_rules_experiments")]

    operations = [migrations.RunPython(seed, unseed)]
