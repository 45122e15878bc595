"""What the app tells itself happened: Signal objects only, no receivers.

Lower layers (training, the lists, tracking) send these instead of importing what must react; the receivers in
`recommendations.receivers`, wired in `AppConfig.ready()`, act on them. So a layer never reaches up, not even
inside a function.
"""

from django.dispatch import Signal

# A trained model now serves (the gate passed, or staff put an earlier one back). kwargs: run_id.
# Sent inside the activating transaction; the receiver queues a precompute for when it commits.
model_activated = Signal()

# A recommendation set became the one readers see. kwargs: set_id. Sent after the switch committed.
set_activated = Signal()

# Events were stored. kwargs: shoppers (whose cached blocks are now stale) and tasted (those whose events say
# something about their taste, so their lists should be refreshed). Receivers mark and schedule.
events_stored = Signal()

# Asked by `health.run_checks` for the checks that only a higher layer can make (the broker and a worker answering:
# tasks.task_mode says whether there is one). Each receiver returns a list of health.Check.
health_checks = Signal()
