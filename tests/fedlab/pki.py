"""Certificates and kubeconfigs of one lab site (a CA per site, like kubeadm's)."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAYS = 7


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class SitePKI:
    """CA, API server serving certificate, client certificates and the service-account key."""

    def __init__(self, directory: Path, site: str):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
        self._now = now
        self.ca_key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fedlab-{site}-ca")])
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_file = self._write("ca.crt", _pem_cert(self.ca_cert))
        sa = _key()
        self.sa_key_file = self._write("sa.key", _pem_key(sa))
        self.sa_pub_file = self._write("sa.pub", sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        self.server_cert, self.server_key = self.issue(
            "apiserver", "kube-apiserver", server=True,
            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"], ips=["127.0.0.1"])

    def _write(self, name: str, data: bytes) -> Path:
        p = self.dir / name
        p.write_bytes(data)
        p.chmod(0o600)
        return p

    def issue(self, stem: str, cn: str, orgs: list[str] | None = None, server: bool = False,
              dns: list[str] | None = None, ips: list[str] | None = None) -> tuple[Path, Path]:
        key = _key()
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs or []]
        b = (
            x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(self.ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(self._now).not_valid_after(self._now + dt.timedelta(days=_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        sans = [x509.DNSName(d) for d in dns or []] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips or []]
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(self.ca_key, hashes.SHA256())
        return self._write(f"{stem}.crt", _pem_cert(cert)), self._write(f"{stem}.key", _pem_key(key))

    def kubeconfig(self, path: Path, server: str, cert: Path, key: Path, user: str) -> Path:
        """A kubeconfig with every certificate embedded (MultiKueue refuses file references)."""
        b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "lab", "cluster": {"server": server, "certificate-authority-data": b64(self.ca_file)}}],
            "users": [{"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
            "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": user}}],
            "current-context": "lab",
        }
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        path.chmod(0o600)
        return path
