"""The consortium's PKI: one CA, the SuperLink's TLS certificate, and the sites' enrolled keys.

Layout of the coordinator's credentials folder (``fedseg pki init DIR``)::

    DIR/ca.crt, DIR/ca.key                 consortium CA (EC P-384, self-signed)
    DIR/server/server.crt, server.key      SuperLink TLS certificate (SANs: host, IPs, loopback)
    DIR/enrolled/NAME.crt                  one CA-signed certificate per enrolled site; its
                                           public key is the site's SuperNode auth key
    DIR/sites/NAME/                        what to hand to the site (ca.crt, site.crt, and
                                           site.key only when the coordinator made the key)

A site's credentials folder (``fedseg pki request NAME --out DIR``, or a copy of
``sites/NAME``) holds ``ca.crt``, ``site.key`` (the SuperNode auth key, OpenSSH format, as
Flower 1.41's ``flower-supernode --auth-supernode-private-key`` reads it) and ``site.crt``.

Flower 1.41 authenticates SuperNodes with NIST-curve EC keys: the SuperNode signs each Fleet
request with its private key, and the SuperLink (``--enable-supernode-auth``) accepts only
public keys registered through the Control API (``flwr supernode register``). Private key
files are written with mode 0600 and never overwritten. Who a certificate names and whether
the CA issued it (``common_name``, ``verify_issued``) are ``fedseg.certificates``'s, shared
with secure aggregation's key signatures.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedseg.certificates import common_name, verify_issued
from fedseg.errors import FedsegError
from fedseg.plan import _SITE_NAME

CURVE = ec.SECP384R1()
CA_DAYS = 3650
SERVER_DAYS = 825
SITE_DAYS = 825
ORGANIZATION = "fedseg consortium"
LOOPBACK_NAMES = ("localhost",)
LOOPBACK_IPS = ("127.0.0.1", "::1")

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_DIR = "server"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
ENROLLED_DIR = "enrolled"
SITES_DIR = "sites"
SITE_KEY_FILE = "site.key"
SITE_PUB = "site.pub"
SITE_CERT = "site.crt"


@dataclass(frozen=True)
class CaPaths:
    """Paths of a coordinator's credentials folder."""

    root: Path

    @property
    def cert(self) -> Path:
        return self.root / CA_CERT

    @property
    def key(self) -> Path:
        return self.root / CA_KEY

    @property
    def server_cert(self) -> Path:
        return self.root / SERVER_DIR / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.root / SERVER_DIR / SERVER_KEY

    @property
    def enrolled(self) -> Path:
        return self.root / ENROLLED_DIR

    def site_bundle(self, name: str) -> Path:
        return self.root / SITES_DIR / name


@dataclass(frozen=True)
class EnrolledSite:
    """A site whose certificate chains to the CA: its name and SuperNode public key."""

    name: str
    public_key: ec.EllipticCurvePublicKey
    not_after: dt.datetime

    @property
    def openssh_public_key(self) -> bytes:
        """The key as ``flwr supernode register`` reads it (``ecdsa-sha2-nistp384 ...``)."""
        return public_key_openssh(self.public_key)


# --- small helpers -----------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (no window where it is world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise FedsegError(
            f"{path} already exists: refusing to overwrite a private key; move it away first"
        ) from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)  # the umask may have narrowed it; make the mode exact


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, 0o644)


def check_site_name(name: str) -> str:
    """Return ``name`` if it is a valid site name (as in a plan: letters, digits, ``_-.``)."""
    if not _SITE_NAME.match(name):  # the plan's rule: every plan site can be enrolled
        raise FedsegError(
            f"invalid site name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (the name the plan gives the site)"
        )
    return name


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-384 private key (a NIST curve, as Flower's node authentication requires)."""
    return ec.generate_private_key(CURVE)


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (TLS servers read it at start without a passphrase)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_key_openssh(key: ec.EllipticCurvePrivateKey) -> bytes:
    """OpenSSH private key format, unencrypted: what ``flower-supernode`` loads."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


def public_key_openssh(key: ec.EllipticCurvePublicKey) -> bytes:
    """OpenSSH public key line: what ``flwr supernode register`` loads."""
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def load_cert(path: Path) -> x509.Certificate:
    """Read a PEM certificate, or raise a one-line FedsegError."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError as exc:
        raise FedsegError(f"certificate {path} not found") from exc
    except ValueError as exc:
        raise FedsegError(f"{path} is not a PEM certificate: {exc}") from exc


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Read an EC private key in PEM (PKCS#8/SEC1) or OpenSSH format."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise FedsegError(f"private key {path} not found") from exc
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, None)
        else:
            key = serialization.load_pem_private_key(data, None)
    except (ValueError, TypeError) as exc:
        raise FedsegError(f"{path} is not an unencrypted private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise FedsegError(f"{path} is not an EC private key; make keys with `fedseg pki`")
    return key


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


# --- CA ----------------------------------------------------------------------------------


def init_ca(root: Path, name: str = "fedseg consortium CA", days: int = CA_DAYS) -> CaPaths:
    """Create the consortium CA in ``root`` (ca.crt 0644, ca.key 0600); refuse to overwrite."""
    paths = CaPaths(root)
    if paths.cert.exists() or paths.key.exists():
        raise FedsegError(f"{root} already holds a CA ({CA_CERT}/{CA_KEY}); use another folder")
    root.mkdir(parents=True, exist_ok=True)
    key = new_key()
    cert = (
        _builder(_name(name), _name(name), key.public_key(), _now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA384())
    )
    _write_private(paths.key, private_key_pem(key))
    _write_public(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
    return paths


def load_ca(root: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key of a coordinator folder made by :func:`init_ca`."""
    paths = CaPaths(root)
    if not paths.cert.exists() or not paths.key.exists():
        raise FedsegError(
            f"{root} holds no CA ({CA_CERT} and {CA_KEY}); run `fedseg pki init {root}` first"
        )
    return load_cert(paths.cert), load_private_key(paths.key)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    """A certificate valid from 5 minutes ago (clock skew between machines) to ``not_after``."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; a leaf (TLS server, SuperNode) signs and agrees keys."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject_cn: str,
    public_key: ec.EllipticCurvePublicKey,
    days: int,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    not_after = min(_now() + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    builder = (
        _builder(_name(subject_cn), ca_cert.subject, public_key, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA384())


def _host_san(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not re.match(r"^[A-Za-z0-9*]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$", value):
        raise FedsegError(f"invalid host name {value!r}: give a DNS name or an IP address")
    return x509.DNSName(value.lower())


def issue_server(
    root: Path, host: str, ips: list[str] | None = None, days: int = SERVER_DAYS
) -> tuple[Path, Path]:
    """Issue the SuperLink TLS certificate for ``host`` (+ ``ips``, localhost, 127.0.0.1, ::1).

    Loopback names are always included: the coordinator's own tools (``flwr``, the ServerApp
    process) reach the SuperLink on 127.0.0.1 with the same certificate.
    Returns (certificate path, key path); the key is written 0600.
    """
    for ip in ips or []:
        try:
            ipaddress.ip_address(ip)
        except ValueError as exc:
            raise FedsegError(f"--ip {ip!r} is not an IP address") from exc
    sans: list[x509.GeneralName] = []
    for value in [host, *(ips or []), *LOOPBACK_NAMES, *LOOPBACK_IPS]:
        san = _host_san(value)
        if san not in sans:
            sans.append(san)
    ca_cert, ca_key = load_ca(root)
    paths = CaPaths(root)
    if paths.server_key.exists():
        raise FedsegError(
            f"{paths.server_key} already exists; move {paths.server_key.parent} away to reissue"
        )
    key = new_key()
    cert = _issue(
        ca_cert, ca_key, host, key.public_key(), days, ExtendedKeyUsageOID.SERVER_AUTH, sans
    )
    _write_private(paths.server_key, private_key_pem(key))
    _write_public(paths.server_cert, cert.public_bytes(serialization.Encoding.PEM))
    return paths.server_cert, paths.server_key


def _write_bundle(root: Path, name: str, cert: x509.Certificate) -> Path:
    """Record the enrollment and write the folder to hand to the site (no private key)."""
    paths = CaPaths(root)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    _write_public(paths.enrolled / f"{name}.crt", cert_pem)
    bundle = paths.site_bundle(name)
    bundle.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(paths.cert, bundle / CA_CERT)
    _write_public(bundle / SITE_CERT, cert_pem)
    _write_public(bundle / SITE_PUB, public_key_openssh(cert.public_key()))  # type: ignore[arg-type]
    return bundle


def _check_not_enrolled(root: Path, name: str) -> None:
    if (CaPaths(root).enrolled / f"{name}.crt").exists():
        raise FedsegError(
            f"site {name!r} is already enrolled ({ENROLLED_DIR}/{name}.crt); "
            "remove that file to re-enroll it"
        )


def issue_site(root: Path, name: str, days: int = SITE_DAYS) -> Path:
    """Make a site's SuperNode key pair and certificate at the coordinator; enroll it.

    Convenience flow: the coordinator briefly holds the site's private key (written 0600
    into ``sites/NAME/site.key``); hand the folder over and delete it. The request/sign flow
    (:func:`make_request`, :func:`sign_request`) avoids that. Returns the bundle folder.
    """
    check_site_name(name)
    ca_cert, ca_key = load_ca(root)
    _check_not_enrolled(root, name)
    bundle = CaPaths(root).site_bundle(name)
    if (bundle / SITE_KEY_FILE).exists():
        raise FedsegError(f"{bundle / SITE_KEY_FILE} already exists; move {bundle} away first")
    key = new_key()
    cert = _issue(ca_cert, ca_key, name, key.public_key(), days, ExtendedKeyUsageOID.CLIENT_AUTH)
    _write_private(bundle / SITE_KEY_FILE, private_key_openssh(key))
    return _write_bundle(root, name, cert)


# --- CSR flow: the site's private key never leaves the site ------------------------------


def make_request(name: str, out: Path) -> Path:
    """At the site: make the SuperNode key (``out/site.key``, 0600) and ``out/NAME.csr``.

    Only the CSR (public key + name, signed by the private key) is sent to the coordinator.
    Returns the CSR path.
    """
    check_site_name(name)
    if (out / SITE_KEY_FILE).exists():
        raise FedsegError(f"{out / SITE_KEY_FILE} already exists; this folder already has a key")
    key = new_key()
    csr = (
        x509.CertificateSigningRequestBuilder().subject_name(_name(name)).sign(key, hashes.SHA384())
    )
    _write_private(out / SITE_KEY_FILE, private_key_openssh(key))
    _write_public(out / SITE_PUB, public_key_openssh(key.public_key()))
    csr_path = out / f"{name}.csr"
    _write_public(csr_path, csr.public_bytes(serialization.Encoding.PEM))
    return csr_path


def sign_request(root: Path, csr_path: Path, days: int = SITE_DAYS) -> Path:
    """At the coordinator: check a site's CSR, enroll its key, write the bundle to send back.

    The CSR's signature proves the site holds the private key; the name is its CN.
    Returns the bundle folder (``sites/NAME``: ca.crt, site.crt, site.pub; no private key).
    """
    ca_cert, ca_key = load_ca(root)
    try:
        csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    except FileNotFoundError as exc:
        raise FedsegError(f"request {csr_path} not found") from exc
    except ValueError as exc:
        raise FedsegError(
            f"{csr_path} is not a certificate request; make one with `fedseg pki request`"
        ) from exc
    if not csr.is_signature_valid:
        raise FedsegError(f"{csr_path}: the request's signature is invalid; ask for a new one")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name not in (
        "secp256r1",
        "secp384r1",
        "secp521r1",
    ):
        raise FedsegError(
            f"{csr_path}: the key must be EC on a NIST curve (P-256/384/521) for Flower's "
            "SuperNode authentication; make the request with `fedseg pki request`"
        )
    name = check_site_name(common_name(csr))
    _check_not_enrolled(root, name)
    cert = _issue(ca_cert, ca_key, name, public_key, days, ExtendedKeyUsageOID.CLIENT_AUTH)
    return _write_bundle(root, name, cert)


# --- verification ------------------------------------------------------------------------


def enrolled_sites(root: Path) -> list[EnrolledSite]:
    """Every site enrolled in ``root/enrolled``, each certificate checked against the CA."""
    ca_cert = load_cert(CaPaths(root).cert)
    sites = []
    for path in sorted(CaPaths(root).enrolled.glob("*.crt")):
        cert = load_cert(path)
        verify_issued(cert, ca_cert)
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise FedsegError(f"{path}: not an EC key; re-enroll the site")
        sites.append(EnrolledSite(common_name(cert), key, cert.not_valid_after_utc))
    return sites


@dataclass(frozen=True)
class SiteCredentials:
    """What a site needs to start its SuperNode, checked for consistency."""

    ca_cert: Path
    auth_key: Path
    name: str


def site_credentials(creds: Path) -> SiteCredentials:
    """Check a site's credentials folder (ca.crt, site.key, optional site.crt) and return it.

    If ``site.crt`` is present, it must chain to ``ca.crt`` and hold the same public key as
    ``site.key``: that catches a mixed-up folder before the SuperLink refuses the node.
    """
    ca_path, key_path, cert_path = creds / CA_CERT, creds / SITE_KEY_FILE, creds / SITE_CERT
    if not creds.is_dir():
        raise FedsegError(f"credentials folder {creds} not found")
    if not ca_path.exists():
        raise FedsegError(f"{ca_path} missing: copy ca.crt from the bundle the coordinator sent")
    if not key_path.exists():
        raise FedsegError(
            f"{key_path} missing: make the site key with `fedseg pki request NAME --out {creds}`"
        )
    mode = key_path.stat().st_mode & 0o777
    if mode & 0o077:
        raise FedsegError(f"{key_path} is readable by others (mode {mode:o}); chmod 600 it")
    ca_cert = load_cert(ca_path)
    key = load_private_key(key_path)
    name = ""
    if cert_path.exists():
        cert = load_cert(cert_path)
        verify_issued(cert, ca_cert)
        if public_key_openssh(cert.public_key()) != public_key_openssh(key.public_key()):  # type: ignore[arg-type]
            raise FedsegError(
                f"{cert_path} does not match {key_path}: use the certificate signed for this key"
            )
        name = common_name(cert)
    return SiteCredentials(ca_cert=ca_path, auth_key=key_path, name=name)


#: folder of a simulated run's throwaway CA (``fedseg simulate``: under ``flwr-home/``;
#: ``fedseg compare``: in each plan's run folder)
SIMULATED_PKI = "secagg-pki"


def throwaway_site_creds(root: Path, sites: list[str]) -> dict[str, Path]:
    """Consortium credentials for simulated sites (``fedseg simulate``/``compare``: one
    operator plays every site): a CA in ``root`` (made on first use) and each site's
    credentials folder (``site.key``, ``site.crt``, ``ca.crt``; made once, kept for a
    resumed run). The sites then sign and check what they send as deployed ones do."""
    paths = CaPaths(root)
    if not paths.cert.exists():
        init_ca(root, name="fedseg simulated consortium CA")
    out = {}
    for site in sites:
        bundle = paths.site_bundle(site)
        if not (bundle / SITE_KEY_FILE).exists():
            issue_site(root, site)
        out[site] = bundle
    return out
