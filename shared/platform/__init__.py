"""Where evidence comes from: the confidential VM's own hardware, or the insecure emulator for development.

A :class:`~contrast.platform.base.Platform` turns 64 bytes of REPORT_DATA into an
:class:`~contrast.evidence.verifier.Evidence` bundle:

- :mod:`.configfs_tsm`: the Linux configfs-tsm interface (``/sys/kernel/config/tsm/report``), for SNP and TDX;
- :mod:`.sev_guest`: the ``/dev/sev-guest`` SNP_GET_REPORT ioctl, for older SNP guest kernels;
- :mod:`.emulated`: the emulated SNP and TDX platforms (INSECURE; development and tests only).

:func:`~contrast.platform.select.platform_from_env` picks one from ``CONTRAST_PLATFORM``. It never falls back
to the emulator on its own: a machine without a TEE and without an explicit emulator setting is an error.
"""
