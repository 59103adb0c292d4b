"""A site's answers to the aggregator's small protocol messages (``Transport.query``),
engine-free and torch-free: each starts a site process of its own, which must start fast.

``queries()`` maps a query kind (Flower message type ``query.<kind>``) to its handler. A
handler gets the site's ``SiteContext`` and the aggregator's payload and returns its own
payload; what it must remember until a later message of the same run (secret keys, seeds,
received shares) goes in ``SiteContext.state``, which never leaves the site (a real site's
Flower ``context.state``, kept by its SuperNode; an in-process site's dict).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from fedseg.errors import FedsegError
from fedseg.federation.rounds.tasks import Payload
from fedseg.train.case_cache import CACHE_FOLDER, SITE_FOLDER


@dataclass
class SiteContext:
    """What a site's protocol steps know of the site: its name, data folder and workspace
    (None where not configured), its private state between messages of a run, and its
    consortium credentials folder (``site.key``, ``site.crt``, ``ca.crt``; None: none)."""

    site: str
    data: Path | None = None
    workspace: Path | None = None
    state: MutableMapping[str, bytes] = field(default_factory=dict)
    creds: Path | None = None


def site_workspace(data: Path, run_id: str, workspace: Path | None = None) -> Path:
    """Where a site keeps its private state for one federation run (beside the case cache)."""
    if workspace is None and run_id == CACHE_FOLDER:
        raise FedsegError(f"run id {run_id!r} is the site's case cache folder; rename the run")
    return Path(workspace) if workspace is not None else Path(data) / SITE_FOLDER / run_id


#: a query handler: (the site, the aggregator's payload) -> the site's payload
QueryHandler = Callable[[SiteContext, Payload], Payload]


def queries() -> dict[str, QueryHandler]:
    """Every query kind a site answers, by name (the message type is ``query.<name>``): each
    mechanism's handlers, its module's ``QUERIES`` (secure aggregation, HE key holder).
    Imported when first asked for, because those modules import this one; they stay
    torch-free and import TenSEAL only when a handler runs."""
    from fedseg.federation.rounds.he_keys import QUERIES as HE
    from fedseg.federation.rounds.secure_aggregation_site import QUERIES as SECAGG

    return {**SECAGG, **HE}


def answer(kind: str, ctx: SiteContext, payload: Payload) -> Payload:
    """The site's answer to a ``kind`` query."""
    handlers = queries()
    handler = handlers.get(kind)
    if handler is None:
        raise FedsegError(
            f"query {kind!r} is not one this site answers ({', '.join(handlers)}); "
            "the aggregator and the site run different fedseg versions"
        )
    return handler(ctx, payload)
