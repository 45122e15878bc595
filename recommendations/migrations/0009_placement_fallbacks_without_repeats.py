"""Built-in placement rows still on the fallback 0006 seeded get the new default (issue 17, items 11 and 12).

bought_together no longer fills from similar products and trending (a filler under "Frequently bought together"
said what was not so), and for_you falls back to best sellers instead of trending (a new visitor saw the trending
list twice, under "Recommended for you" and "Trending now"). A row staff changed is left as they set it.
"""

from django.db import migrations

CHANGES = {
    # name: (the fallback 0006 seeded from the old defaults, the new default)
    "bought_together": (["rules", "similar", "trending_category", "trending", "popular"], []),
    "for_you": (["rules", "trending_category", "trending", "popular"], ["rules", "popular"]),
}


def forwards(apps, schema_editor):
    Placement = apps.get_model("recommendations", "Placement")
    for name, (old, new) in CHANGES.items():
        for row in Placement.objects.filter(name=name):
            if list(row.fallback or []) == old:
                row.fallback = new
                row.save(update_fields=["fallback"])


def backwards(apps, schema_editor):
    Placement = apps.get_model("recommendations", "Placement")
    for name, (old, new) in CHANGES.items():
        for row in Placement.objects.filter(name=name):
            if list(row.fallback or []) == new:
                row.fallback = old
                row.save(update_fields=["fallback"])


class Migration(migrations.Migration):
    dependencies = [("recommendations", "0008_experiment_one_running_event_variant_index")]

    operations = [migrations.RunPython(forwards, backwards)]
