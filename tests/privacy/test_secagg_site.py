"""A site's secure-aggregation steps as its handlers run them (``site_queries``): the
credentials they need and where they come from (``fedseg site start --creds``, the
simulated sites' throwaway CA), the round binding, and what the update becomes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedseg.errors import FedsegError
from fedseg.federation.commands.compare_plans.local_transport import LocalTransport
from fedseg.federation.engine.client_app import NODE_CREDS_DIR
from fedseg.federation.rounds.secure_aggregation_site import STATE_KEY
from fedseg.federation.rounds.site_queries import SiteContext, answer
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest
from fedseg.federation.rounds.update_protection import protect_update
from fedseg.federation.security import pki
from fedseg.privacy.config import PrivacyConfig
from fedseg.privacy.secagg.keys import public_of
from fedseg.privacy.secagg.protocol import SiteState
from tests.privacy.secagg_helpers import consortium


@pytest.mark.parametrize(
    "first",
    [
        "fedseg.federation.rounds.site_queries",
        "fedseg.federation.rounds.secure_aggregation_site",
        "fedseg.federation.rounds.he_aggregation",  # the aggregator's import order
        "fedseg.federation.engine.client_app",
    ],
)
def test_handlers_are_registered_and_torch_free(first: str) -> None:
    """Every mechanism's handlers are there whichever module a process imports first (the
    mechanism modules import site_queries), and none of it imports torch or TenSEAL."""
    import subprocess
    import sys

    code = (
        f"import sys, {first}; from fedseg.federation.rounds.site_queries import queries; "
        "print(sorted(queries()), 'torch' in sys.modules, 'tenseal' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    kinds = ["he_decrypt", "he_keys", "secagg_keys", "secagg_shares", "secagg_unmask"]
    assert out.stdout.strip() == f"{kinds} False False"


def test_a_site_without_credentials_refuses_in_one_line() -> None:
    with pytest.raises(FedsegError, match="fedseg site start --creds"):
        answer("secagg_keys", SiteContext("a"), {"run_id": "r", "round": 1})


def test_a_site_with_another_sites_certificate_refuses(tmp_path: Path) -> None:
    creds = consortium(tmp_path / "ca", ["alpha", "beta"])
    with pytest.raises(FedsegError, match="not site 'alpha'"):
        answer(
            "secagg_keys", SiteContext("alpha", creds=creds["beta"]), {"run_id": "r", "round": 1}
        )


def test_keys_of_another_round_are_refused_and_state_stays_at_the_site(tmp_path: Path) -> None:
    creds = consortium(tmp_path / "ca", ["alpha"])
    ctx = SiteContext("alpha", creds=creds["alpha"])
    out = answer("secagg_keys", ctx, {"run_id": "r", "round": 1})
    assert set(out) == {"mask_pub", "transport_pub", "signature", "cert"}
    state = SiteState.from_bytes(ctx.state[STATE_KEY])  # the secret keys stay at the site
    sent = b"".join(v for v in out.values() if isinstance(v, bytes))
    assert state.mask_sk not in sent and state.transport_sk not in sent
    assert out["mask_pub"] == public_of(state.mask_sk)
    with pytest.raises(FedsegError, match="round 2 of run 'r'"):
        answer("secagg_unmask", ctx, {"run_id": "r", "round": 2, "included": "a,b,c",
                                      "dropped": ""})  # fmt: skip
    # a training task without its secure part never sends its update in the clear
    req = TaskRequest(
        round=1, model_round=0, validate=False, epochs=1, seed=0, run_id="r", recipe="{}",
        weights={"w": np.zeros(3, np.float32)}, privacy=PrivacyConfig(secure_aggregation=True),
    )  # fmt: skip
    rep = TaskReply(site="alpha", weights={"w": np.ones(3, np.float32)})
    with pytest.raises(FedsegError, match="no secure-aggregation part"):
        protect_update(ctx, req, rep)


def test_site_start_passes_its_credentials_folder(tmp_path: Path) -> None:
    from fedseg.federation.commands.deploy import SiteOptions, supernode_command

    pki.init_ca(tmp_path / "ca")
    bundle = pki.issue_site(tmp_path / "ca", "alpha")
    opts = SiteOptions.model_validate({"server": "localhost:9092", "data_dir": tmp_path,
                                       "creds": bundle, "work_dir": tmp_path / "w"})  # fmt: skip
    cmd = supernode_command(opts)
    node_config = cmd[cmd.index("--node-config") + 1]
    assert f'{NODE_CREDS_DIR}="{bundle.resolve()}"' in node_config.split()


def test_throwaway_creds_are_made_once_and_chain_to_their_ca(tmp_path: Path) -> None:
    root = tmp_path / pki.SIMULATED_PKI
    first = pki.throwaway_site_creds(root, ["a", "b", "c"])
    again = pki.throwaway_site_creds(root, ["a", "b", "c"])  # a resumed run keeps them
    assert first == again
    ca = pki.load_cert(root / pki.CA_CERT)
    for site, folder in first.items():
        cert = pki.load_cert(folder / pki.SITE_CERT)
        pki.verify_issued(cert, ca)
        assert pki.common_name(cert) == site
        assert pki.site_credentials(folder).name == site
    # compare's in-process sites get them too
    t = LocalTransport({s: tmp_path for s in first}, {}, creds=first)
    assert {s: c.creds for s, c in t.contexts.items()} == first
