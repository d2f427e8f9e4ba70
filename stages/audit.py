"""The ``audit`` stage: one hash-chained audit record per request, whatever
its fate.

Put it **first** in the pipeline.  After-steps run only for stages whose
before step ran, in reverse order, so the first stage is the only one that
sees every request (a denial by any later stage included) and the last to run
after it, when the outcome, usage and cost are final.

Its after-step returns once the record is kept: committed (in a batch with
other requests' records), or fsync'd to the local spool while the database is
unreachable.  By default a whole answer is sent first and its record kept
right after, off the client's latency; a gateway killed in between loses that
record.  ``commit_before_response: true`` releases a whole answer only once its
record is kept, for one database commit more per answer.  A stream's record is
kept when the stream ends.

``on_failure`` defaults to ``open`` here: while the database is unreachable,
requests are served and their records spooled.  ``closed`` refuses requests
(503 ``service_unavailable``) for as long as records cannot be committed.

A request in flight when its gateway process is killed (SIGKILL, the OOM
killer) still gets a record: the before step journals it as begun (one
unbuffered ``write`` of a short line, no fsync) and the after step as ended
once its record is kept; the next process started on the same spool directory
records every request begun and never ended with fate ``interrupted``, status
0, its admission time and request hash, and no response hash
(:mod:`sluicegate.core.audit.inflight`).  The limit: a kill keeps the journal
in the kernel's page cache, but a machine crash or power loss can lose the
lines written since the kernel last flushed them, and those requests then
have no record.

TODO(audit-preflight): requests refused before the pipeline runs (an
unparsable body, an unknown key, an unknown model) have no workspace pipeline
and so no audit record; the proxy would have to audit them itself.

``payloads`` says what is kept of the bodies besides their hashes: ``store``
(as sent), ``redact`` (personal data and secrets masked) or ``hash`` (nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from sluicegate.core.audit.capture import ResponseTap, request_digest, request_record
from sluicegate.core.audit.inflight import Begun
from sluicegate.core.audit.policy import RetentionConfig
from sluicegate.core.audit.writer import acquire, release
from sluicegate.core.errors import InfrastructureError
from sluicegate.core.http.passage import RELAY_TAPS
from sluicegate.core.stage import Deny, Stage, StageConfig

if TYPE_CHECKING:
    from sluicegate.core.context import RequestContext
    from sluicegate.core.services import Services


class AuditConfig(StageConfig):
    on_failure: Literal["open", "closed"] = Field(
        default="open",
        description="While the database is unreachable: open serves requests "
        "and spools their records; closed refuses requests with 503.",
    )
    payloads: Literal["store", "redact", "hash"] = Field(
        default="hash",
        description="Keep request and response bodies as sent (store), with "
        "personal data and secrets masked (redact), or only their hashes (hash).",
    )
    commit_before_response: bool = Field(
        default=False,
        description="Send a whole answer only once its record is kept, so no "
        "answer a client received can lack its record even if the gateway is "
        "killed; adds a database commit to every answer's latency.",
    )
    retention: RetentionConfig | None = Field(
        default=None,
        description="Days to keep payloads and records in the workspaces using "
        "this pipeline; a policy set with `sluicegate retention set` overrides "
        "it. Applied by `sluicegate retention run` and the scheduler.",
    )


class AuditStage(Stage):
    """Writes the audit record of every request in its after-step."""

    type_name = "audit"
    Config = AuditConfig
    must_be_first: ClassVar[bool] = True
    """Only the first stage's after-step sees every request; see the module."""

    def __init__(self, config: AuditConfig, services: Services) -> None:
        super().__init__(config, services)
        self.writer = acquire(services)

    @property
    def holds_answers(self) -> bool:
        return bool(self.config.commit_before_response)

    async def before(self, ctx: RequestContext) -> Deny | None:
        tap = ResponseTap(keep=self.config.payloads != "hash")
        ctx.scratch[self.id] = tap
        ctx.scratch.setdefault(RELAY_TAPS, []).append(tap)
        self.writer.journal.begin(Begun.of(ctx, request_digest(ctx)))
        if self.writer.degraded and not self.fails_open:
            raise InfrastructureError(
                "database",
                "audit records cannot be committed, so this audit stage "
                "(on_failure: closed) refuses requests until the database answers",
            )
        return None

    async def after(self, ctx: RequestContext) -> None:
        # TODO(audit-refuse): if the record can be neither committed nor spooled
        # (spool disk full), submit raises, the runner logs it and the answer is
        # still sent; on_failure: closed should refuse it instead.
        tap = ctx.scratch.get(self.id)
        record = request_record(
            ctx, self.config.payloads, tap if isinstance(tap, ResponseTap) else None
        )
        await self.writer.submit(record)
        self.writer.journal.end(ctx.request_id)

    async def close(self) -> None:
        await release(self.services, self.writer)
