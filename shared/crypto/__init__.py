"""Seed-derived keys (HKDF), HPKE sealing (RFC 9180) and RSA-OAEP seed shares."""
