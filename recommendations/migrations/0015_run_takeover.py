"""Runs say who runs them and whether they are alive (heartbeat, attempts, worker, takeovers), and the beat sweeps
for runs whose worker was lost every minute (recommendations.tasks.recover_runs; training.liveness)."""

from django.db import migrations, models
from django.utils import timezone

TASK_NAME = "Recover runs whose worker was lost (every minute)"
TASK = "recommendations.tasks.recover_runs"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": TASK,
            "interval": every_minute,
            "args": "[]",
            "kwargs": "{}",
            "enabled": True,
            "description": "Send again the task of each precompute and retrain that is running without a heartbeat "
            "for RECOMMENDATIONS['RUN_STALE_SECONDS'] (its worker was lost); the run is taken over and finished once.",
        },
    )
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def delete_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    PeriodicTask.objects.filter(name=TASK_NAME, task=TASK).delete()
    IntervalSchedule.objects.filter(every=1, period="minutes", periodictask__isnull=True).delete()
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


class Migration(migrations.Migration):
    dependencies = [
        ("recommendations", "0014_consentchoice"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.AddField(
            model_name="precomputerun",
            name="attempts",
            field=models.PositiveIntegerField(
                default=0,
                help_text="How many times a worker started this run; more than one means a worker was lost",
                verbose_name="attempts",
            ),
        ),
        migrations.AddField(
            model_name="precomputerun",
            name="heartbeat_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="heartbeat at"),
        ),
        migrations.AddField(
            model_name="precomputerun",
            name="takeovers",
            field=models.JSONField(blank=True, default=list, verbose_name="takeovers"),
        ),
        migrations.AddField(
            model_name="precomputerun",
            name="worker",
            field=models.CharField(
                blank=True,
                default="",
                help_text="host:pid of the current attempt",
                max_length=200,
                verbose_name="worker",
            ),
        ),
        migrations.AddField(
            model_name="trainingrun",
            name="attempts",
            field=models.PositiveIntegerField(
                default=0,
                help_text="How many times a worker started this run; more than one means a worker was lost",
                verbose_name="attempts",
            ),
        ),
        migrations.AddField(
            model_name="trainingrun",
            name="takeovers",
            field=models.JSONField(blank=True, default=list, verbose_name="takeovers"),
        ),
        migrations.AddField(
            model_name="trainingrun",
            name="worker",
            field=models.CharField(
                blank=True,
                default="",
                help_text="host:pid of the current attempt",
                max_length=200,
                verbose_name="worker",
            ),
        ),
        migrations.RunPython(create_schedule, delete_schedule),
    ]
