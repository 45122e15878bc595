"""The retention schedule: delete events past EVENT_RETENTION_DAYS once a day, editable in the admin.

With retention off (the app's default) the task deletes nothing; the schedule is there so that setting the number is
all a shop has to do.
"""

from django.db import migrations
from django.utils import timezone

TASK_NAME = "Apply event retention (daily)"
TASK = "recommendations.tasks.apply_retention"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every_day, _ = IntervalSchedule.objects.get_or_create(every=1, period="days")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": TASK,
            "interval": every_day,
            "args": "[]",
            "kwargs": "{}",
            "enabled": True,
            "description": "Delete events older than RECOMMENDATIONS['EVENT_RETENTION_DAYS'] (impressions: "
            "IMPRESSION_RETENTION_DAYS) in batches; nothing while both are None. Change the interval or disable it here.",
        },
    )
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def delete_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    PeriodicTask.objects.filter(name=TASK_NAME, task=TASK).delete()
    IntervalSchedule.objects.filter(every=1, period="days", periodictask__isnull=True).delete()
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


class Migration(migrations.Migration):
    dependencies = [
        ("recommendations", "0012_erasurerequest"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, delete_schedule)]
