"""Every real AMD-signed vector is accepted with exactly the decoded fields of its expected.json."""

from __future__ import annotations

import warnings

import pytest

from contrast.evidence.snp import abi, kds, verify
from tests.evidence.snp.snp_fixtures import SNP_VECTORS, VECTOR_TIME, Vector, load_vector


def test_there_are_snp_vectors() -> None:
    assert len(SNP_VECTORS) >= 2


def _tcb(raw: int) -> dict[str, object]:
    t = kds.decode_tcb(raw, "Milan")
    return {
        "raw": f"0x{raw:016x}",
        "bootloader": t.bootloader,
        "tee": t.tee,
        "snp": t.snp,
        "microcode": t.microcode,
        "reserved": t.reserved.hex(),
    }


def test_vector_decodes_like_expected(vector: Vector) -> None:
    want = vector.expected["decoded"]["report"]
    r = abi.parse_report(vector.report)
    assert r.to_bytes() == vector.report
    assert r.version == want["version"]
    assert r.guest_svn == want["guest_svn"]
    assert f"0x{r.policy:016x}" == want["policy"]
    names = {"ciphertext_hiding": "ciphertext_hiding_dram", "cxl_allow": "cxl_allow"}
    for field in abi.GuestPolicy.__struct_fields__:
        assert getattr(r.guest_policy, field) == want["policy_decoded"][names.get(field, field)], field
    assert r.family_id.hex() == want["family_id"]
    assert r.image_id.hex() == want["image_id"]
    assert r.vmpl == want["vmpl"]
    assert r.signature_algo == want["signature_algo"]
    assert f"0x{r.platform_info:016x}" == want["platform_info"]
    pi = r.platform_info_bits
    for k, v in want["platform_info_decoded"].items():
        if k != "reserved_bits_8_63":
            assert getattr(pi, k) == v, k
    assert f"0x{r.signer_info:08x}" == want["signer_info"]
    assert r.signer.signing_key == want["signer_info_decoded"]["signing_key"]
    assert r.signer.author_key_en == want["signer_info_decoded"]["author_key_en"]
    assert r.signer.mask_chip_key == want["signer_info_decoded"]["mask_chip_key"]
    for name in ("report_data", "measurement", "host_data", "id_key_digest", "author_key_digest", "report_id",
                 "report_id_ma", "chip_id"):  # fmt: skip
        assert getattr(r, name).hex() == want[name], name
    for name in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"):
        assert _tcb(getattr(r, name)) == want[name], name
    assert r.current_version == want["current_version"]
    assert r.committed_version == want["committed_version"]
    assert r.signature_r[::-1].hex() == want["signature_r"]
    assert r.signature_s[::-1].hex() == want["signature_s"]
    assert r.cpuid_fam_id is None
    assert r.launch_mit_vector is None


def test_vector_verifies(vector: Vector) -> None:
    v = verify.SnpVerifier().verify(vector.report, vector.certs(), now=VECTOR_TIME)
    dec = vector.expected["decoded"]
    assert v.product == vector.expected["key_fields"]["product"]
    assert v.chain.signing_key == "VCEK"
    assert not v.chain.emulated
    assert v.chain.root_sha256.hex() == dec["ark_sha256"]
    ext = dec["vek"]["extensions"]
    e = v.chain.leaf_extensions
    assert (e.product_name, e.bl_spl, e.tee_spl, e.snp_spl, e.ucode_spl) == (
        ext["product_name"], ext["bl_spl"], ext["tee_spl"], ext["snp_spl"], ext["ucode_spl"],
    )  # fmt: skip
    assert e.hwid is not None
    assert e.hwid.hex() == ext["hwid"]
    assert e.struct_version == ext["struct_version"]
    assert v.reported_tcb.as_dict() == {
        k: vector.expected["key_fields"]["reported_tcb"][k] for k in ("bootloader", "tee", "snp", "microcode")
    }


def test_vector_product_from_hint_must_agree(vector: Vector) -> None:
    verifier = verify.SnpVerifier()
    assert verifier.verify(vector.report, vector.certs(), now=VECTOR_TIME, product="Milan").product == "Milan"
    with pytest.raises(verify.EvidenceError) as e:
        verifier.verify(vector.report, vector.certs(), now=VECTOR_TIME, product="Genoa")
    assert e.value.code == "evidence.product_mismatch"


def test_serial_zero_vcek_loads_without_warning(vector: Vector) -> None:
    # Real VCEKs have serial 0. We load them deliberately: no warning escapes, and the serial stays 0.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cert = verify.load_certificate(vector.vek)
        assert verify.serial_of(cert) == 0
        verify.SnpVerifier().verify(vector.report, vector.certs(), now=VECTOR_TIME)


def test_serial_zero_suppression_is_narrow() -> None:
    # Outside our loader, cryptography still warns: we did not silence it globally.
    from cryptography import x509
    from cryptography.utils import CryptographyDeprecationWarning

    vek = load_vector(SNP_VECTORS[0]).vek
    with pytest.warns(CryptographyDeprecationWarning, match="serial number"):
        x509.load_der_x509_certificate(vek)


def test_vcek_of_another_chip_is_rejected() -> None:
    a, b = (load_vector(n) for n in SNP_VECTORS[:2])
    certs = [b.vek, *a.certs()[1:]]
    with pytest.raises(verify.EvidenceError) as e:
        verify.SnpVerifier().verify(a.report, certs, now=VECTOR_TIME)
    assert e.value.code == "evidence.chip_id_mismatch"


@pytest.mark.parametrize("product", ["Genoa", "Turin"])
def test_wrong_products_ark_is_rejected(vector: Vector, product: kds.Product) -> None:
    from contrast.evidence.snp import trust

    certs = [vector.vek, *verify.split_certificates(trust.bundled_chain_pem(product))]
    with pytest.raises(verify.EvidenceError) as e:
        verify.SnpVerifier().verify(vector.report, certs, now=VECTOR_TIME)
    assert e.value.code == "evidence.chain_invalid"


def test_missing_vcek_is_rejected(vector: Vector) -> None:
    with pytest.raises(verify.EvidenceError) as e:
        verify.SnpVerifier().verify(vector.report, vector.certs()[1:], now=VECTOR_TIME)
    assert e.value.code == "evidence.missing_certificate"


def test_expired_vcek_is_rejected(vector: Vector) -> None:
    import datetime as dt

    late = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(verify.EvidenceError) as e:
        verify.SnpVerifier().verify(vector.report, vector.certs(), now=late)
    assert e.value.code == "evidence.cert_expired"


def test_bundled_chain_completes_a_bare_vcek(vector: Vector) -> None:
    from contrast.evidence.snp import trust

    certs = [vector.vek, *trust.all_bundled_der()]
    assert verify.SnpVerifier().verify(vector.report, certs, now=VECTOR_TIME).product == "Milan"
