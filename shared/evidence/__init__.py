"""Pure evidence verification (no I/O): AMD SEV-SNP and Intel TDX, shared by the verifier service and the CLI.

Layers, after go-sev-guest: ``abi`` turns bytes into frozen structs and back with no trust decisions;
``verify`` checks signatures and certificate chains against pinned roots; ``validate`` compares the verified
fields with a manifest's reference values. ``validate`` accepts only what ``verify`` returned.
"""
