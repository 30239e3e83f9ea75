"""``contrast generate``: inject the initializer, pin runtime policies, and write manifest.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contrast.cli.exitcodes import EXIT_OK, EXIT_REJECTED, EXIT_USAGE
from contrast.coordinator.pins import root_ca_sha256
from contrast.errors import ContrastError
from contrast.generate import platforms
from contrast.generate.generator import Options, run
from contrast.generate.images import INITIALIZER_IMAGE
from contrast.generate.inject import DEFAULT_NATS_URL


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "generate",
        help="pin runtime policies into Kubernetes YAML and write manifest.json",
        description=(
            "Read Kubernetes YAML (files or directories, recursively). For every workload whose "
            "runtimeClassName starts with contrast-cc: inject the initializer (and the service-mesh "
            "sidecar if the pod has a servicemesh-* annotation), generate its runtime policy "
            "(initdata), annotate the pod with it, and add it to manifest.json. Other documents are left "
            "byte for byte as they are. Files are rewritten in place."
        ),
    )
    p.add_argument("paths", nargs="+", type=Path, help="YAML files or directories")
    p.add_argument(
        "--reference-values",
        required=True,
        metavar="PLATFORM",
        help=f"platform whose reference values go into the manifest: {', '.join(platforms.platform_names())}",
    )
    p.add_argument(
        "--reference-values-patch",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="RFC 6902 JSON patch applied to ReferenceValues (repeatable, applied in order)",
    )
    p.add_argument(
        "--workspace", type=Path, default=Path("."), help="directory of the owner keys (default: .)"
    )
    p.add_argument(
        "--manifest", type=Path, default=None, help="manifest path (default: WORKSPACE/manifest.json)"
    )
    p.add_argument(
        "--emulator-dir",
        type=Path,
        default=Path(".run/emulator"),
        help="emulator state for Emulated-* platforms",
    )
    p.add_argument(
        "--allow-mutable-images",
        action="store_true",
        help="INSECURE: accept images without a digest; the registry then decides what runs",
    )
    p.add_argument(
        "--initializer-image",
        default=INITIALIZER_IMAGE,
        help="digest-pinned image of the Contrast initializer",
    )
    p.add_argument(
        "--mesh-image",
        default=INITIALIZER_IMAGE,
        help="digest-pinned image of the service-mesh sidecar (default: the service image)",
    )
    p.add_argument(
        "--guest-default-deny",
        action="store_true",
        help="the guest closes every pod until its service mesh is ready (Contrast's default-deny unit): "
        "pods without a sidecar, the Coordinator's included, get an init container that opens them",
    )
    p.add_argument(
        "--no-wildcard-san",
        action="store_true",
        help='policy entries get only the workload name as SAN, not [name, "*"]',
    )
    p.add_argument("--nats-url", default=DEFAULT_NATS_URL, help="NATS URL the initializer connects to")
    p.add_argument(
        "--image-layout",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="OCI image layout to read image configs from (repeatable); searched after images.lock.json",
    )
    p.add_argument(
        "--coordinator-root",
        type=Path,
        metavar="PEM",
        help="pin the Coordinator's root CA (coordinator-root-ca.pem, written by the first `contrast set`) "
        "in every workload and every verifier and CA replica: they then refuse a Coordinator with another "
        "root, as after a wiped store. Without it a pin the YAML already carries is kept",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="never contact a registry: image configs come from images.lock.json and --image-layout only",
    )
    p.set_defaults(func=_main)


def _root_pin(path: Path) -> bytes:
    """SHA-256 of the root CA certificate's DER, read from a PEM or DER file."""
    data = path.read_bytes()
    cert = (
        x509.load_pem_x509_certificate(data)
        if b"-----BEGIN" in data
        else x509.load_der_x509_certificate(data)
    )
    return root_ca_sha256(cert.public_bytes(serialization.Encoding.DER))


def _main(args: argparse.Namespace) -> int:
    if args.allow_mutable_images:
        print(
            "WARNING: --allow-mutable-images: images without a digest are accepted; whoever controls the "
            "registry controls what runs in the confidential pods.",
            file=sys.stderr,
        )
    try:
        root = _root_pin(args.coordinator_root) if args.coordinator_root is not None else None
    except (OSError, ValueError) as exc:
        print(f"contrast generate: --coordinator-root {args.coordinator_root}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    options = Options(
        coordinator_root=root,
        allow_mutable_images=args.allow_mutable_images,
        initializer_image=args.initializer_image,
        mesh_image=args.mesh_image,
        guest_default_deny=args.guest_default_deny,
        nats_url=args.nats_url,
        wildcard_san=not args.no_wildcard_san,
        image_layouts=tuple(args.image_layout),
        offline=args.offline,
    )
    try:
        report = run(
            list(args.paths),
            platform=args.reference_values,
            workspace=args.workspace,
            manifest_path=args.manifest,
            patch_files=list(args.reference_values_patch),
            emulator_dir=args.emulator_dir,
            options=options,
        )
    except ContrastError as exc:
        print(f"contrast generate: refused: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except OSError as exc:
        print(f"contrast generate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for w in report.outcome.workloads:
        role = (
            f" role={w.role}/{w.coordinator_role}"
            if w.coordinator_role
            else (f" role={w.role}" if w.role else "")
        )
        init = "" if w.initializer else " (no initializer)"
        print(f"{w.policy_hash}  {w.ref}{role}{init}  [{w.path}]")
    for path in report.written:
        print(f"wrote {path}")
    for path in report.removed:
        print(f"removed stale policy {path}")
    if not report.written and not report.removed:
        print("nothing changed")
    if report.missing_reference_values:
        print(
            f"NOTE: {len(report.missing_reference_values)} reference values in {report.manifest_path} are "
            f"{platforms.EXPECTED_MISSING} and must be filled (e.g. with --reference-values-patch) before "
            "`contrast set` accepts the manifest:",
            file=sys.stderr,
        )
        for ptr in report.missing_reference_values:
            print(f"  /ReferenceValues{ptr}", file=sys.stderr)
    return EXIT_OK
