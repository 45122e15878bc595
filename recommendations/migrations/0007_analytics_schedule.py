"""The analytics schedule: rebuild yesterday's and today's PlacementDay rows every hour, editable in the admin."""

from django.db import migrations
from django.utils import timezone

TASK_NAME = "Refresh analytics (hourly)"
TASK = "recommendations.tasks.refresh_analytics"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every_hour, _ = IntervalSchedule.objects.get_or_create(every=1, period="hours")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": TASK,
            "interval": every_hour,
            "args": "[]",
            "kwargs": "{}",
            "enabled": True,
            "description": "Count yesterday's and today's impressions, clicks and attributed sales per placement "
            "(the admin's Analytics page). Change the interval or disable it here.",
        },
    )
    # A running beat reloads its schedule when this timestamp moves (historic models send no signals).
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def delete_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    PeriodicTask.objects.filter(name=TASK_NAME, task=TASK).delete()
    IntervalSchedule.objects.filter(every=1, period="hours", periodictask__isnull=True).delete()
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


class Migration(migrations.Migration):
    dependencies = [
        ("recommendations", "0006_seed_placements"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, delete_schedule)]
