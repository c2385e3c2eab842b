"""TLS and tokens: DICOMweb over HTTPS with a bearer token, and DICOM TLS to our listener.

A throw-away CA signs a certificate for 127.0.0.1 (tests/support/pki.py, ``openssl``).
The client trusts the server only through the CA bundle it is given. Orthanc sits behind
an HTTPS token gateway (tests/support/fault_proxy.py), as at sites that issue tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from monai_tumor.errors import PacsError
from monai_tumor.inference.bundle import read_bundle_info
from monai_tumor.pacs import (
    DicomNode,
    DicomwebClient,
    DicomwebConfig,
    DimseOptions,
    Listener,
    ListenerOptions,
    RetryPolicy,
    TlsConfig,
    echo,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.orthanc_server import (
    PASSWORD,
    USER,
    OrthancServer,
    dicomweb_plugin,
    free_port,
    orthanc_binary,
)
from tests.support.pki import Pki, have_openssl, make_pki

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "brats_glioma_mri"
ONCE = RetryPolicy(attempts=1)
TOKEN = "test-bearer-token-0123456789"

pytestmark = [
    pytest.mark.tools,
    pytest.mark.skipif(not have_openssl(), reason="needs the openssl command"),
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def https_front(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[FaultProxy]:
    """Orthanc behind an HTTPS front (Debian's Orthanc build resets TLS connections itself)."""
    if orthanc_binary() is None or dicomweb_plugin() is None:
        pytest.skip("needs Debian's orthanc and orthanc-dicomweb (scripts/setup.sh)")
    server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    front = FaultProxy(
        server.url,
        free_port(),
        tls=(pki.certificate, pki.key, pki.ca),
        bearer=(TOKEN, f"{USER}:{PASSWORD}"),
    )
    try:
        yield front.start()
    finally:
        front.stop()
        server.stop()


def test_dicomweb_over_https_with_a_bearer_token(https_front: FaultProxy, pki: Pki) -> None:
    url = f"{https_front.url}/dicom-web"
    assert url.startswith("https://")
    trusted = DicomwebConfig(url, token=TOKEN, ca_bundle=pki.ca, retry=ONCE)
    assert DicomwebClient(trusted).search_studies({}) == []
    wrong = DicomwebConfig(url, token="expired", ca_bundle=pki.ca, retry=ONCE)
    with pytest.raises(PacsError, match="refused our credentials"):
        DicomwebClient(wrong).search_studies({})
    unknown = DicomwebConfig(url, token=TOKEN, retry=ONCE)
    with pytest.raises(PacsError, match=r"TLS certificate was not accepted.*--ca-bundle"):
        DicomwebClient(unknown).search_studies({})


def test_listener_speaks_dicom_tls(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    listener = Listener(
        tmp_path / "out",
        bundle=read_bundle_info(BUNDLE),
        options=ListenerOptions(
            ae_title="MONAITUMOR",
            port=port,
            host="127.0.0.1",
            allow=("SCANNER",),
            tls=TlsConfig(certificate=pki.certificate, private_key=pki.key),
        ),
    ).start()
    node = DicomNode("MONAITUMOR", "127.0.0.1", port)
    try:
        echo(node, options=DimseOptions(ae_title="SCANNER", tls=TlsConfig(ca_bundle=pki.ca)))
        with pytest.raises(PacsError):  # plain TCP to a TLS port: no association
            echo(node, options=DimseOptions(ae_title="SCANNER", retry=ONCE, acse_timeout=5))
        with pytest.raises(PacsError):  # a server we cannot verify: refused
            echo(node, options=DimseOptions(ae_title="SCANNER", tls=TlsConfig(), retry=ONCE))
    finally:
        listener.stop()
