"""The key holder's side of homomorphic encryption (plan ``privacy.he``), engine-free and
torch-free: two site queries (``site_queries.QUERIES``).

- ``he_keys`` (payload: ``run_id``, ``he`` = the plan's ``HeConfig`` as JSON): the site
  makes the run's CKKS key on the first call (``privacy.he.new_keys``) and keeps it in its
  workspace for the run (``site_queries.site_workspace``): ``he-key.secret`` (the context
  with the secret key) and ``he-key.public``, both mode 0600, written once; every later call
  (a restarted site, a restarted aggregator) returns the same public context. Answer:
  ``public`` (uint8 array) and ``he.key`` (its fingerprint). ``SiteContext.state`` keeps
  only the fingerprint (``he.key``).
- ``he_decrypt`` (payload: ``run_id``, ``he.key`` and the summed ciphertexts, ``he.data``
  and ``he.len``): their float64 values, ``sum`` (flat). A sum under another key is
  refused.

The secret key never leaves the site; what a decryption reveals is the threat model's
business (``privacy.he``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from fedseg.errors import FedsegError
from fedseg.federation.rounds.site_queries import QueryHandler, SiteContext, site_workspace
from fedseg.federation.rounds.tasks import Payload
from fedseg.privacy import he
from fedseg.privacy.config import HeConfig

#: the query kinds the key holder answers (``query.he_keys``, ``query.he_decrypt``)
KEYS = "he_keys"
DECRYPT = "he_decrypt"

#: the key holder's files in its run workspace
SECRET_FILE, PUBLIC_FILE = "he-key.secret", "he-key.public"
#: answer key of a decrypted sum
SUM = "sum"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def key_folder(ctx: SiteContext, run_id: str) -> Path:
    """The site's workspace for run ``run_id`` (where its key files are)."""
    if not _RUN_ID.match(run_id):
        raise FedsegError(f"run id {run_id!r} is not a folder name; rename the run")
    if ctx.data is None and ctx.workspace is None:
        raise FedsegError("the site has no data folder or workspace to keep the HE key in")
    return site_workspace(ctx.data or Path("."), run_id, ctx.workspace)


def _write_private(path: Path, data: bytes) -> None:
    """``data`` into a new file readable by its owner only (written whole, then renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def answer_keys(ctx: SiteContext, payload: Payload) -> Payload:
    """``he_keys``: the run's public context (made and kept on the first call)."""
    run_id = str(payload["run_id"])
    cfg = HeConfig.model_validate_json(str(payload["he"]))
    folder = key_folder(ctx, run_id)
    secret, public = folder / SECRET_FILE, folder / PUBLIC_FILE
    if not (secret.is_file() and public.is_file()):
        keys = he.new_keys(cfg)
        folder.mkdir(parents=True, exist_ok=True)
        _write_private(secret, keys.secret)
        _write_private(public, keys.public)
    pub = public.read_bytes()
    key = he.fingerprint(pub)
    ctx.state["he.key"] = key.encode()
    return {"public": np.frombuffer(pub, np.uint8), he.KEY: key}


def answer_decrypt(ctx: SiteContext, payload: Payload) -> Payload:
    """``he_decrypt``: each summed array's float64 values (flat), with the run's secret key."""
    folder = key_folder(ctx, str(payload["run_id"]))
    secret, public = folder / SECRET_FILE, folder / PUBLIC_FILE
    if not secret.is_file():
        raise FedsegError("this site holds no HE key for the run (its workspace lost it)")
    key = he.fingerprint(public.read_bytes())
    if payload.get(he.KEY) != key:
        raise FedsegError(f"the sum is encrypted under key {payload.get(he.KEY)}, not this "
                          f"site's {key}")  # fmt: skip
    data, lengths = payload.get(he.DATA), payload.get(he.LENGTHS)
    if not isinstance(data, np.ndarray) or not isinstance(lengths, np.ndarray):
        raise FedsegError("the sum to decrypt is malformed")
    sk = he.secret_context(secret.read_bytes())
    return {SUM: he.decrypt_chunks(sk, he.unpack(data, lengths))}


#: the key holder's query handlers (``site_queries`` registers them)
QUERIES: dict[str, QueryHandler] = {KEYS: answer_keys, DECRYPT: answer_decrypt}
