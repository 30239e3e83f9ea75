"""Vendor collateral for evidence verification: one injected, caching provider for every verifier of evidence.

Evidence may arrive without what its verification needs: an SNP report without its VCEK chain or AMD's CRL,
a TDX quote without Intel's TCB info, QE identity and CRLs. :class:`~contrast.collateral.provider.
CollateralProvider` fills the gaps from a shared cache and the vendor services (AMD KDS, Intel PCS):

- :mod:`.fetch`: the HTTPS transport, the vendor endpoints and the ``--offline`` switch;
- :mod:`.source`: what a vendor answer is worth: retries with backoff, its freshness from the vendor's own
  ``nextUpdate``/``issueDate``, the shared cache (JetStream KV ``collateral``), stale-if-error up to a maximum
  age;
- :mod:`.provider`: what each piece of evidence needs, and :class:`~contrast.collateral.provider.
  AttachingPlatform`, through which a Coordinator replica's own evidence carries its collateral.

This package does I/O; the verification of everything it returns stays in the pure :mod:`contrast.evidence`,
which checks each item against the pinned roots exactly as if the requester had sent it.
"""
