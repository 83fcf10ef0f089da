//! Seccomp for TPCs: docker's default profile, and the rules docker uses to turn a profile into
//! the OCI runtime spec's filter for one container (its capabilities, this host's architecture
//! and kernel).
//!
//! Provenance: the default profile is derived from docker's (moby's `profiles/seccomp`, the
//! `github.com/moby/profiles/seccomp` module v0.2.3 that docker 29 vendors: `default.json`,
//! generated from `DefaultProfile()`), which is Apache-2.0 like tpcm. It is the same allowlist
//! in tpcm's own tables: 361 calls always allowed (no `io_uring_*`, which docker removed in 25.0
//! and containerd in 2.0; no `keyctl`, `add_key`, `request_key`, `userfaultfd`; `personality`
//! only with the five harmless values; `socket` for every family but AF_ALG and AF_VSOCK), and
//! the groups allowed only with a capability (`CAP_SYS_ADMIN`: mount, unshare, setns, clone
//! with namespace flags, perf_event_open, bpf, ...; `CAP_SYS_MODULE`: module loading;
//! `CAP_SYS_BOOT`: reboot; ...) or an architecture. Everything else fails with EPERM, and
//! `clone3` with ENOSYS without `CAP_SYS_ADMIN` (its flags cannot be inspected, so libc falls
//! back to `clone`, which is filtered). The profile Debian's containers-common ships is
//! podman's, which allows `unshare`, `keyctl` and `mount` unconditionally: it is not this one.
//!
//! `--security-opt seccomp=<file>` takes a profile in docker's format, resolved by the same
//! rules ([`resolve`]).

use serde::{Deserialize, Serialize};

/// A seccomp profile in docker's format (the JSON `--security-opt seccomp=<file>` takes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// What a call no rule matches gets (`SCMP_ACT_ERRNO`, ...).
    pub default_action: String,
    /// The errno of `SCMP_ACT_ERRNO` as default (EPERM when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// The filter's architectures, given outright (not with `archMap`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    /// Per native architecture, the ones its filter also covers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arch_map: Vec<ArchMap>,
    /// The rules.
    #[serde(default)]
    pub syscalls: Vec<Rule>,
}

/// One `archMap` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    /// `SCMP_ARCH_X86_64`, ...
    pub architecture: String,
    /// Architectures the same filter covers (`SCMP_ARCH_X86`, `SCMP_ARCH_X32`).
    #[serde(default)]
    pub sub_architectures: Option<Vec<String>>,
}

/// One rule: calls, an action, optional argument conditions, and when it applies.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// One call (docker's older form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// `SCMP_ACT_ALLOW`, `SCMP_ACT_ERRNO`, ...
    pub action: String,
    /// The errno of `SCMP_ACT_ERRNO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    /// Argument conditions (all must hold).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Arg>,
    /// The rule applies only if all of these hold.
    #[serde(default)]
    pub includes: Filter,
    /// The rule applies only if none of these holds.
    #[serde(default)]
    pub excludes: Filter,
}

/// An argument condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    /// Which argument (0-5).
    pub index: u32,
    /// The value compared (the mask, for `SCMP_CMP_MASKED_EQ`).
    pub value: u64,
    /// The expected result of the mask.
    #[serde(default)]
    pub value_two: u64,
    /// `SCMP_CMP_EQ`, `SCMP_CMP_LT`, `SCMP_CMP_MASKED_EQ`, ...
    pub op: String,
}

/// When a rule applies: capabilities in the container's bounding set, the host's architecture
/// (docker's names: `amd64`, `arm64`, ...), the kernel's version.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// `CAP_X` names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<String>,
    /// Architectures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arches: Vec<String>,
    /// `major.minor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
}

/// What the filter is resolved for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The container's bounding capabilities, `CAP_X` names.
    pub caps: Vec<String>,
    /// The host's architecture in docker's words (`amd64`, `arm64`, `arm`, `x86`, ...).
    pub arch: String,
    /// The kernel's major and minor version.
    pub kernel: (u32, u32),
}

impl Target {
    /// This host: its architecture and kernel, with the container's capabilities.
    pub fn host(caps: Vec<String>) -> Target {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "x86",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        }
        .to_string();
        let kernel = nix::sys::utsname::uname()
            .ok()
            .and_then(|u| parse_kernel(&u.release().to_string_lossy()))
            .unwrap_or((0, 0));
        Target { caps, arch, kernel }
    }
}

/// `major.minor` of a kernel release (`6.1.0-18-amd64` → (6, 1)).
fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// docker's architecture name → the seccomp architecture of its filter.
fn native_arch(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "amd64" => "SCMP_ARCH_X86_64",
        "arm64" => "SCMP_ARCH_AARCH64",
        "x86" => "SCMP_ARCH_X86",
        "arm" => "SCMP_ARCH_ARM",
        "ppc64le" => "SCMP_ARCH_PPC64LE",
        "s390x" => "SCMP_ARCH_S390X",
        "riscv64" => "SCMP_ARCH_RISCV64",
        _ => return None,
    })
}

/// Resolves `profile` for `target` as docker does (moby's `setupSeccomp`): the architectures
/// of the host's `archMap` entry; every rule whose `includes` all hold and none of whose
/// `excludes` does. The result is the OCI runtime spec's `linux.seccomp`.
pub fn resolve(profile: &Profile, target: &Target) -> Result<oci_spec::runtime::LinuxSeccomp, String> {
    if !profile.architectures.is_empty() && !profile.arch_map.is_empty() {
        return Err("a seccomp profile gives both architectures and archMap".into());
    }
    let mut architectures = profile.architectures.clone();
    if let Some(native) = native_arch(&target.arch) {
        for a in profile.arch_map.iter().filter(|a| a.architecture == native) {
            architectures.push(a.architecture.clone());
            architectures.extend(a.sub_architectures.clone().unwrap_or_default());
        }
    }
    let at_least = |v: &Option<String>| {
        v.as_deref()
            .and_then(parse_kernel)
            .is_none_or(|min| target.kernel >= min)
    };
    let has = |c: &String| target.caps.iter().any(|t| t.eq_ignore_ascii_case(c));
    let mut syscalls = Vec::new();
    for rule in &profile.syscalls {
        if rule.name.is_some() && !rule.names.is_empty() {
            return Err("a seccomp rule gives both name and names".into());
        }
        let ex = &rule.excludes;
        if ex.arches.contains(&target.arch)
            || ex.caps.iter().any(has)
            || (ex.min_kernel.is_some() && at_least(&ex.min_kernel))
        {
            continue;
        }
        let inc = &rule.includes;
        if (!inc.arches.is_empty() && !inc.arches.contains(&target.arch))
            || !inc.caps.iter().all(has)
            || !at_least(&inc.min_kernel)
        {
            continue;
        }
        let names: Vec<String> = rule.name.iter().chain(&rule.names).cloned().collect();
        let mut s = serde_json::json!({"names": names, "action": rule.action});
        if let Some(e) = rule.errno_ret {
            s["errnoRet"] = e.into();
        }
        if !rule.args.is_empty() {
            s["args"] = serde_json::json!(
                rule.args
                    .iter()
                    .map(|a| serde_json::json!({"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op}))
                    .collect::<Vec<_>>()
            );
        }
        syscalls.push(s);
    }
    let mut out = serde_json::json!({
        "defaultAction": profile.default_action,
        "architectures": architectures,
        "syscalls": syscalls,
    });
    if let Some(e) = profile.default_errno_ret {
        out["defaultErrnoRet"] = e.into();
    }
    serde_json::from_value(out).map_err(|e| format!("the seccomp profile is not valid: {e}"))
}

/// Parses a profile in docker's format, refusing what docker refuses.
pub fn parse_profile(json: &str) -> Result<Profile, String> {
    let p: Profile = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let probe = Target {
        caps: Vec::new(),
        arch: "amd64".into(),
        kernel: (6, 1),
    };
    resolve(&p, &probe)?;
    Ok(p)
}

fn allow(names: &[&str]) -> Rule {
    Rule {
        names: names.iter().map(|s| s.to_string()).collect(),
        action: "SCMP_ACT_ALLOW".into(),
        ..Rule::default()
    }
}

fn with_cap(mut rule: Rule, cap: &str) -> Rule {
    rule.includes.caps = vec![cap.to_string()];
    rule
}

fn on_arches(mut rule: Rule, arches: &[&str]) -> Rule {
    rule.includes.arches = arches.iter().map(|s| s.to_string()).collect();
    rule
}

fn arg(index: u32, value: u64, op: &str) -> Arg {
    Arg {
        index,
        value,
        value_two: 0,
        op: op.into(),
    }
}

/// Namespace flags of `clone`: allowed only with `CAP_SYS_ADMIN` (CLONE_NEWNS | NEWUTS | NEWIPC
/// | NEWUSER | NEWPID | NEWNET | NEWCGROUP).
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
/// ENOSYS, what `clone3` gets without `CAP_SYS_ADMIN`.
const ENOSYS: u32 = 38;
/// AF_ALG and AF_VSOCK, the socket families no container gets.
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;

/// docker's default profile.
pub fn default_profile() -> Profile {
    let mut rules = vec![allow(ALWAYS_ALLOWED)];
    let mut ptrace = allow(&["process_vm_readv", "process_vm_writev", "ptrace"]);
    // Before 4.8, ptrace could bypass seccomp.
    ptrace.includes.min_kernel = Some("4.8".into());
    rules.push(ptrace);
    // Every socket family but AF_ALG and AF_VSOCK, as three rules: conditions on one argument
    // in one rule would be joined as alternatives by runc.
    for (value, op) in [
        (AF_ALG, "SCMP_CMP_LT"),
        (AF_ALG + 1, "SCMP_CMP_EQ"),
        (AF_VSOCK, "SCMP_CMP_GT"),
    ] {
        let mut r = allow(&["socket"]);
        r.args = vec![arg(0, value, op)];
        rules.push(r);
    }
    // PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32 and the query.
    for value in [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
        let mut r = allow(&["personality"]);
        r.args = vec![arg(0, value, "SCMP_CMP_EQ")];
        rules.push(r);
    }
    rules.push(on_arches(
        allow(&["sync_file_range2", "swapcontext"]),
        &["ppc64le"],
    ));
    rules.push(on_arches(
        allow(&[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ]),
        &["arm", "arm64"],
    ));
    rules.push(on_arches(allow(&["arch_prctl"]), &["amd64", "x32"]));
    rules.push(on_arches(allow(&["modify_ldt"]), &["amd64", "x32", "x86"]));
    rules.push(on_arches(
        allow(&["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"]),
        &["s390", "s390x"],
    ));
    rules.push(on_arches(allow(&["riscv_flush_icache"]), &["riscv64"]));
    rules.push(with_cap(allow(&["open_by_handle_at"]), "CAP_DAC_READ_SEARCH"));
    rules.push(with_cap(allow(SYS_ADMIN_CALLS), "CAP_SYS_ADMIN"));
    let mut clone = allow(&["clone"]);
    clone.args = vec![arg(0, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ")];
    clone.excludes.caps = vec!["CAP_SYS_ADMIN".into()];
    clone.excludes.arches = vec!["s390".into(), "s390x".into()];
    rules.push(clone);
    // s390 passes clone's flags second.
    let mut clone_s390 = allow(&["clone"]);
    clone_s390.args = vec![arg(1, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ")];
    clone_s390.includes.arches = vec!["s390".into(), "s390x".into()];
    clone_s390.excludes.caps = vec!["CAP_SYS_ADMIN".into()];
    rules.push(clone_s390);
    rules.push(Rule {
        names: vec!["clone3".into()],
        action: "SCMP_ACT_ERRNO".into(),
        errno_ret: Some(ENOSYS),
        excludes: Filter {
            caps: vec!["CAP_SYS_ADMIN".into()],
            ..Filter::default()
        },
        ..Rule::default()
    });
    for (cap, calls) in CAPABILITY_CALLS {
        rules.push(with_cap(allow(calls), cap));
    }
    let arch = |a: &str, subs: &[&str]| ArchMap {
        architecture: a.into(),
        sub_architectures: Some(subs.iter().map(|s| s.to_string()).collect()),
    };
    Profile {
        default_action: "SCMP_ACT_ERRNO".into(),
        default_errno_ret: Some(1),
        architectures: Vec::new(),
        arch_map: vec![
            arch("SCMP_ARCH_X86_64", &["SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
            arch("SCMP_ARCH_AARCH64", &["SCMP_ARCH_ARM"]),
            arch("SCMP_ARCH_S390X", &["SCMP_ARCH_S390"]),
            arch("SCMP_ARCH_RISCV64", &[]),
        ],
        syscalls: rules,
    }
}

/// Allowed only with `CAP_SYS_ADMIN`: namespaces, mounts, module-free kernel interfaces.
const SYS_ADMIN_CALLS: &[&str] = &[
    "bpf",
    "clone",
    "clone3",
    "fanotify_init",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "lookup_dcookie",
    "lsm_get_self_attr",
    "lsm_list_modules",
    "lsm_set_self_attr",
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "perf_event_open",
    "quotactl",
    "quotactl_fd",
    "setdomainname",
    "sethostname",
    "setns",
    "syslog",
    "umount",
    "umount2",
    "unshare",
];

/// Calls each allowed with one more capability.
const CAPABILITY_CALLS: &[(&str, &[&str])] = &[
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// Calls every container may make, whatever its capabilities (docker's unconditional list).
pub const ALWAYS_ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "riscv_hwprobe",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn target(caps: &[&str]) -> Target {
        Target {
            caps: caps.iter().map(|s| s.to_string()).collect(),
            arch: "amd64".into(),
            kernel: (6, 1),
        }
    }

    fn allowed(seccomp: &oci_spec::runtime::LinuxSeccomp) -> Vec<String> {
        let json = serde_json::to_value(seccomp).unwrap();
        json["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["action"] == "SCMP_ACT_ALLOW" && s.get("args").is_none_or(|a| a.is_null()))
            .flat_map(|s| {
                s["names"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_str().unwrap().to_string())
            })
            .collect()
    }

    #[test]
    fn the_default_blocks_what_dockers_blocks() {
        let s = resolve(&default_profile(), &target(&["CAP_CHOWN", "CAP_SYS_CHROOT"])).unwrap();
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], 1);
        assert_eq!(
            json["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        let allowed = allowed(&s);
        assert_eq!(ALWAYS_ALLOWED.len(), 361);
        for blocked in [
            "unshare",
            "mount",
            "keyctl",
            "add_key",
            "request_key",
            "perf_event_open",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "init_module",
            "finit_module",
            "kexec_load",
            "bpf",
            "setns",
            "sethostname",
            "reboot",
            "swapon",
            "open_by_handle_at",
        ] {
            assert!(!allowed.contains(&blocked.to_string()), "{blocked} is allowed");
        }
        assert!(
            allowed.contains(&"chroot".to_string()),
            "CAP_SYS_CHROOT allows chroot"
        );
        assert!(allowed.contains(&"arch_prctl".to_string()));
        // clone without namespace flags; clone3 → ENOSYS.
        let clone = json["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["names"] == serde_json::json!(["clone"]))
            .unwrap();
        assert_eq!(clone["args"][0]["value"], CLONE_NAMESPACE_FLAGS);
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        let clone3 = json["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["names"] == serde_json::json!(["clone3"]))
            .unwrap();
        assert_eq!(
            (clone3["action"].as_str(), clone3["errnoRet"].as_u64()),
            (Some("SCMP_ACT_ERRNO"), Some(38))
        );
        // 15 rules for docker's default capabilities on amd64, as docker makes.
        assert_eq!(json["syscalls"].as_array().unwrap().len(), 15);
    }

    #[test]
    fn capabilities_open_their_groups() {
        let admin = resolve(&default_profile(), &target(&["CAP_SYS_ADMIN"])).unwrap();
        let allowed = allowed(&admin);
        for call in ["mount", "unshare", "setns", "clone", "clone3", "sethostname"] {
            assert!(allowed.contains(&call.to_string()), "{call}");
        }
        let json = serde_json::to_string(&admin).unwrap();
        assert!(
            !json.contains("\"errnoRet\":38"),
            "no ENOSYS clone3 with CAP_SYS_ADMIN"
        );
        let module = allowed_for(&["CAP_SYS_MODULE"]);
        assert!(module.contains(&"init_module".to_string()));
        let old_kernel = Target {
            kernel: (4, 4),
            ..target(&[])
        };
        let old = self::allowed(&resolve(&default_profile(), &old_kernel).unwrap());
        assert!(!old.contains(&"ptrace".to_string()), "ptrace only from 4.8");
    }

    fn allowed_for(caps: &[&str]) -> Vec<String> {
        allowed(&resolve(&default_profile(), &target(caps)).unwrap())
    }

    #[test]
    fn other_architectures_get_their_own_calls() {
        let arm = Target {
            arch: "arm64".into(),
            ..target(&[])
        };
        let s = resolve(&default_profile(), &arm).unwrap();
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["architectures"],
            serde_json::json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
        );
        let allowed = allowed(&s);
        assert!(allowed.contains(&"set_tls".to_string()) && !allowed.contains(&"arch_prctl".to_string()));
    }

    #[test]
    fn a_custom_profile_in_dockers_format_is_resolved_and_bad_ones_refused() {
        let json = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#;
        let p = parse_profile(json).unwrap();
        let s = resolve(&p, &target(&[])).unwrap();
        assert_eq!(
            serde_json::to_value(&s).unwrap()["syscalls"][0]["names"][0],
            "mkdir"
        );
        assert!(parse_profile("{").is_err());
        assert!(parse_profile(r#"{"defaultAction":"SCMP_ACT_NOPE"}"#).is_err());
        assert!(
            parse_profile(r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],"archMap":[{"architecture":"SCMP_ARCH_X86_64"}]}"#)
                .is_err()
        );
    }

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_kernel("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel("5.10.218-sonic"), Some((5, 10)));
        assert_eq!(parse_kernel("x"), None);
    }
}
