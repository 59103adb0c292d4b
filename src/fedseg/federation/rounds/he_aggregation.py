"""Homomorphic encryption's round (plan ``privacy.he: ckks``), engine-free: the site's
encryption after training (:func:`protect_he`) and the aggregator's ``HiddenSum``
(:class:`HeAggregation`). The cryptography and the threat model: ``fedseg.privacy.he``.

A round:

1. ``prepare``: the aggregator makes sure it has the round's public key: the key holder
   (``privacy.he.key_holder``, else the first plan site connected; the same one as long as
   it answers) answers ``he_keys`` (``rounds.he_keys``). Each training site's
   ``TaskRequest.secure`` carries the public context (``he.public``), its fingerprint
   (``he.key``) and the site's weight w_i (``he.weight``): the aggregator's own number, the
   training cases the site declared when it joined (``DeclaredCases.n_train``), or 1 with
   ``privacy.dp.level: site`` (each site one unit). The first round of an aggregator process
   records meta ``he`` (``run_folder.HeRecord``: the key holder, the key, which arrays are
   encrypted and which travel in the clear) and logs it in one line;
2. the site trains and sends ``w_i * (new - global)`` encrypted for the selected arrays,
   the others' new values in the clear (``privacy.he.encrypt_update``);
3. ``take``: each reply is checked (its key, the right number of ciphertexts of the right
   sizes, the clear arrays against the global model) and folded into the round's
   accumulator at once, ciphertext by ciphertext: a file in the round's spool folder
   (``spool_dir/he/sum.bin``) read and written again as a new file that replaces it only
   when the whole reply fitted, so the aggregator holds one ciphertext of the sum at a time
   (beside the reply) and a rejected reply leaves no trace; the clear arrays are parked
   (``rounds.spool``);
4. ``combine``: with at least two sites folded, the summed ciphertexts go to the key holder
   (``he_decrypt``), which returns the plain sums S; the mean new weights are
   ``global + S / W`` (W = the folded sites' w_i) for the encrypted arrays and the weighted
   mean of the clear arrays (``aggregation.weighted_average``, the same w_i) for the others.
   With one site folded nothing is decrypted (that sum would be the site's own update).

The key holder lost between training and decryption stops the run with one line (the
round's ciphertexts only open with its key); ``fedseg resume`` repeats the round with the
key holder, or another site's new key when it is gone.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedseg.errors import FedsegError
from fedseg.federation.rounds.aggregation import UpdateRejected, check_update, weighted_average
from fedseg.federation.rounds.he_keys import DECRYPT, KEYS, SUM
from fedseg.federation.rounds.hidden_sum import RevealedMean
from fedseg.federation.rounds.spool import Spool, SpooledArrays
from fedseg.federation.rounds.tasks import Payload, TaskReply, TaskRequest
from fedseg.plan import PlanConfig
from fedseg.privacy import he
from fedseg.run_folder import DeclaredCases, HeRecord, SiteRoundStatus, spool_dir
from fedseg.tracking.store import RunStore

if TYPE_CHECKING:
    from fedseg.federation.rounds.coordinator import Transport
    from fedseg.model.weights import Weights

#: ``TaskRequest.secure`` keys: the public context (uint8), its fingerprint, the weight
PUBLIC, WEIGHT = "he.public", "he.weight"
#: seconds a key query or a decryption may take (a decryption of FeTS: ~10 s per core)
QUERY_TIMEOUT_S = 600.0


# -- the site ---------------------------------------------------------------------------
def protect_he(req: TaskRequest, reply: TaskReply) -> None:
    """After training: ``reply.weights`` becomes ``reply.hidden`` as ``privacy.he`` wants it
    (encrypted weighted update, clear arrays); the optimizer state stays home."""
    secure = req.secure or {}
    public, key, weight = secure.get(PUBLIC), secure.get(he.KEY), secure.get(WEIGHT)
    if not isinstance(public, np.ndarray) or not isinstance(weight, (int, float)):
        raise FedsegError("privacy.he: the task carries no public key or weight; the "
                          "aggregator runs another fedseg version")  # fmt: skip
    raw = public.tobytes()
    if he.fingerprint(raw) != key:
        raise FedsegError("privacy.he: the public key does not match its fingerprint")
    assert reply.weights is not None
    reply.hidden = he.encrypt_update(reply.weights, req.weights, float(weight), raw,
                                     req.privacy.he)  # fmt: skip
    reply.weights = None
    reply.optimizer_state = None


# -- the aggregator ---------------------------------------------------------------------
class HeAggregation:
    """``hidden_sum.HiddenSum`` for ``privacy.he`` (module doc). Holds the public context only."""

    def __init__(self, plan: PlanConfig, run_dir: Path, store: RunStore) -> None:
        self.plan, self.cfg, self.run_dir, self.store = plan, plan.privacy.he, run_dir, store
        self.run_id = store.meta.run_id() or run_dir.name
        self.holder: str | None = None
        self.public: bytes | None = None
        self.key: str | None = None
        self._recorded = False
        self._reset(0)

    def _reset(self, rnd: int) -> None:
        self.rnd = rnd
        self.weights: dict[str, float] = {}  # w_i of the round's training sites
        self.n_train: dict[str, int] = {}
        self.folded: list[str] = []  # sites in the accumulator, in arrival order
        self.lengths: list[int] = []  # byte lengths of the accumulator's ciphertexts
        self.clear: dict[str, SpooledArrays] = {}
        self.spool = Spool(self.folder / "clear")
        self.encrypted: list[str] = []
        self.shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}

    @property
    def folder(self) -> Path:
        return spool_dir(self.run_dir, self.rnd) / "he"

    # -- prepare ----------------------------------------------------------------------
    def prepare(
        self, rnd: int, sites: list[str], declared: dict[str, DeclaredCases],
        global_weights: Weights, transport: Transport,
    ) -> dict[str, Payload]:  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)
        self._reset(rnd)
        self.encrypted = he.encrypted_names(global_weights, self.cfg.layers)
        self.shapes = {k: (v.shape, v.dtype) for k, v in global_weights.items()}
        self._ensure_key(rnd, transport)
        self._record(global_weights)
        assert self.public is not None and self.key is not None
        site_dp = self.plan.privacy.dp.level == "site"
        public = np.frombuffer(self.public, np.uint8)
        out: dict[str, Payload] = {}
        for s in sites:
            n = declared[s].n_train if s in declared else 0
            self.n_train[s] = n
            self.weights[s] = 1.0 if site_dp else float(n)
            out[s] = {PUBLIC: public, he.KEY: self.key, WEIGHT: self.weights[s]}
        return out

    def _ensure_key(self, rnd: int, transport: Transport) -> None:
        """The round's key holder and public key: the current holder while it is connected,
        else the next candidate (the plan's ``key_holder`` only, when it names one)."""
        plan = self.plan
        connected = transport.connected_sites(plan.site_names, 0.0)
        if self.holder is not None and self.holder in connected:
            return
        wanted = [self.cfg.key_holder] if self.cfg.key_holder else plan.site_names
        errors = []
        for site in [s for s in wanted if s in connected]:
            ask: Payload = {"run_id": self.run_id, "he": self.cfg.model_dump_json()}
            ans = transport.query(KEYS, {site: ask}, QUERY_TIMEOUT_S)[site]
            if not isinstance(ans, dict):
                errors.append(f"{site}: {ans.error}")
                continue
            public = np.asarray(ans.get("public"), np.uint8).tobytes()
            he.public_context(public)  # refuses a context that holds a secret key
            if he.fingerprint(public) != ans.get(he.KEY):
                errors.append(f"{site}: its public key does not match its fingerprint")
                continue
            self.holder, self.public, self.key = site, public, he.fingerprint(public)
            self._recorded = False
            return
        why = "; ".join(errors) or f"none of {', '.join(wanted)} connected"
        raise FedsegError(
            f"round {rnd}: privacy.he: no key holder ({why}); start the site and `fedseg resume`"
        )

    def _record(self, global_weights: Weights) -> None:
        if self._recorded:
            return
        clear = [k for k in global_weights if k not in set(self.encrypted)]
        n_enc = sum(int(global_weights[k].size) for k in self.encrypted)
        rec = HeRecord(key_holder=self.holder or "", key=self.key or "",
                       encrypted=self.encrypted, clear=clear,
                       bytes_per_site=he.bytes_per_site(n_enc, self.cfg))  # fmt: skip
        self.store.meta.set_he(rec)
        shown = ", ".join(clear[:8]) + (f", ... ({len(clear)} in all)" if len(clear) > 8 else "")
        self.store.log(
            f"privacy.he: key holder {rec.key_holder} (key {rec.key}); {len(self.encrypted)} "
            f"arrays ({n_enc:,} values) encrypted, up to {rec.bytes_per_site / 1e6:.1f} MB "
            f"per site per round; in the clear: {shown or 'nothing'}"
        )
        self._recorded = True

    # -- take -------------------------------------------------------------------------
    def take(self, site: str, hidden: Payload, n_train: int) -> None:
        if site not in self.weights:
            raise UpdateRejected("an encrypted update from a site not asked to train")
        if hidden.get(he.KEY) != self.key:
            raise UpdateRejected(f"encrypted under key {hidden.get(he.KEY)}, not the round's")
        expected = {he.KEY} | ({he.DATA, he.LENGTHS} if self.encrypted else set())
        clear_names = [k for k in self.shapes if k not in set(self.encrypted)]
        expected |= {he.CLEAR_PREFIX + k for k in clear_names}
        if set(hidden) != expected:
            odd = sorted(set(hidden) ^ expected)
            raise UpdateRejected(f"encrypted update has the wrong arrays (e.g. {odd[0]!r})")
        clear = {k: hidden[he.CLEAR_PREFIX + k] for k in clear_names}
        check_update(clear, {k: np.empty(s, d) for k, (s, d) in self.shapes.items()
                             if k in clear})  # fmt: skip
        parked = self.spool.park(clear) if clear_names else None  # type: ignore[arg-type]
        self._fold(hidden)
        if parked is not None:
            self.clear[site] = parked
        self.folded.append(site)

    @property
    def _sum_file(self) -> Path:
        return self.folder / "sum.bin"

    def _fold(self, hidden: Payload) -> None:
        """Add one reply's ciphertexts to the accumulator file, all or nothing."""
        if not self.encrypted:
            return
        ctx = he.public_context(self.public or b"")
        n = sum(int(np.prod(self.shapes[k][0], dtype=np.int64)) for k in self.encrypted)
        sizes = he.chunk_sizes(n, self.cfg)
        self.folder.mkdir(parents=True, exist_ok=True)
        new = self._sum_file.with_suffix(".new")
        lengths: list[int] = []
        try:
            data, lens = hidden[he.DATA], hidden[he.LENGTHS]
            if not isinstance(data, np.ndarray) or not isinstance(lens, np.ndarray):
                raise ValueError("not arrays")
            chunks = he.unpack(data, lens)
            if len(chunks) != len(sizes):
                raise ValueError(f"{len(chunks)} ciphertexts, expected {len(sizes)}")
            acc = open(self._sum_file, "rb") if self.folded else None  # noqa: SIM115
            try:
                with open(new, "wb") as out:
                    for i, (chunk, size) in enumerate(zip(chunks, sizes, strict=True)):
                        prev = acc.read(self.lengths[i]) if acc is not None else None
                        total = he.add_chunk(ctx, prev, chunk, size)
                        out.write(total)
                        lengths.append(len(total))
            finally:
                if acc is not None:
                    acc.close()
        except (ValueError, OSError) as exc:
            new.unlink(missing_ok=True)
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            raise UpdateRejected(f"malformed ciphertexts: {line}") from exc
        new.replace(self._sum_file)
        self.lengths = lengths

    # -- combine ----------------------------------------------------------------------
    def combine(
        self, rnd: int, global_weights: Weights, transport: Transport
    ) -> RevealedMean | None:
        try:
            return self._combine(rnd, global_weights, transport)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.clear = {}

    def _combine(
        self, rnd: int, global_weights: Weights, transport: Transport
    ) -> RevealedMean | None:
        if len(self.folded) < 2:
            if self.folded:
                self.store.log(f"round {rnd}: privacy.he: only {self.folded[0]}'s encrypted "
                               "update arrived; its sum would be that update: not decrypted",
                               "warning")  # fmt: skip
            return None
        total_w = sum(self.weights[s] for s in self.folded)
        if total_w <= 0:
            return None
        sums = self._decrypt(rnd, transport) if self.encrypted else {}
        clear = self._clear_mean()
        out: Weights = {}
        for k, g in global_weights.items():
            if k in sums:
                v = sums[k].reshape(g.shape)
                out[k] = (g.astype(np.float64) + v / total_w).astype(g.dtype)
            else:
                out[k] = clear[k]
        sites = [s for s in self.plan.site_names if s in self.folded]
        return RevealedMean(out, sites, sum(self.n_train[s] for s in sites))

    def _decrypt(self, rnd: int, transport: Transport) -> dict[str, np.ndarray]:
        """The key holder's plain sum, cut back into the encrypted arrays (flat)."""
        payload: Payload = {
            "run_id": self.run_id, he.KEY: self.key or "",
            he.DATA: np.fromfile(self._sum_file, np.uint8),
            he.LENGTHS: np.array(self.lengths, np.int64),
        }  # fmt: skip
        assert self.holder is not None
        ans = transport.query(DECRYPT, {self.holder: payload}, QUERY_TIMEOUT_S)[self.holder]
        del payload
        if not isinstance(ans, dict):
            self.holder = None  # the next round (or a restart) asks for a new key holder
            status = "did not answer" if ans.status == SiteRoundStatus.TIMEOUT else "failed"
            raise FedsegError(
                f"round {rnd}: privacy.he: the key holder {status} to decrypt the sum "
                f"({ans.error}); its key alone opens the round: `fedseg resume` repeats the "
                "round (with another key holder if it is gone)"
            )
        flat = np.asarray(ans.get(SUM), np.float64).reshape(-1)
        sizes = [int(np.prod(self.shapes[k][0], dtype=np.int64)) for k in self.encrypted]
        if flat.size != sum(sizes) or not np.isfinite(flat).all():
            raise FedsegError(
                f"round {rnd}: privacy.he: the key holder's sum is malformed ({flat.size} "
                f"values, expected {sum(sizes)}); see its site log"
            )
        ends = np.cumsum(sizes)
        return {k: flat[e - n : e] for k, n, e in zip(self.encrypted, sizes, ends, strict=True)}

    def _clear_mean(self) -> Weights:
        if not self.clear:
            return {}
        sites = [s for s in self.folded if s in self.clear]
        return weighted_average([self.clear[s] for s in sites], [self.weights[s] for s in sites])
