"""Checks on X.509 certificates that several layers share (the consortium PKI of
``federation.security.pki`` issues them; secure aggregation's key signatures in
``privacy.secagg`` rest on them): who a certificate names and whether a CA issued it."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from fedseg.errors import FedsegError


def common_name(cert_or_csr: x509.Certificate | x509.CertificateSigningRequest) -> str:
    """The subject's CN, or '' if there is none."""
    attrs = cert_or_csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def verify_issued(cert: x509.Certificate, ca_cert: x509.Certificate) -> None:
    """Raise FedsegError unless ``cert`` is signed by ``ca_cert`` and currently valid."""
    if cert.issuer != ca_cert.subject:
        raise FedsegError(f"certificate {common_name(cert)!r} was not issued by this CA")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise FedsegError(
            f"certificate {common_name(cert)!r} does not chain to this CA (bad signature)"
        ) from exc
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise FedsegError(
            f"certificate {common_name(cert)!r} is not valid now "
            f"({cert.not_valid_before_utc:%Y-%m-%d} .. {cert.not_valid_after_utc:%Y-%m-%d}); "
            "reissue it"
        )
