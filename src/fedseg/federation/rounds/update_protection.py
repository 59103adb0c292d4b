"""A site's side of the plan's update protection, engine-free: after training, turn the
reply's clear weights into what the plan's ``privacy`` lets travel.

- ``dp.level: site``: the update (new weights minus the global model) is clipped to
  ``dp.clip_norm``; with a hiding mechanism the site also adds its share of the noise;
- ``secure_aggregation``: the clipped update, weighted and in fixed point, masked;
- ``he``: the weighted update encrypted under the run's CKKS key.

Under a hiding mechanism the reply's ``weights`` become None and ``hidden`` carries the
protected update; what it needs of the round (shares, keys, weight) is in
``TaskRequest.secure`` and the site's private ``SiteContext.state``.
"""

from __future__ import annotations

from fedseg.federation.rounds.site_queries import SiteContext
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest


def protects(req: TaskRequest) -> bool:
    """True when the plan asks the site to do something to its update before it leaves."""
    p = req.privacy
    return p.hides_updates or p.dp.level == "site"


def protect_update(ctx: SiteContext, req: TaskRequest, reply: TaskReply) -> None:
    """Make ``reply`` (trained: ``weights`` set) carry the update as the plan lets it
    travel (see the module doc); in place."""
    if not protects(req) or reply.weights is None:
        return
    privacy = req.privacy
    if privacy.secure_aggregation:
        from fedseg.federation.rounds.secure_aggregation_site import mask_update

        mask_update(ctx, req, reply)
        return
    raise NotImplementedError("update protection: filled in by the mechanisms")
