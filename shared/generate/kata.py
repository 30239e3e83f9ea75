"""What containerd and the Kata runtime put into the kata-agent requests of a pod, independent of the pod.

These are the defaults the generated policy expects where the pod spec says nothing: containerd's default
capabilities and ``PATH``, the kernel file systems every container gets, and where the Kata runtime places
shared files, memory-backed volumes and guest-pulled root file systems inside the guest. The shapes follow
kata-agent's ``CreateContainerRequest`` as Kata's genpolicy reads them. The policy assumes the Kata
configuration of confidential guests: no file system shared with the host (``shared_fs = "none"``: host
files arrive by ``CopyFileRequest``), images pulled inside the guest (``image_guest_pull``), and emptyDir
volumes created inside the guest (as a local directory, or as a block device encrypted with an ephemeral
key).
"""

from __future__ import annotations

# Where the runtime copies host files (CopyFileRequest): <dir>/<container id>-<16 hex>-<base name>.
SHARED_DIR = "/run/kata-containers/shared/containers"
SANDBOX_SHM = "/run/kata-containers/sandbox/shm"
EPHEMERAL_DIR = "/run/kata-containers/sandbox/ephemeral"

# containerd's PATH when neither the image config nor the pod sets one.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# containerd's default capability set for a container that is not privileged (without the CAP_ prefix).
DEFAULT_CAPS = (
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
)
ALL_CAPS = frozenset(
    {
        *DEFAULT_CAPS,
        "AUDIT_CONTROL",
        "AUDIT_READ",
        "BLOCK_SUSPEND",
        "BPF",
        "CHECKPOINT_RESTORE",
        "DAC_READ_SEARCH",
        "IPC_LOCK",
        "IPC_OWNER",
        "LEASE",
        "LINUX_IMMUTABLE",
        "MAC_ADMIN",
        "MAC_OVERRIDE",
        "NET_ADMIN",
        "NET_BROADCAST",
        "PERFMON",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_MODULE",
        "SYS_NICE",
        "SYS_PACCT",
        "SYS_PTRACE",
        "SYS_RAWIO",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "SYSLOG",
        "WAKE_ALARM",
    }
)

# Kernel file systems: (destination, type, source, options). Containers also get the cgroup mount.
KERNEL_MOUNTS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
    ("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
    (
        "/dev/pts",
        "devpts",
        "devpts",
        ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"),
    ),
    ("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
    ("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", "ro")),
)
CGROUP_MOUNT = ("/sys/fs/cgroup", "cgroup", "cgroup", ("nosuid", "noexec", "nodev", "relatime", "ro"))
# Flags newer kernels report on the unified cgroup mount; they change nothing the container can do.
CGROUP_EXTRA_OPTIONS = ("memory_recursiveprot", "nsdelegate")

# Where the dynamic loader of a glibc or musl image finds what it loads into every process: its
# configuration, its cache, and the default library directories (their multiarch subdirectories included).
LOADER_PATHS = (
    "/etc/ld.so.preload",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ld-musl-x86_64.path",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/usr/lib",
    "/usr/lib32",
    "/usr/lib64",
    "/usr/libx32",
    "/usr/local/lib",
)

# Variables whose value makes a program load code from where it names (beyond LD_*, which are all the dynamic
# loader's): glibc's iconv modules, and the interpreters' module paths, startup files and options that load
# modules or agents (Python's -W filters import a warning's module).
CODE_ENV = frozenset(
    {
        "PATH",
        "GCONV_PATH",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONUSERBASE",
        "PYTHONPLATLIBDIR",
        "PYTHONBREAKPOINT",
        "PYTHONWARNINGS",
        "NODE_OPTIONS",
        "NODE_PATH",
        "JAVA_TOOL_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "_JAVA_OPTIONS",
        "BASH_ENV",
        "ENV",
        "PERL5LIB",
        "PERL5OPT",
        "PERLLIB",
        "RUBYLIB",
        "RUBYOPT",
    }
)
CODE_ENV_PREFIX = "LD_"

SA_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 - a path
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
# Files every container gets from the host: base names of their copies in SHARED_DIR.
HOST_FILES = ("hosts", "hostname", "resolv.conf")

# Storage the runtime asks for in CreateSandboxRequest: the pod's /dev/shm, guest memory only.
SANDBOX_STORAGES = (
    {
        "driver": "ephemeral",
        "driver_options": [],
        "fs_group": None,
        "fstype": "tmpfs",
        "mount_point": SANDBOX_SHM,
        "options": ["noexec", "nosuid", "nodev", "mode=1777", "size=67108864"],
        "source": "shm",
    },
)

# Paths containerd masks or makes read-only in every container (the policy requires at least these).
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/firmware",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
# Sysctls containerd sets on its own (unprivileged ports and ping); the pod's own come on top.
RUNTIME_SYSCTLS = {"net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "0 2147483647"}
# kata-agent ignores AppArmor; these are the names the host's runtime fills in when it has it.
APPARMOR_PROFILES = ("", "cri-containerd.apparmor.d")

# The pause container's mounts: kernel file systems, the pod's /dev/shm and its resolv.conf (read-only).
SANDBOX_RESOLV_OPTIONS = ("rbind", "ro", "nosuid", "nodev", "noexec")
