"""Write ``default.json`` and ``strict.json`` (run: ``python -m node.seccomp._generate``).

The allow-list is every system call of the x86_64 table (read from the kernel
headers, ``asm/unistd_64.h``) minus a deny set; names another architecture lacks are
skipped by the loaders. ``clone`` is allowed only without namespace flags and
``clone3`` answers ENOSYS (C libraries then fall back to ``clone``), so a workload
cannot make namespaces, as with the engine's default.

- default: what the engine's built-in default denies to a container without
  added capabilities (kernel modules, mount and namespaces, tracing other
  processes, keyrings, BPF, perf, clock setting, swap, reboot, NUMA policy...).
- strict: that, plus io_uring, personality changes, userfaultfd-like interfaces
  that kernel exploits favour (vmsplice, remap_file_pages), chroot, host and
  domain names, and the old adjtimex.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HEADER = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
HERE = Path(__file__).parent

DEFAULT_DENY = frozenset(
    {
        "acct",
        "add_key",
        "bpf",
        "clock_adjtime",
        "clock_settime",
        "create_module",
        "delete_module",
        "finit_module",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "get_kernel_syms",
        "get_mempolicy",
        "init_module",
        "ioperm",
        "iopl",
        "kcmp",
        "kexec_file_load",
        "kexec_load",
        "keyctl",
        "lookup_dcookie",
        "mbind",
        "migrate_pages",
        "mount",
        "mount_setattr",
        "move_mount",
        "move_pages",
        "name_to_handle_at",
        "nfsservctl",
        "open_by_handle_at",
        "open_tree",
        "perf_event_open",
        "pivot_root",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
        "query_module",
        "quotactl",
        "quotactl_fd",
        "reboot",
        "request_key",
        "set_mempolicy",
        "set_mempolicy_home_node",
        "setns",
        "settimeofday",
        "swapoff",
        "swapon",
        "_sysctl",
        "sysfs",
        "syslog",
        "umount2",
        "unshare",
        "uselib",
        "userfaultfd",
        "ustat",
        "vhangup",
        "vm86",
        "vm86old",
        "pidfd_getfd",
        "process_madvise",
        "fanotify_init",
        "afs_syscall",
        "tuxcall",
        "security",
        "putpmsg",
        "getpmsg",
        "epoll_ctl_old",
        "epoll_wait_old",
    }
)
STRICT_EXTRA = frozenset(
    {
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "personality",
        "vmsplice",
        "remap_file_pages",
        "chroot",
        "sethostname",
        "setdomainname",
        "adjtimex",
        "modify_ldt",
        "memfd_secret",
    }
)
# Handled by their own rules below.
SPECIAL = frozenset({"clone", "clone3"})
CLONE_NAMESPACE_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
ENOSYS = 38


def syscall_names(header: Path = HEADER) -> list[str]:
    text = header.read_text(encoding="ascii")
    return sorted(set(re.findall(r"#define __NR_(\w+)\s+\d+", text)))


def build(deny: frozenset[str], names: list[str]) -> dict[str, object]:
    allowed = [n for n in names if n not in deny and n not in SPECIAL]
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [
            {
                "architecture": "SCMP_ARCH_X86_64",
                "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            },
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        ],
        "syscalls": [
            {"names": allowed, "action": "SCMP_ACT_ALLOW"},
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [
                    {
                        "index": 0,
                        "value": CLONE_NAMESPACE_FLAGS,
                        "valueTwo": 0,
                        "op": "SCMP_CMP_MASKED_EQ",
                    }
                ],
            },
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        ],
    }


def main() -> int:
    names = syscall_names()
    for name, deny in (("default", DEFAULT_DENY), ("strict", DEFAULT_DENY | STRICT_EXTRA)):
        path = HERE / f"{name}.json"
        path.write_text(json.dumps(build(deny, names), indent=1) + "\n", encoding="utf-8")
        print(f"{path}: {len(names) - len(deny & set(names)) - 2} system calls allowed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
