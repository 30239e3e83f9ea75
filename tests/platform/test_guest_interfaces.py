"""configfs-tsm and /dev/sev-guest down to their boundary: the kernel's file protocol and the ioctl call."""

from __future__ import annotations

import errno
import secrets
from pathlib import Path

import pytest

from contrast.errors import EvidenceError
from contrast.evidence.snp import abi
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.tdx import abi as tdx_abi
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform
from contrast.platform import sev_guest
from contrast.platform.configfs_tsm import ConfigfsTsm, OsFiles
from contrast.testing.guest import FakeSevGuestIoctl, FakeTsmTree, SnpMachine, TdxMachine

ROOT = Path("/sys/kernel/config/tsm/report")


def snp_tree(emu: EmulatedSnpPlatform, *, host_certs: bool = True) -> FakeTsmTree:
    return FakeTsmTree(SnpMachine(emu, host_data=b"\x11" * 32, host_certs=host_certs))


async def test_configfs_snp_report_and_host_certificates(snp_emulator: EmulatedSnpPlatform) -> None:
    tree = snp_tree(snp_emulator)
    tsm = ConfigfsTsm(files=tree, vmpl=0)
    assert await tsm.probe() == "snp"
    rd = secrets.token_bytes(64)
    ev = await tsm.evidence(rd)
    report = abi.parse_report(ev.report)
    assert report.report_data == rd
    assert report.host_data == b"\x11" * 32
    assert ev.certs == snp_emulator.cert_chain("Milan")
    assert tree.reports_generated == 1  # outblob and auxblob come from one generation
    assert tree.exists(ROOT)


async def test_configfs_without_host_certificates_leaves_them_to_the_provider(
    snp_emulator: EmulatedSnpPlatform,
) -> None:
    ev = await ConfigfsTsm(files=snp_tree(snp_emulator, host_certs=False)).evidence(bytes(64))
    assert ev.certs == []


async def test_configfs_tdx_quote(tdx_emulator: EmulatedTdxPlatform) -> None:
    tsm = ConfigfsTsm(files=FakeTsmTree(TdxMachine(tdx_emulator, b"\x22" * 32)))
    assert await tsm.probe() == "tdx"
    rd = secrets.token_bytes(64)
    ev = await tsm.evidence(rd)
    quote = tdx_abi.parse_quote(ev.report)
    assert quote.body.report_data == rd
    assert quote.body.mr_config_id[:32] == b"\x22" * 32
    assert ev.tdx_collateral is None  # the provider attaches it


async def test_a_concurrent_writer_is_detected_by_the_generation(snp_emulator: EmulatedSnpPlatform) -> None:
    tree = snp_tree(snp_emulator)

    def intruder(path: Path) -> None:
        if path.name == "auxblob":  # between our outblob and auxblob reads, someone rewrites inblob
            tree.on_read = None
            tree.write(path.parent / "inblob", bytes(64))

    tree.on_read = intruder
    with pytest.raises(EvidenceError) as e:
        await ConfigfsTsm(files=tree).evidence(secrets.token_bytes(64))
    assert e.value.code == "evidence.platform_race"


def test_the_fake_tree_keeps_the_kernels_rules(snp_emulator: EmulatedSnpPlatform) -> None:
    tree = snp_tree(snp_emulator)
    entry = ROOT / "e"
    tree.mkdir(entry)
    with pytest.raises(FileExistsError):
        tree.mkdir(entry)
    with pytest.raises(OSError) as e:
        tree.read(entry / "outblob", 4096)  # no inblob yet
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        tree.write(entry / "inblob", bytes(65))
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        tree.write(entry / "outblob", b"x")
    assert e.value.errno == errno.EACCES
    with pytest.raises(OSError) as e:
        tree.write(entry / "privlevel", b"4")
    assert e.value.errno == errno.EINVAL
    assert tree.read(entry / "generation", 32) == b"0\n"
    tree.write(entry / "inblob", bytes(64))
    assert tree.read(entry / "generation", 32) == b"1\n"
    first = tree.read(entry / "outblob", 4096)
    assert tree.read(entry / "outblob", 4096) == first  # cached until the next write
    tree.write(entry / "inblob", b"\x01" * 64)
    assert tree.read(entry / "outblob", 4096) != first
    tree.rmdir(entry)
    assert not tree.exists(entry / "outblob")


def test_the_os_files_seam_uses_plain_system_calls(tmp_path: Path) -> None:
    files = OsFiles()
    d = tmp_path / "entry"
    files.mkdir(d)
    (d / "generation").write_text("3\n")
    files.write(d / "generation", b"4\n")
    assert files.read(d / "generation", 32) == b"4\n"
    with pytest.raises(FileNotFoundError):
        files.write(d / "absent", b"x")  # configfs attributes are never created
    (d / "generation").unlink()
    files.rmdir(d)
    assert not files.exists(d)


def test_ioctl_numbers_match_linux_uapi() -> None:
    assert sev_guest.SNP_GET_REPORT == 0xC0205300
    assert sev_guest.SNP_GET_EXT_REPORT == 0xC0205302
    assert len(sev_guest.pack_ext_request(bytes(64), 0, 0, 0)) == sev_guest.EXT_REQ_SIZE == 112


@pytest.mark.parametrize("host_certs", [True, False], ids=["host-certs", "no-certs"])
async def test_sev_guest_extended_report_down_to_the_ioctl(
    tmp_path: Path, snp_emulator: EmulatedSnpPlatform, host_certs: bool
) -> None:
    device = tmp_path / "sev-guest"
    device.write_bytes(b"")
    ioctl = FakeSevGuestIoctl(SnpMachine(snp_emulator, host_data=b"\x33" * 32, host_certs=host_certs))
    rd = secrets.token_bytes(64)
    ev = await sev_guest.SevGuestDevice(device, ioctl=ioctl).evidence(rd)
    assert abi.parse_report(ev.report).report_data == rd
    assert ev.certs == (snp_emulator.cert_chain("Milan") if host_certs else [])
    # One page is offered first; a VCEK chain needs more, which the host says (EIO + INVALID_LEN): one retry.
    assert ioctl.calls == [sev_guest.SNP_GET_EXT_REPORT] * (2 if host_certs else 1)


async def test_sev_guest_refuses_a_table_beyond_the_kernels_maximum(
    tmp_path: Path, snp_emulator: EmulatedSnpPlatform
) -> None:
    device = tmp_path / "sev-guest"
    device.write_bytes(b"")
    machine = SnpMachine(snp_emulator, host_data=bytes(32))
    big = machine.cert_table() + bytes(20_000)  # a host table larger than the kernel allows (16 KiB)
    machine.cert_table = lambda: big  # type: ignore[method-assign]
    ioctl = FakeSevGuestIoctl(machine)
    with pytest.raises(EvidenceError) as e:  # 24 KiB exceeds the kernel's SEV_FW_BLOB_MAX_SIZE
        await sev_guest.SevGuestDevice(device, ioctl=ioctl).evidence(bytes(64))
    assert e.value.code == "evidence.platform_error"
    assert "24576" in e.value.message


async def test_sev_guest_firmware_errors_are_typed(tmp_path: Path, snp_emulator: EmulatedSnpPlatform) -> None:
    device = tmp_path / "sev-guest"
    device.write_bytes(b"")
    ioctl = FakeSevGuestIoctl(SnpMachine(snp_emulator, host_data=bytes(32)))
    with pytest.raises(EvidenceError) as e:
        await sev_guest.SevGuestDevice(device, vmpl=4, ioctl=ioctl).evidence(bytes(64))
    assert e.value.code == "evidence.platform_error"
    assert "0x16" in e.value.message
