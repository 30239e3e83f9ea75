"""Test-only code: fakes, fixtures and builders for tests and benchmarks.

Production code never imports this package (an import-linter contract in ``pyproject.toml`` checks it):

- :mod:`.kv`: an in-memory :class:`~contrast.kv.KeyValue`;
- :mod:`.fixture`: the INSECURE key source that holds the seed, so replicas run without a manifest service;
- :mod:`.replica`: ``python -m contrast.testing.replica {verifier,ca}``, a replica process on that fixture;
- :mod:`.snp_chain`, :mod:`.snp_fuzz`: SNP certificate chains and fuzz targets built from the real vectors;
- :mod:`.mesh`: mesh credentials (a manifest generation's mesh CA, pods' ``tls-config``) for the sidecar's
  tests and benchmark.
"""
