"""The consortium PKI: chains, SANs, key formats Flower reads, permissions, the CSR flow."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedseg.errors import FedsegError
from fedseg.federation.security import pki


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _private_key_files(root: Path) -> set[Path]:
    """Every file under ``root`` that holds a private key, whatever its name."""
    return {p for p in root.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()}


def test_ca_is_a_p384_ca_with_private_key_0600(tmp_path: Path) -> None:
    paths = pki.init_ca(tmp_path / "ca")
    cert = pki.load_cert(paths.cert)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.key_agreement
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
    cert.verify_directly_issued_by(cert)  # self-signed
    years = (cert.not_valid_after_utc - cert.not_valid_before_utc).days / 365
    assert 9.9 < years < 10.1
    assert _mode(paths.key) == 0o600
    with pytest.raises(FedsegError, match="already holds a CA"):
        pki.init_ca(tmp_path / "ca")


def test_server_certificate_chains_and_names_host_ips_and_loopback(tmp_path: Path) -> None:
    root = tmp_path / "ca"
    pki.init_ca(root)
    cert_path, key_path = pki.issue_server(root, "agg.example.org", ips=["10.1.2.3"])
    cert, ca = pki.load_cert(cert_path), pki.load_cert(root / "ca.crt")
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"agg.example.org", "localhost"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_agreement and not usage.key_cert_sign
    assert _mode(key_path) == 0o600
    with pytest.raises(FedsegError, match="not an IP address"):
        pki.issue_server(tmp_path / "ca", "x", ips=["not-an-ip"])


def _handshake(cert: Path, key: Path, cafile: Path, server_hostname: str) -> str:
    """A real TLS handshake on loopback; returns the server certificate's CN as seen."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(cafile))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            peer = tls.getpeercert()
    finally:
        thread.join(timeout=5)
        listener.close()
    return dict(x[0] for x in peer["subject"])["commonName"]


def test_server_certificate_passes_a_real_tls_handshake_only_with_our_ca(tmp_path: Path) -> None:
    root, other = tmp_path / "ca", tmp_path / "other"
    pki.init_ca(root)
    pki.init_ca(other)
    cert, key = pki.issue_server(root, "agg.example.org")
    assert _handshake(cert, key, root / "ca.crt", "agg.example.org") == "agg.example.org"
    assert _handshake(cert, key, root / "ca.crt", "localhost") == "agg.example.org"
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(cert, key, other / "ca.crt", "agg.example.org")  # another consortium
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(cert, key, root / "ca.crt", "evil.example.org")  # a name not in the SANs


def test_issue_site_key_is_what_flower_supernodes_load(coordinator: Path) -> None:
    bundle = coordinator / "sites" / "alpha"
    key_bytes = (bundle / "site.key").read_bytes()
    assert key_bytes.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    # flower-supernode --auth-supernode-private-key loads exactly this way
    key = serialization.load_ssh_private_key(key_bytes, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    # flwr supernode register loads the public key this way
    pub = serialization.load_ssh_public_key((bundle / "site.pub").read_bytes())
    assert pub.public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    assert _mode(bundle / "site.key") == 0o600
    cert = pki.load_cert(bundle / "site.crt")
    cert.verify_directly_issued_by(pki.load_cert(coordinator / "ca.crt"))
    assert pki.common_name(cert) == "alpha"
    assert [s.name for s in pki.enrolled_sites(coordinator)] == ["alpha", "beta", "gamma"]
    creds = pki.site_credentials(bundle)
    assert creds.name == "alpha" and creds.auth_key == bundle / "site.key"


def test_csr_flow_never_puts_the_site_private_key_on_the_coordinator(tmp_path: Path) -> None:
    coord, site = tmp_path / "coord", tmp_path / "hospital"
    pki.init_ca(coord)
    pki.issue_server(coord, "localhost")
    before = _private_key_files(coord)
    csr = pki.make_request("delta", site)
    assert _mode(site / "site.key") == 0o600
    sent = tmp_path / "inbox" / csr.name  # only the CSR travels
    sent.parent.mkdir()
    shutil.copyfile(csr, sent)
    bundle = pki.sign_request(coord, sent)
    assert _private_key_files(coord) == before == {coord / "ca.key", coord / "server/server.key"}
    # what comes back makes a complete, consistent site folder with the site's own key
    for name in ("ca.crt", "site.crt"):
        shutil.copyfile(bundle / name, site / name)
    creds = pki.site_credentials(site)
    assert creds.name == "delta"
    enrolled = {s.name: s for s in pki.enrolled_sites(coord)}
    site_key = pki.load_private_key(site / "site.key")
    assert enrolled["delta"].openssh_public_key == pki.public_key_openssh(site_key.public_key())
    with pytest.raises(FedsegError, match="already enrolled"):
        pki.sign_request(coord, sent)


def test_sign_refuses_a_tampered_request(tmp_path: Path) -> None:
    coord = tmp_path / "coord"
    pki.init_ca(coord)
    csr_path = pki.make_request("delta", tmp_path / "site")
    pem = csr_path.read_bytes()
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # flip one bit of the signature
    csr_path.write_bytes(
        x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(FedsegError, match="signature is invalid"):
        pki.sign_request(coord, csr_path)
    assert not (coord / "enrolled").exists()


def test_enrollment_from_another_ca_is_rejected(tmp_path: Path) -> None:
    coord, rogue = tmp_path / "coord", tmp_path / "rogue"
    pki.init_ca(coord)
    pki.init_ca(rogue, name="fedseg consortium CA")  # same name, different key
    pki.issue_site(rogue, "mallory")
    (coord / "enrolled").mkdir()
    shutil.copyfile(rogue / "enrolled/mallory.crt", coord / "enrolled/mallory.crt")
    with pytest.raises(FedsegError, match="does not chain to this CA"):
        pki.enrolled_sites(coord)


def test_site_credentials_catch_mixups_and_loose_permissions(coordinator: Path) -> None:
    alpha, beta = coordinator / "sites/alpha", coordinator / "sites/beta"
    shutil.copyfile(beta / "site.crt", alpha / "site.crt")
    with pytest.raises(FedsegError, match="does not match"):
        pki.site_credentials(alpha)
    (beta / "site.key").chmod(0o644)
    with pytest.raises(FedsegError, match="readable by others"):
        pki.site_credentials(beta)


@pytest.mark.parametrize("name", ["", "a b", "../x", "-x", ".x", "a/b", "a" * 65])
def test_bad_site_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(FedsegError, match="invalid site name"):
        pki.make_request(name, tmp_path)
