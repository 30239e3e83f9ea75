from tests.evidence.snp.snp_fixtures import emulator, vector

__all__ = ["emulator", "vector"]
