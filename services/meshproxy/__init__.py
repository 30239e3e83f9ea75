"""The service-mesh sidecar: transparent mutual TLS between a pod's plain-TCP applications and its peers.

``python -m contrast.meshproxy`` (flags and environment: ``python -m contrast.meshproxy --help``). The
configuration grammar is :mod:`contrast.mesh.config`; the redirection rules are
:mod:`contrast.mesh.netfilter`.
"""
