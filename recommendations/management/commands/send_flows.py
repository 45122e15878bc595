"""`manage.py send_flows [--flow slug] [--dry-run]`: send the flows' due e-mails now, with a progress bar per flow.

The hourly `recommendations.tasks.send_due_messages` task does the same from beat; run this where there is no broker
(from cron), to send one flow at once, or to see what a run would send (`--dry-run`: composed and counted, nothing
written or sent).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from recommendations.management.stage_bars import StageBars
from recommendations.models import Flow
from recommendations.push.sending import NotConfigured, send_due_messages


class Command(BaseCommand):
    help = "Send the due e-mails of every enabled flow (or one), each at most once, within the frequency caps."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--flow", help="Only this flow (its slug).")
        parser.add_argument("--dry-run", action="store_true", help="Compose and count; write and send nothing.")
        parser.add_argument("--no-progress", action="store_true", help="Do not draw progress bars.")

    def handle(self, *args: Any, **options: Any) -> None:
        slug = options["flow"]
        if slug is not None:
            flow = Flow.objects.filter(slug=slug).first()
            if flow is None:
                raise CommandError(_("No flow has the slug “%(slug)s”.") % {"slug": slug})
            if not flow.enabled:
                raise CommandError(_("The flow “%(slug)s” is not enabled.") % {"slug": slug})
        bars = StageBars(enabled=not options["no_progress"])
        try:
            summary = send_due_messages(slug, dry_run=options["dry_run"], progress=bars)
        except NotConfigured as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bars.close()
        if summary["interrupted"]:
            self.stdout.write(
                ngettext(
                    "%(count)d e-mail left “sending” by a process that died is marked failed, not sent again.",
                    "%(count)d e-mails left “sending” by a process that died are marked failed, not sent again.",
                    summary["interrupted"],
                )
                % {"count": summary["interrupted"]}
            )
        if not summary["flows"]:
            self.stdout.write(_("No enabled flow."))
        for flow_slug, counts in summary["flows"].items():
            if "error" in counts:
                self.stderr.write(_("%(flow)s: not sent: %(error)s") % {"flow": flow_slug, "error": counts["error"]})
                continue
            line = (
                _(
                    "%(flow)s: %(due)d due, %(sent)d would be sent, %(weak)d weak, %(cap)d capped, "
                    "%(consent)d without consent, %(address)d without an address, %(already)d already done."
                )
                if options["dry_run"]
                else _(
                    "%(flow)s: %(due)d due, %(sent)d sent, %(failed)d failed, %(weak)d weak, %(cap)d capped, "
                    "%(consent)d without consent, %(address)d without an address, %(already)d already done."
                )
            )
            self.stdout.write(
                line
                % {
                    "flow": flow_slug,
                    "due": counts["due"],
                    "sent": counts["sent"],
                    "failed": counts["failed"],
                    "weak": counts["skipped_weak"],
                    "cap": counts["skipped_cap"],
                    "consent": counts["not_consented"] + counts["skipped_no_consent"],
                    "address": counts["no_address"],
                    "already": counts["already"],
                }
            )
            if counts.get("waiting"):
                self.stdout.write(
                    _("%(flow)s: %(count)d waiting for their hour (quiet hours or best hour), sent by a later run.")
                    % {"flow": flow_slug, "count": counts["waiting"]}
                )
