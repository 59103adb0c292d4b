"""The plan's ``privacy`` section: what sites may report and which mechanisms protect the
updates (secure aggregation, differential privacy, homomorphic encryption).

It travels in every task (``TaskRequest.privacy``), so a site knows what to do with its
update without a plan file. Checks here need nothing but the section itself; combinations
with the strategy, the bounds and the alarms are refused in
``federation.commands.run_folder.check_plan_runs``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedseg.model.summary import MIN_SUMMARY_CASES

#: who a DP guarantee protects: nobody, a whole site's contribution, or one case
DpLevel = Literal["none", "site", "case"]
#: dp-accounting's accountant used for ε
Accountant = Literal["rdp", "pld"]
#: homomorphic encryption scheme
HeScheme = Literal["none", "ckks"]


class SecAggConfig(BaseModel):
    """Secure aggregation (``privacy.secure_aggregation: true``): the aggregator learns only
    the weighted sum of the sites' updates (``privacy.secagg``)."""

    model_config = ConfigDict(extra="forbid")

    threshold: int | None = Field(
        None, ge=2, description="fewest sites whose shares rebuild a secret (null: ceil(2n/3))"
    )
    clip_norm: float = Field(
        1.0, gt=0, description="each site clips its update's L2 norm to this before masking"
    )
    modulus_bits: Literal[32, 64] = Field(32, description="fixed-point word: 32 or 64 bits")


class DpConfig(BaseModel):
    """Differential privacy (``privacy.dp``). ``level: site`` clips each site's update to
    ``clip_norm`` and adds Gaussian noise to their mean (ε per run for any one site's whole
    contribution); ``level: case`` is DP-SGD at each site with Opacus (ε per site for any
    one case). ``epsilon`` is the run's total budget at ``delta``; with
    ``noise_multiplier: null`` the multiplier is the smallest that keeps the planned
    rounds within it."""

    model_config = ConfigDict(extra="forbid")

    level: DpLevel = "none"
    epsilon: float = Field(8.0, gt=0, description="total budget of the run (per site: case)")
    delta: float = Field(1e-5, gt=0, lt=1)
    clip_norm: float = Field(
        1.0, gt=0, description="site: update L2 clip; case: per-sample gradient clip"
    )
    noise_multiplier: float | None = Field(
        None, gt=0, description="noise std / clip_norm (null: derived from epsilon, delta)"
    )
    accountant: Accountant = "rdp"
    sample_rate: float | None = Field(
        None, gt=0, le=1, description="case: Poisson rate of a case per step (null: "
        "batch_size / training cases)",
    )  # fmt: skip
    max_physical_batch: int = Field(
        1, ge=1, description="case: samples per forward pass (memory), whatever the batch"
    )


class HeConfig(BaseModel):
    """Homomorphic encryption (``privacy.he``, TenSEAL CKKS): sites encrypt their updates
    under a key the aggregator does not hold; ``layers`` (weight-name globs, or ``all``)
    say which arrays are encrypted, the others travel in the clear. One site, the key
    holder, makes the key and decrypts the round's sum (threat model: ``privacy.he``)."""

    model_config = ConfigDict(extra="forbid")

    scheme: HeScheme = "none"
    layers: Literal["all"] | list[str] = "all"
    poly_modulus_degree: int = Field(8192, ge=4096)
    coeff_mod_bit_sizes: list[int] = Field(default_factory=lambda: [60, 40, 60])
    scale_bits: int = Field(40, ge=20, le=60)
    key_holder: str | None = Field(
        None, description="the plan site that makes the key and decrypts the sums (null: the "
        "first plan site connected)",
    )  # fmt: skip
    max_bytes_per_site: int = Field(
        1024**3, gt=0, description="largest ciphertext upload per site and round the "
        "plan check lets through (FeTS, layers all: ~1.9 GB); raise it to mean it",
    )  # fmt: skip


class PrivacyConfig(BaseModel):
    """What sites may report and how updates are protected (plan key ``privacy``).

    ``min_summary_cases`` travels in every task; a deployed site applies the larger of it
    and its own floor (``fedseg site start --min-summary-cases``, default 3), so a plan can
    raise the floor, never lower it. The sites of ``fedseg simulate``/``compare`` (one
    operator holds all the data) take the plan's. ``he: ckks`` is short for
    ``he: {scheme: ckks}``."""

    model_config = ConfigDict(extra="forbid")

    min_summary_cases: int = Field(
        MIN_SUMMARY_CASES,
        ge=1,
        description="fewest cases a validation summary or training loss may cover; a site "
        "with fewer reports only that it validated",
    )
    secure_aggregation: bool = False
    secagg: SecAggConfig = SecAggConfig()
    dp: DpConfig = DpConfig()
    he: HeConfig = HeConfig()

    @model_validator(mode="before")
    @classmethod
    def _he_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("he"), str):
            data = {**data, "he": {"scheme": data["he"]}}
        return data

    @model_validator(mode="after")
    def _one_hiding_mechanism(self) -> PrivacyConfig:
        if self.secure_aggregation and self.he.scheme != "none":
            raise ValueError(
                "choose one of privacy.secure_aggregation and privacy.he: each hides single "
                "updates on its own"
            )
        return self

    @property
    def hides_updates(self) -> bool:
        """True when the aggregator sees no single site's update (secure aggregation or HE)."""
        return self.secure_aggregation or self.he.scheme != "none"
