"""Keys of secure aggregation: per-round key agreement, share transport and site identity.

Every round each site makes two fresh X25519 key pairs: ``mask`` (its pairwise mask seeds
with every other site: ECDH, then HKDF-SHA256) and ``transport`` (the AES-256-GCM keys of
the shares it sends and receives: ECDH, then HKDF-SHA256 under another label). The mask
secret key is shared among the sites, and rebuilt by the aggregator when its site drops
out: it must never be a long-lived key, so the site's consortium key (``site.key`` of
``fedseg pki``, ECDSA P-384) only **signs** the round's public keys, bound to the run, the
round and the site's name. A peer accepts them only when the signer's certificate chains
to the consortium CA (``certificates.verify_issued``) and names the site the aggregator says they
are from. Each encrypted share is bound (AES-GCM associated data) to the run, the round,
its sender and its receiver, so the aggregator can neither replay nor redirect one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedseg.certificates import common_name, verify_issued
from fedseg.errors import FedsegError

KEY_BYTES = 32
_MASK_INFO = b"fedseg secagg pairwise mask"
_SHARE_INFO = b"fedseg secagg share transport"
_NONCE = 12


@dataclass(frozen=True)
class RoundKeys:
    """A site's secret keys of one round (raw X25519 private keys)."""

    mask: bytes
    transport: bytes

    @staticmethod
    def new() -> RoundKeys:
        return RoundKeys(_raw_private(X25519PrivateKey.generate()),
                         _raw_private(X25519PrivateKey.generate()))  # fmt: skip

    @property
    def mask_public(self) -> bytes:
        return public_of(self.mask)

    @property
    def transport_public(self) -> bytes:
        return public_of(self.transport)


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def public_of(private: bytes) -> bytes:
    """The raw X25519 public key of a raw private key."""
    return (
        X25519PrivateKey.from_private_bytes(private)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def _agree(private: bytes, public: bytes, info: bytes) -> bytes:
    secret = X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(public)
    )
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(secret)


def pair_seed(mask_private: bytes, peer_mask_public: bytes) -> bytes:
    """The pairwise mask seed of two sites (the same from either side)."""
    return _agree(mask_private, peer_mask_public, _MASK_INFO)


def _aad(run_id: str, rnd: int, src: str, dst: str) -> bytes:
    return "\0".join(("fedseg-secagg-share", run_id, str(rnd), src, dst)).encode()


def encrypt_share(
    transport_private: bytes, dst_public: bytes, plain: bytes,
    run_id: str, rnd: int, src: str, dst: str,
) -> bytes:  # fmt: skip
    """``plain`` for ``dst`` only, bound to (run, round, sender, receiver)."""
    key = _agree(transport_private, dst_public, _SHARE_INFO)
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plain, _aad(run_id, rnd, src, dst))


def decrypt_share(
    transport_private: bytes, src_public: bytes, sealed: bytes,
    run_id: str, rnd: int, src: str, dst: str,
) -> bytes:  # fmt: skip
    """What ``encrypt_share`` sealed; FedsegError when it was altered or not for us."""
    key = _agree(transport_private, src_public, _SHARE_INFO)
    try:
        return AESGCM(key).decrypt(sealed[:_NONCE], sealed[_NONCE:], _aad(run_id, rnd, src, dst))
    except (InvalidTag, ValueError) as exc:
        raise FedsegError(
            f"the share from site {src!r} does not open: altered, replayed or not for this "
            "site and round"
        ) from exc


def _signed_text(run_id: str, rnd: int, site: str, mask_pub: bytes, transport_pub: bytes) -> bytes:
    head = "\0".join(("fedseg-secagg-keys", run_id, str(rnd), site)).encode()
    return head + b"\0" + mask_pub + transport_pub


def sign_keys(
    site_key: ec.EllipticCurvePrivateKey, run_id: str, rnd: int, site: str,
    mask_pub: bytes, transport_pub: bytes,
) -> bytes:  # fmt: skip
    """The site's ECDSA-SHA384 signature of its round keys with its consortium key."""
    return site_key.sign(
        _signed_text(run_id, rnd, site, mask_pub, transport_pub), ec.ECDSA(hashes.SHA384())
    )


def verify_keys(
    ca_cert: x509.Certificate, cert_pem: bytes, run_id: str, rnd: int, site: str,
    mask_pub: bytes, transport_pub: bytes, signature: bytes,
) -> None:  # fmt: skip
    """Raise FedsegError unless ``site``'s round keys are signed by a certificate of the
    consortium CA whose name is ``site``."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise FedsegError(f"site {site!r} sent no readable certificate") from exc
    verify_issued(cert, ca_cert)
    if common_name(cert) != site:
        raise FedsegError(
            f"the keys said to be site {site!r}'s come with the certificate of "
            f"{common_name(cert)!r}: refused"
        )
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise FedsegError(f"site {site!r}'s certificate holds no EC key")
    try:
        public.verify(
            signature, _signed_text(run_id, rnd, site, mask_pub, transport_pub),
            ec.ECDSA(hashes.SHA384()),
        )  # fmt: skip
    except InvalidSignature as exc:
        raise FedsegError(
            f"site {site!r}'s round keys are not signed by its consortium key: refused"
        ) from exc
