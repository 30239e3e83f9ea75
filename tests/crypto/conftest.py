from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from contrast.crypto.ownerkeys import generate_seedshare_owner_key


@pytest.fixture(scope="session")
def share_owner() -> rsa.RSAPrivateKey:
    # 3072 bits: the minimum we accept, and fast enough to generate once per session.
    return generate_seedshare_owner_key(3072)


@pytest.fixture(scope="session")
def share_owner2() -> rsa.RSAPrivateKey:
    return generate_seedshare_owner_key(3072)
