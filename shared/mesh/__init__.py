"""The service mesh shared by the sidecar (``contrast.meshproxy``), ``contrast generate`` and the local
runner.

``config`` parses Contrast's ingress/egress annotation grammar; ``netfilter`` builds and applies the
transparent-redirection and default-deny rules.
"""
