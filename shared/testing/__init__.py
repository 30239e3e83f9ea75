"""Test-only builders (fake chains, fake collateral). Not product code: nothing in services imports this."""
