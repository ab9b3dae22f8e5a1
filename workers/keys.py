"""Every Redis key of one deployment, derived from its prefix (``insid3`` by default)::

    p:jobs             stream of jobs, consumer group "workers", XADD ... MAXLEN ~ STREAM_MAXLEN
    p:dead             stream of dead letters (a job's fields plus error, attempts, consumer)
    p:inbox:<client>   list: the replies to one API process (RPUSH by workers, BLMPOP by the API)
    p:ref:<id>         hash {features, info}: a reference (fp16 features), with a TTL
    p:refs             sorted set of reference ids by creation time (listing)
    p:refs:expiry      sorted set of reference ids by expiry time (pruning of the listing)
    p:tenant:<t>:refs         the same two sets for the references of tenant <t> (its listing and
    p:tenant:<t>:refs:expiry  its quota); tenant ids never hold ':' (``app.auth.TENANT_ID``)
    p:worker:<name>    a live worker's description, expires unless its heartbeat renews it
    p:alive            exists while at least one worker is alive (renewed by every heartbeat)
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "workers"  # the consumer group of the job stream
STREAM_MAXLEN = 10_000  # safety cap of XADD; must stay far above any backlog bound
DEAD_MAXLEN = 10_000
INBOX_TTL_MS = 600_000  # an inbox outlives its API process by this much


@dataclass(frozen=True)
class Keys:
    """Every Redis key of one deployment, derived from its prefix."""

    prefix: str = "insid3"

    @property
    def stream(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:dead"

    @property
    def references(self) -> str:
        return f"{self.prefix}:refs"

    @property
    def references_expiry(self) -> str:
        return f"{self.prefix}:refs:expiry"

    @property
    def alive(self) -> str:
        return f"{self.prefix}:alive"

    def tenant_references(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:refs"

    def tenant_references_expiry(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:refs:expiry"

    def inbox(self, client_id: str) -> str:
        return f"{self.prefix}:inbox:{client_id}"

    def reference(self, reference_id: str) -> str:
        return f"{self.prefix}:ref:{reference_id}"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"


DEFAULT_KEYS = Keys()
