"""Every Redis key of one deployment, derived from its prefix (``insid3`` by default)::

    p:jobs:<model>       stream of one model's jobs, consumer group "workers" (model: ``model_key``)
    p:models             set of the model keys workers have served (their streams)
    p:model:<model>      exists while a worker of that model is alive (its description, short TTL)
    p:dead               stream of dead letters (a job's fields plus error, attempts, consumer)
    p:inbox:<client>     list: the replies to one API process (RPUSH by workers, BLMPOP by the API)
    p:inbox:<client>:alive  exists while that API process is alive (short TTL, renewed by it)
    p:cancel:<job>       exists when the job's caller gave up (cancelled), until its deadline
    p:ref:<id>           hash {features, info}: a reference (fp16 raw features), with a TTL
    p:refs               sorted set of reference ids by creation time (listing)
    p:refs:expiry        sorted set of reference ids by expiry time (pruning of the listing)
    p:refs:bytes         hash: stored bytes per reference id, and ``total`` (the reference budget)
    p:tenant:<t>:refs         the same two sorted sets for the references of tenant <t> (its listing
    p:tenant:<t>:refs:expiry  and quota); tenant ids never hold ':' (``app.auth.TENANT_ID``)
    p:worker:<name>      a live worker's description, expires unless its heartbeat renews it
    p:alive              exists while at least one worker is alive (renewed by every heartbeat)
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "workers"  # the consumer group of every job stream
STREAM_MAXLEN = 10_000  # safety cap of XADD; must stay far above any backlog bound
DEAD_MAXLEN = 10_000
INBOX_TTL_MS = 600_000  # an inbox outlives its API process by this much


def model_key(model_id: str, image_size: int) -> str:
    """The routing key of an engine: jobs for it go to the stream ``p:jobs:<model_key>``."""
    return f"{model_id}@{image_size}"


@dataclass(frozen=True)
class Keys:
    """Every Redis key of one deployment, derived from its prefix; ``model`` picks the job stream."""

    prefix: str = "insid3"
    model: str = ""  # the model key whose stream ``stream`` names ("": the unrouted stream)

    def for_model(self, model: str) -> Keys:
        return Keys(self.prefix, model)

    @property
    def stream(self) -> str:
        return f"{self.prefix}:jobs:{self.model}" if self.model else f"{self.prefix}:jobs"

    @property
    def models(self) -> str:
        return f"{self.prefix}:models"

    @property
    def model_alive(self) -> str:
        """Exists while a worker of ``model`` is alive (for the unrouted stream: any worker)."""
        return f"{self.prefix}:model:{self.model}" if self.model else self.alive

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
    def references_bytes(self) -> str:
        return f"{self.prefix}:refs:bytes"

    @property
    def alive(self) -> str:
        return f"{self.prefix}:alive"

    def tenant_references(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:refs"

    def tenant_references_expiry(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:refs:expiry"

    def inbox(self, client_id: str) -> str:
        return f"{self.prefix}:inbox:{client_id}"

    def cancelled(self, job_id: str) -> str:
        return f"{self.prefix}:cancel:{job_id}"

    def reference(self, reference_id: str) -> str:
        return f"{self.prefix}:ref:{reference_id}"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"


def inbox_alive(inbox: str) -> str:
    """The key that exists while the API process reading ``inbox`` is alive."""
    return f"{inbox}:alive"


DEFAULT_KEYS = Keys()
