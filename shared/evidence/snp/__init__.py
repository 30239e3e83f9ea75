"""AMD SEV-SNP evidence: ``abi`` (bytes <-> frozen report), ``kds`` (VCEK extension and TCB vocabulary),
``trust`` (pinned ARKs), ``verify`` (signature, chain, CRL), ``reference`` + ``validate`` (policy), and
``emulator`` (an insecure, locally rooted SNP platform for development and tests)."""
