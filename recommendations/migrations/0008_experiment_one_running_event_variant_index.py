"""One running experiment per placement, held by the database; an index for the experiment report's reads.

The event table is the big, append-only one: on PostgreSQL its index is built CONCURRENTLY so ingest keeps writing
while it builds (hence a non-atomic migration); other databases build it the ordinary way.
"""

from typing import Any

from django.db import migrations, models


class AddIndexConcurrentlyOnPostgres(migrations.AddIndex):
    """AddIndex that does not block writes to the table on PostgreSQL (CREATE INDEX CONCURRENTLY)."""

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.add_index(model, self.index, concurrently=True)
        else:
            schema_editor.add_index(model, self.index)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.remove_index(model, self.index, concurrently=True)
        else:
            schema_editor.remove_index(model, self.index)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("recommendations", "0007_analytics_schedule"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="experiment",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status", "running")),
                fields=("placement",),
                name="rec_experiment_one_running_per_placement",
            ),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="event",
            index=models.Index(
                condition=models.Q(("variant", ""), _negated=True),
                fields=["variant", "occurred_at"],
                name="rec_event_variant_time",
            ),
        ),
    ]
