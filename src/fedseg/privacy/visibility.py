"""What the aggregator can and cannot see under a plan's ``privacy`` section, in words: the
one place the refusals (``federation.commands.privacy_refusals``), ``fedseg status``,
``fedseg contributions`` and the report take them from. Plain functions of the section.
"""

from __future__ import annotations

from fedseg.privacy.config import PrivacyConfig


def withheld_by(p: PrivacyConfig) -> str | None:
    """The plan key of the mechanism that keeps single updates from the aggregation
    (``privacy.secure_aggregation``, ``privacy.he``, ``privacy.dp level site``), if any."""
    if p.secure_aggregation:
        return "privacy.secure_aggregation"
    if p.he.scheme != "none":
        return "privacy.he"
    if p.dp.level == "site":
        return "privacy.dp level site"
    return None


def mechanisms(p: PrivacyConfig) -> list[str]:
    """One phrase per mechanism on (empty: none)."""
    out = []
    if p.secure_aggregation:
        t = p.secagg.threshold
        out.append(
            f"secure aggregation (threshold {t if t is not None else 'ceil(2n/3)'}, sites "
            f"clip to {p.secagg.clip_norm:g}, {p.secagg.modulus_bits}-bit fixed point)"
        )
    if p.he.scheme != "none":
        layers = "all layers" if p.he.layers == "all" else "layers " + ", ".join(p.he.layers)
        out.append(f"homomorphic encryption ({p.he.scheme.upper()}, {layers})")
    if p.dp.level != "none":
        where = {
            "site": "site-level DP (each site's update clipped to "
            f"{p.dp.clip_norm:g}, Gaussian noise on the equal-weight mean"
            + (", added by the sites in shares)" if p.hides_updates else ", by the aggregator)"),
            "case": "case-level DP-SGD at each site (per-case gradients clipped to "
            f"{p.dp.clip_norm:g}, Gaussian noise)",
        }[p.dp.level]
        out.append(f"{where}; budget ε {p.dp.epsilon:g} at δ={p.dp.delta:g} ({p.dp.accountant})")
    return out


def aggregator_view(p: PrivacyConfig) -> list[tuple[str, str]]:
    """(what, could the aggregator see it and why) rows for the report."""
    key = withheld_by(p)
    if p.hides_updates:
        single = f"no: {key} shows it only the sum of the sites' updates"
        if p.he.scheme != "none" and p.he.layers != "all":
            single += "; the layers outside privacy.he.layers travelled in clear"
    elif p.dp.level == "site":
        single = (
            "yes, before clipping and noise (central DP: the released models are private, "
            "the aggregator is trusted)"
        )
    elif p.dp.level == "case":
        single = "yes, each one already differentially private for any one case (DP-SGD)"
    else:
        single = "yes"
    norms = "no: not recorded" if key is not None else "yes (update norms and distances stored)"
    weights = (
        "used equally: the mean of the clipped updates is not weighted (sensitivity)"
        if p.dp.level == "site"
        else "yes: each site's training cases, declared in clear"
    )
    summaries = (
        f"yes: per site, over at least {p.min_summary_cases} validation cases; not covered by "
        "any mechanism here (monitoring needs them)"
    )
    return [
        ("single site updates", single),
        ("update norms per site", norms),
        ("aggregation weights", weights),
        ("validation summaries and training loss", summaries),
        ("images, labels, per-case values", "no: they never leave a site"),
    ]
