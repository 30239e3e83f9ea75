"""The Coordinator's pure core: owner keys, the manifest format and the signed, content-addressed history."""
