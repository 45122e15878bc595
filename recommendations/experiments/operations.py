"""What staff do with an experiment: the checks, Start, Stop and Promote, and the cache flush on every save.

The running experiments are read through one cache key (`assignment.running`), flushed whenever an experiment or a
variant is saved or deleted (as `tunables.snapshot` does for placements and rules), so serving pays one cache read per
block and no query.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone
from django.utils.translation import gettext as _

from recommendations import tunables
from recommendations.experiments import assignment
from recommendations.models import Experiment, ExperimentVariant, Flow, Placement

# What promoting an arm of each strategy sets as the placement's strategy (model versions serve through "model").
PLACEMENT_STRATEGY = {
    ExperimentVariant.Strategy.MODEL: Placement.Strategy.MODEL,
    ExperimentVariant.Strategy.MODEL_VERSION: Placement.Strategy.MODEL,
    ExperimentVariant.Strategy.TRENDING: Placement.Strategy.TRENDING,
    ExperimentVariant.Strategy.POPULAR: Placement.Strategy.POPULAR,
    ExperimentVariant.Strategy.NEWEST: Placement.Strategy.NEWEST,
}


SEEDED_FIELDS = ("title", "size", "allow_bought", "max_per_category", "max_per_brand", "fallback")
EMAIL_PREFIX = "email:"  # an e-mail flow's placement, email:<slug>: its experiment splits the flow's shoppers


def experiment_placements() -> list[str]:
    """Where an experiment can run: every page placement, and every e-mail flow's email:<slug>."""
    flows = Flow.objects.order_by("slug").values_list("slug", flat=True)
    return [*tunables.placement_names(), *(EMAIL_PREFIX + slug for slug in flows)]


class ExperimentError(Exception):
    """An operation staff asked for that cannot be done; the message is the sentence they see."""


def flush() -> None:
    assignment.forget()
    tunables.flush()  # serving reads experiments through the tunables bundle and its version


@receiver(post_save, sender=Experiment)
@receiver(post_delete, sender=Experiment)
@receiver(post_save, sender=ExperimentVariant)
@receiver(post_delete, sender=ExperimentVariant)
def _flush_on_change(sender: Any, **kwargs: Any) -> None:
    # Now, and again after commit: a reader between the two would otherwise cache the old rows for CACHE_TTL.
    flush()
    transaction.on_commit(flush)


def variant_problems(name: str, share: float | None, strategy: str, training_run: Any) -> list[str]:
    """What is wrong with one variant as staff filled it in (empty when nothing is)."""
    problems = []
    if share is None or not share > 0 or not math.isfinite(share):
        problems.append(_("Variant “%(name)s”: the share must be more than 0.") % {"name": name})
    if strategy == ExperimentVariant.Strategy.MODEL_VERSION:
        if training_run is None:
            problems.append(_("Variant “%(name)s”: a given model version needs a training run.") % {"name": name})
        elif not training_run.has_artefact:
            problems.append(
                _("Variant “%(name)s”: training run #%(pk)s has no model to serve.")
                % {"name": name, "pk": training_run.pk}
            )
    elif training_run is not None:
        problems.append(
            _("Variant “%(name)s”: only a “given trained model version” arm takes a training run.") % {"name": name}
        )
    return problems


def start_problems(experiment: Experiment) -> list[str]:
    """Why this experiment cannot start now (empty when it can): the checks the admin form makes, made again at Start
    (a training run's artefact may have been pruned since), plus one running experiment per placement."""
    problems = []
    if experiment.placement not in experiment_placements():
        problems.append(_("There is no placement called “%(name)s”.") % {"name": experiment.placement})
    variants = list(experiment.variants.select_related("training_run").order_by("pk"))
    if len(variants) < 2:
        problems.append(_("An experiment needs at least two variants."))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        problems.append(_("The variants' names must differ."))
    for v in variants:
        problems += variant_problems(v.name, v.share, v.strategy, v.training_run)
        if v.strategy == ExperimentVariant.Strategy.HOLDOUT and not experiment.placement.startswith(EMAIL_PREFIX):
            problems.append(
                _("Variant “%(name)s”: only an e-mail flow's experiment can hold shoppers out.") % {"name": v.name}
            )
    if (
        Experiment.objects.filter(placement=experiment.placement, status=Experiment.Status.RUNNING)
        .exclude(pk=experiment.pk)
        .exists()
    ):
        problems.append(_already_runs(experiment))
    return problems


def start(experiment_id: int) -> Experiment:
    """Start (or restart) an experiment: a fresh salt and started_at, so the report counts from now."""
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().get(pk=experiment_id)
        # Lock the placement's experiments so two Starts on one placement cannot both pass the check below.
        list(Experiment.objects.select_for_update().filter(placement=experiment.placement).values_list("pk"))
        if experiment.status == Experiment.Status.RUNNING:
            raise ExperimentError(_("It is already running."))
        if experiment.winner_id is not None:
            raise ExperimentError(_("A winner was promoted; it cannot run again."))
        problems = start_problems(experiment)
        if problems:
            raise ExperimentError(" ".join(problems))
        experiment.status = Experiment.Status.RUNNING
        experiment.salt = secrets.token_hex(16)
        experiment.started_at = timezone.now()
        experiment.stopped_at = None
        try:
            with transaction.atomic():  # a savepoint, so the lookup below can still read after a refusal
                experiment.save(update_fields=["status", "salt", "started_at", "stopped_at"])
        except IntegrityError:
            # The row locks above cover the experiments that existed when they were taken; one committed as running
            # since (or by another path) is stopped here by rec_experiment_one_running_per_placement.
            raise ExperimentError(_already_runs(experiment)) from None
    return experiment


def _already_runs(experiment: Experiment) -> str:
    """The sentence Start gives when another experiment runs on the placement."""
    other = (
        Experiment.objects.filter(placement=experiment.placement, status=Experiment.Status.RUNNING)
        .exclude(pk=experiment.pk)
        .first()
    )
    if other is None:
        return _("Another experiment already runs on %(placement)s; stop it first.") % {
            "placement": experiment.placement
        }
    return _("“%(name)s” already runs on %(placement)s; stop it first.") % {
        "name": other.name,
        "placement": experiment.placement,
    }


def stop(experiment_id: int) -> Experiment:
    """Stop a running experiment: every shopper gets the placement's own behaviour again."""
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().get(pk=experiment_id)
        if experiment.status != Experiment.Status.RUNNING:
            raise ExperimentError(_("It is not running."))
        experiment.status = Experiment.Status.STOPPED
        experiment.stopped_at = timezone.now()
        experiment.save(update_fields=["status", "stopped_at"])
    return experiment


def promote(experiment_id: int, variant_id: int, by: str, start_activation: Callable[[int], str] | None = None) -> str:
    """Stop the experiment, record the winner and make its arm the placement's behaviour; returns what changed.

    trending / popular / newest set the placement's strategy; a model version is activated (hash-checked and loaded
    first; it then serves every placement, and a precompute is queued) and the placement goes back to "model"; the
    serving model's arm only puts the placement back on "model". Nothing changes when any step fails.

    `start_activation(run_id)`, when given, starts that activation elsewhere and says what it started (the admin's
    does so in a training worker or a background process, so the web process never loads a model); it is called
    inside this transaction, so work it defers to the commit starts only if the promotion is saved. Without it the
    model is loaded and activated here, in this process.
    """
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().get(pk=experiment_id)
        variant = experiment.variants.select_related("training_run").filter(pk=variant_id).first()
        if variant is None:
            raise ExperimentError(_("Variant #%(pk)s is not an arm of this experiment.") % {"pk": variant_id})
        if experiment.status == Experiment.Status.DRAFT:
            raise ExperimentError(_("It has not run yet, so there is no winner to promote."))
        done = []
        if variant.strategy == ExperimentVariant.Strategy.MODEL_VERSION:
            from recommendations.training import artefacts, runs

            if variant.training_run_id is None:
                raise ExperimentError(_("Variant “%(name)s” names no training run.") % {"name": variant.name})
            run = variant.training_run
            if not run.is_serving and start_activation is not None:
                if not run.has_artefact:
                    raise ExperimentError(
                        _("Training run #%(pk)s was not activated: run #%(pk)s has no model to serve.") % {"pk": run.pk}
                    )
                done.append(start_activation(run.pk))
            elif not run.is_serving:
                try:
                    runs.activate(run.pk, by=by)
                except (runs.TrainingError, artefacts.ArtefactError) as exc:
                    raise ExperimentError(
                        _("Training run #%(pk)s was not activated: %(error)s.") % {"pk": run.pk, "error": exc}
                    ) from None
                done.append(f"activated training run #{run.pk}")
            else:
                done.append(f"training run #{run.pk} already serves")
        if experiment.placement.startswith(EMAIL_PREFIX):
            done.append(_promote_in_flow(experiment, variant))
        else:
            done.append(_promote_in_placement(experiment, variant, by))
        experiment.status = Experiment.Status.STOPPED
        experiment.stopped_at = experiment.stopped_at or timezone.now()
        experiment.winner = variant
        experiment.save(update_fields=["status", "stopped_at", "winner"])
    return f"Promoted “{variant.name}”: " + "; ".join(done) + "."


def _promote_in_placement(experiment: Experiment, variant: ExperimentVariant, by: str) -> str:
    """The arm's strategy becomes the page placement's own (a Placement row, made from the settings if missing)."""
    from recommendations.conf import rec_settings

    strategy = PLACEMENT_STRATEGY[variant.strategy]
    config = rec_settings.PLACEMENTS.get(experiment.placement, {})
    row, created = Placement.objects.get_or_create(
        name=experiment.placement,
        defaults={
            **{key: config[key] for key in SEEDED_FIELDS if key in config},
            "fallback": list(config.get("fallback", [])),
            "strategy": strategy,
            "updated_by": by,
        },
    )
    if created or row.strategy != strategy:
        if not created:
            row.strategy, row.updated_by = strategy, by
            row.save(update_fields=["strategy", "updated_by", "updated_at"])
        return f"{experiment.placement} now serves “{row.get_strategy_display()}”"
    return f"{experiment.placement} already served “{row.get_strategy_display()}”"


def _promote_in_flow(experiment: Experiment, variant: ExperimentVariant) -> str:
    """A flow's experiment: a winning hold-out switches the flow off (sending nothing did as well or better); another
    arm leaves the flow as it is, filling from its placement, whose own strategy staff set on that placement."""
    flow = Flow.objects.filter(slug=experiment.placement.removeprefix(EMAIL_PREFIX)).first()
    if flow is None:
        return f"the flow of {experiment.placement} no longer exists"
    if variant.strategy == ExperimentVariant.Strategy.HOLDOUT:
        Flow.objects.filter(pk=flow.pk).update(enabled=False)
        return f"flow {flow.slug} is switched off"
    return f"flow {flow.slug} keeps filling from {flow.placement}; set the placement's strategy there to keep the arm's"
