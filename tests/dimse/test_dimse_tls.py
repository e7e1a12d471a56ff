"""DIMSE over TLS (PS3.15 B.9, BCP 195) against a real ``dicomql serve --dimse-tls-*``, driven by
dcmtk's echoscu and storescu with certificates made here."""

from __future__ import annotations

import datetime
import ipaddress
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.support.dimse import AE_TITLE, DICOMWEB, DimseServer, dcmtk, dimse_server, need_dcmtk


@dataclass
class Party:
    """A key and its certificate, as PEM files."""

    key: Path
    certificate: Path


def make_party(
    folder: Path, name: str, issuer: tuple[rsa.RSAPrivateKey, x509.Name] | None, ca: bool = False
) -> tuple[Party, rsa.RSAPrivateKey, x509.Name]:
    """A certificate for ``name`` signed by ``issuer`` (None: self-signed)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_key, signer_name = issuer or (key, subject)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    certificate = builder.sign(signer_key, hashes.SHA256())
    party = Party(folder / f"{name}.key", folder / f"{name}.crt")
    party.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    party.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return party, key, subject


@dataclass
class Pki:
    ca: Party
    server: Party
    client: Party  # signed by the CA
    stranger: Party  # self-signed


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, ca_key, ca_name = make_party(folder, "ca", None, ca=True)
    server, _, _ = make_party(folder, "server", (ca_key, ca_name))
    client, _, _ = make_party(folder, "client", (ca_key, ca_name))
    stranger, _, _ = make_party(folder, "stranger", None)
    return Pki(ca, server, client, stranger)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[DimseServer]:
    need_dcmtk()
    data = tmp_path_factory.mktemp("tls") / "data"
    with dimse_server(
        data,
        "--dimse-tls-cert", str(pki.server.certificate),
        "--dimse-tls-key", str(pki.server.key),
        "--dimse-tls-ca", str(pki.ca.certificate),
    ) as running:  # fmt: skip
        running.create_store()
        yield running


def echoscu(server: DimseServer, *tls: str) -> tuple[int, str]:
    done = dcmtk("echoscu", *tls, "-aec", AE_TITLE, "127.0.0.1", str(server.dimse_port))
    return done.returncode, done.stderr + done.stdout


def test_a_client_with_a_certificate_the_ca_signed_is_answered_over_tls(
    server: DimseServer, pki: Pki
) -> None:
    code, output = echoscu(
        server, "+tls", str(pki.client.key), str(pki.client.certificate),
        "+cf", str(pki.ca.certificate),
    )  # fmt: skip
    assert code == 0, output
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    sent = dcmtk(
        "storescu", "+tls", str(pki.client.key), str(pki.client.certificate),
        "+cf", str(pki.ca.certificate), "-aec", AE_TITLE, "127.0.0.1", str(server.dimse_port),
        path,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr + sent.stdout
    uid = str(dcmread(path).SOPInstanceUID)
    found = server.http.get(f"{DICOMWEB}/instances", params={"SOPInstanceUID": uid}).json()
    assert len(found) == 1
    # A C-FIND too: its responses come from the association's thread, and go out through the
    # upper layer's, which alone reads and writes a TLS connection.
    study = str(dcmread(path).StudyInstanceUID)
    answered = dcmtk(
        "findscu", "-v", "-S", "+tls", str(pki.client.key), str(pki.client.certificate),
        "+cf", str(pki.ca.certificate), "-aec", AE_TITLE, "-k", "QueryRetrieveLevel=STUDY",
        "-k", f"StudyInstanceUID={study}", "-k", "PatientID", "127.0.0.1",
        str(server.dimse_port),
    )  # fmt: skip
    output = answered.stderr + answered.stdout
    assert answered.returncode == 0, output
    assert "Find Response: 1 (Pending)" in output and "Find Response: 2 (Pending)" not in output
    assert "Received Final Find Response (Success)" in output, output


def test_a_plain_association_and_clients_without_a_trusted_certificate_are_refused(
    server: DimseServer, pki: Pki
) -> None:
    code, output = echoscu(server)
    assert code != 0, output
    # No client certificate at all, and one the CA did not sign.
    code, output = echoscu(server, "+tla", "+cf", str(pki.ca.certificate))
    assert code != 0, output
    code, output = echoscu(
        server, "+tls", str(pki.stranger.key), str(pki.stranger.certificate),
        "+cf", str(pki.ca.certificate),
    )  # fmt: skip
    assert code != 0, output


def test_a_silent_connection_does_not_hold_up_other_clients(server: DimseServer, pki: Pki) -> None:
    # The handshake waits in the connection's thread, not in the listener's accept loop.
    with socket.create_connection(("127.0.0.1", server.dimse_port)):
        code, output = echoscu(
            server, "+tls", str(pki.client.key), str(pki.client.certificate),
            "+cf", str(pki.ca.certificate),
        )  # fmt: skip
    assert code == 0, output
