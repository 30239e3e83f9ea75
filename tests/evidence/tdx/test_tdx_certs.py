"""PEM → DER, TBS and Name slicing (:mod:`contrast.evidence.tdx.certs`), checked against ``cryptography``'s
own decoding of the real Intel chains and CRLs, plus the verifier-level consequences: names compare byte for
byte, and the signed-document splitter refuses repeated members."""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contrast.errors import ContrastError, EvidenceError
from contrast.evidence.tdx import abi, certs, pcs
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform
from contrast.evidence.tdx.verify import TdxVerifier
from tests.evidence.tdx.tdx_helpers import EMU_NOW, VECTOR, emu_quote

REAL_PCK_PEM = abi.parse_quote((VECTOR / "quote.bin").read_bytes()).signature_data.cert_data.pck_chain_pem
REAL_PEMS = [
    REAL_PCK_PEM,
    (VECTOR / "tcb_signing_chain.pem").read_bytes(),
    (VECTOR / "pck_crl_issuer_chain.pem").read_bytes(),
]
REAL_CRLS = [(VECTOR / "pck_crl.der").read_bytes(), (VECTOR / "root_crl.der").read_bytes()]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


def _code(fn: Any) -> str:
    with pytest.raises(ContrastError) as e:
        fn()
    return e.value.code


@pytest.mark.parametrize("pem", REAL_PEMS, ids=["pck_chain", "tcb_signing_chain", "pck_crl_issuer_chain"])
def test_real_chains_decode_like_cryptography(pem: bytes) -> None:
    reference = x509.load_pem_x509_certificates(pem)
    ders = certs.pem_certificates(pem)
    assert ders == [c.public_bytes(Encoding.DER) for c in reference]
    for der, cert in zip(ders, reference, strict=True):
        tbs = certs.signed_part(der)
        assert tbs == cert.tbs_certificate_bytes
        issuer, subject = certs.certificate_names(tbs)
        assert issuer == cert.issuer.public_bytes()
        assert subject == cert.subject.public_bytes()


@pytest.mark.parametrize("der", REAL_CRLS, ids=["pck_crl", "root_crl"])
def test_real_crl_issuers(der: bytes) -> None:
    crl = x509.load_der_x509_crl(der)
    tbs = certs.signed_part(der)
    assert tbs == crl.tbs_certlist_bytes
    assert certs.crl_issuer(tbs) == crl.issuer.public_bytes()


def test_pem_whitespace_variants_are_accepted() -> None:
    pem = REAL_PEMS[1]
    expected = certs.pem_certificates(pem)
    for variant in (
        pem.replace(b"\n", b"\r\n"),
        pem.rstrip(b"\n"),
        b"\n\n" + pem.replace(b"-----\n-----", b"-----\n\n \t\n-----") + b"\n \n",
    ):
        assert certs.pem_certificates(variant) == expected


def test_pem_rejections() -> None:
    pem = REAL_PEMS[1]
    first_end = pem.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----")
    body_at = pem.index(b"\n") + 1
    for bad in (
        b"",
        b" \n\t",
        b"subject=CN=Intel SGX TCB Signing\n" + pem,  # what `openssl x509` prints above a block
        pem + b"trailing text",
        pem.replace(b"CERTIFICATE", b"PRIVATE KEY"),
        pem[:first_end].replace(b"-----END CERTIFICATE-----", b""),
        pem[:body_at] + b"*" + pem[body_at + 1 :],  # not in the base64 alphabet
        pem[:body_at] + b"A" + pem[body_at:],  # one base64 character too many
        pem[:first_end].replace(b"=", b"") + pem[first_end:],  # padding removed (if any)
        b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        b"\x00" + pem,
    ):
        if bad == pem:  # the padding case is moot when the first certificate needs none
            continue
        with pytest.raises(ValueError):
            certs.pem_certificates(bad)


@FUZZ
@given(st.binary(max_size=512))
def test_pem_parser_on_arbitrary_bytes(data: bytes) -> None:
    for candidate in (data, b"-----BEGIN CERTIFICATE-----\n" + data + b"\n-----END CERTIFICATE-----\n"):
        try:
            ders = certs.pem_certificates(candidate)
        except ValueError:
            continue
        assert ders
        assert all(ders)


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")  # mutated serials
@FUZZ
@given(st.sampled_from(REAL_PEMS), st.data())
def test_pem_parser_agrees_with_cryptography_under_mutation(pem: bytes, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(pem) - 1))
    mutated = pem[:i] + bytes([data.draw(st.integers(0, 255))]) + pem[i + 1 :]
    try:
        ours = certs.pem_certificates(mutated)
    except ValueError:
        return
    # Whatever we accept, cryptography reads as the same certificates (it is the more lenient parser).
    try:
        theirs = [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(mutated)]
    except (ValueError, x509.InvalidVersion):  # a mutated version field is not a ValueError to cryptography
        theirs = None
    if theirs is not None:
        assert ours == theirs


@FUZZ
@given(st.sampled_from([d for pem in REAL_PEMS for d in certs.pem_certificates(pem)] + REAL_CRLS), st.data())
def test_der_slicers_only_raise_value_error(der: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(der)))
    i = data.draw(st.integers(0, len(der) - 1))
    for candidate in (der[:cut], der[:i] + bytes([data.draw(st.integers(0, 255))]) + der[i + 1 :]):
        for fn in (certs.signed_part, certs.crl_issuer, certs.certificate_names):
            with contextlib.suppress(ValueError):
                fn(candidate)


def _reissued_leaf(platform: EmulatedTdxPlatform, issuer: x509.Name) -> bytes:
    leaf = platform.pck
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(issuer)
        .public_key(leaf.public_key())
        .serial_number(leaf.serial_number)
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(leaf.not_valid_after_utc)
    )
    for ext in leaf.extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    cert = builder.sign(platform.pck_ca_key, hashes.SHA256())
    return b"".join(c.public_bytes(Encoding.PEM) for c in (cert, platform.pck_ca, platform.root))


def _with_pck_chain(platform: EmulatedTdxPlatform, pem: bytes) -> bytes:
    q = abi.parse_quote(emu_quote(platform))
    sd = q.signature_data
    cd = msgspec.structs.replace(sd.cert_data, pck_chain_raw=pem)
    return msgspec.structs.replace(q, signature_data=msgspec.structs.replace(sd, cert_data=cd)).to_bytes()


def test_issuer_names_compare_byte_for_byte(platform: EmulatedTdxPlatform, emu_verifier: TdxVerifier) -> None:
    # The same name re-encoded (the CN as PrintableString instead of UTF8String) is equal for
    # cryptography's Name objects, but not byte for byte: the chain is refused, as webpki refuses it.
    same = x509.Name(
        [
            x509.NameAttribute(a.oid, str(a.value), _ASN1Type.PrintableString)
            if a.oid == NameOID.COMMON_NAME
            else a
            for a in platform.pck_ca.subject
        ]
    )
    assert same == platform.pck_ca.subject
    assert same.public_bytes() != platform.pck_ca.subject.public_bytes()

    def verify(pem: bytes) -> object:
        return TdxVerifier(emu_verifier.roots).verify(
            _with_pck_chain(platform, pem), collateral=None, now=EMU_NOW, authenticity_only=True
        )

    # Control: the re-issued leaf with the name encoded as the CA encodes it verifies.
    verify(_reissued_leaf(platform, platform.pck_ca.subject))
    assert _code(lambda: verify(_reissued_leaf(platform, same))) == "evidence.chain_invalid"


def test_pck_chain_with_text_between_blocks_is_refused(
    platform: EmulatedTdxPlatform, emu_verifier: TdxVerifier
) -> None:
    pem = platform.pck_chain_pem.replace(b"-----\n-----BEGIN", b"-----\nnote\n-----BEGIN", 1)
    assert pem != platform.pck_chain_pem
    assert (
        _code(
            lambda: TdxVerifier(emu_verifier.roots).verify(
                _with_pck_chain(platform, pem), collateral=None, now=EMU_NOW, authenticity_only=True
            )
        )
        == "evidence.chain_invalid"
    )


def test_signed_document_members_must_each_appear_once_and_literally() -> None:
    sig = b'"' + b"ab" * 64 + b'"'
    ok = b'{"signature":' + sig + b',\n  "tcbInfo" : {"x":[1]}\r\n}\n'
    assert pcs.split_signed_document(ok, "tcbInfo") == (b'{"x":[1]}', bytes.fromhex("ab" * 64))
    for bad in (
        # A repeated member, even with the same value, and a repeated signature.
        b'{"tcbInfo":{"x":[1]},"tcbInfo":{"x":[1]},"signature":' + sig + b"}",
        b'{"tcbInfo":{"x":[1]},"signature":' + sig + b',"signature":' + sig + b"}",
        # A key spelled with an escape decodes to the same name; it is refused all the same.
        b'{"tcb\\u0049nfo":{"x":[1]},"signature":' + sig + b"}",
        b'{"tcbInfo":{"x":[1]},"signature":' + sig + b"} x",
        b'{"tcbInfo":{"x":[1]},"signature":12}',
        b'{"tcbInfo":{"x":[1]},"signature":"' + b"zz" * 64 + b'"}',
        b'{"tcbInfo":{"x":"\xff"},"signature":' + sig + b"}",  # not UTF-8
    ):
        with pytest.raises(EvidenceError) as e:
            pcs.split_signed_document(bad, "tcbInfo")
        assert e.value.code == "evidence.bad_collateral"


@FUZZ
@given(st.data())
def test_signed_document_split_is_a_slice_of_the_input(data: st.DataObject) -> None:
    doc = (VECTOR / "tcb_info.json").read_bytes()
    i = data.draw(st.integers(0, len(doc) - 1))
    mutated = doc[:i] + bytes([data.draw(st.integers(0, 255))]) + doc[i + 1 :]
    try:
        inner, sig = pcs.split_signed_document(mutated, "tcbInfo")
    except EvidenceError as e:
        code = e.code
    else:
        assert inner in mutated
        assert len(sig) == 64
        return
    assert code == "evidence.bad_collateral"


def test_base64_helper_matches_the_stdlib() -> None:
    # The regression test elsewhere builds PEM with base64.encodebytes; our parser must read that layout.
    der = certs.pem_certificates(REAL_PEMS[1])[0]
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
    assert certs.pem_certificates(pem) == [der]
