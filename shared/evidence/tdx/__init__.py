"""Intel TDX evidence: DCAP quote v4/v5 parsing, verification with PCS collateral, validation, emulator."""
