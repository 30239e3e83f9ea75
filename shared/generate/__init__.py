"""``contrast generate``: from an app's Kubernetes YAML to pinned runtime policies and a manifest.

Entry points: :func:`contrast.generate.generator.run` (files in, files out) and
:func:`contrast.generate.generator.process` (pure, in memory). Annotation keys are in
:mod:`contrast.generate.annotations`; the expected-missing marker of unfilled reference values is
:data:`contrast.generate.platforms.EXPECTED_MISSING`.
"""
