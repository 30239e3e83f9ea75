"""The local end-to-end scenario behind ``contrast run`` (INSECURE: emulated hardware, for development).

- :mod:`.procs`: child processes (services, emulated pods): start in their own session, stop in order;
- :mod:`.host`: the emulated Kubernetes host: finds the confidential pods in generated YAML and derives each
  pod's launch policy hash from its initdata annotation, as Kata does;
- :mod:`.mtls`: the proof that issued certificates work: mutual TLS between two attested pods using only
  their files, and refusal of an unattested party;
- :mod:`.metrics`: figures scraped from the services' Prometheus endpoints;
- :mod:`.jaeger`: ``--jaeger``: a Jaeger on loopback, and the traces read back through its query API;
- :mod:`.scenario`: the steps (emulator, generate, services, set, pods, verify, mTLS, summary, status line).
"""
