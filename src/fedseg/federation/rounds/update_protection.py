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

import numpy as np

from fedseg.errors import FedsegError
from fedseg.federation.rounds.central_dp import NOISE_SHARE_SITES, share_std
from fedseg.federation.rounds.site_queries import SiteContext
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest
from fedseg.model.weights import Weights
from fedseg.privacy.clipping import add_noise, apply_update, clip, update_of


def protects(req: TaskRequest) -> bool:
    """True when the plan asks the site to do something to its update before it leaves."""
    p = req.privacy
    return p.hides_updates or p.dp.level == "site"


def protect_update(ctx: SiteContext, req: TaskRequest, reply: TaskReply) -> None:
    """Make ``reply`` (trained: ``weights`` set) carry the update as the plan lets it
    travel (see the module doc); in place. First the DP step, then the hiding mechanism
    (which reads ``reply.weights`` as the DP step left them)."""
    if not protects(req) or reply.weights is None:
        return
    p = req.privacy
    if p.dp.level == "site":
        reply.weights = site_dp_weights(req, reply.weights)
    if p.secure_aggregation:
        from fedseg.federation.rounds.secure_aggregation_site import mask_update

        mask_update(ctx, req, reply)
    elif p.he.scheme != "none":
        from fedseg.federation.rounds.he_aggregation import protect_he

        protect_he(req, reply)


def site_dp_weights(
    req: TaskRequest, trained: Weights, rng: np.random.Generator | None = None
) -> Weights:
    """Site-level DP at the site (``central_dp`` says the whole mechanism): the global
    model plus the site's update clipped to ``dp.clip_norm``; under a hiding mechanism
    plus the site's noise share, std sigma C / sqrt(m_min) with sigma the plan's resolved
    ``dp.noise_multiplier`` and m_min from the aggregator (``TaskRequest.secure``). Without
    hiding the aggregator clips again and adds all the noise; the site only clips. The
    noise is drawn from OS entropy (``rng`` for tests)."""
    dp = req.privacy.dp
    update, _ = clip(update_of(trained, req.weights), dp.clip_norm)
    if req.privacy.hides_updates:
        m_min = (req.secure or {}).get(NOISE_SHARE_SITES)
        if dp.noise_multiplier is None or not isinstance(m_min, int) or m_min < 1:
            raise FedsegError(
                "privacy.dp level site: the aggregator sent no noise multiplier or no sum "
                "size for this site's noise share; it sends no update unnoised (aggregator "
                "and site run different fedseg versions?)"
            )
        std = share_std(dp.noise_multiplier, dp.clip_norm, m_min)
        update = add_noise(update, std, rng if rng is not None else np.random.default_rng())
    return apply_update(req.weights, update)
