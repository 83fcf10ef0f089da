//! The flags of `--args` as clap sees them, the docker flags refused on purpose, and clap's
//! errors turned into one line that names the flag.

use super::ArgsError;
use clap::Parser;

/// The flags, as clap sees them. Every value is taken as a string and checked afterwards, so an
/// error can name the flag and say what is wrong in tpcm's words. Value-taking flags accept values
/// that start with `-` (as docker's flag parser does), so `--cpus -1` is "must be > 0", not an
/// unknown flag `-1`.
#[derive(Parser, Debug)]
#[command(
    name = "--args",
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true
)]
pub(super) struct RawArgs {
    #[arg(short = 'e', long = "env", allow_hyphen_values = true)]
    pub(super) env: Vec<String>,
    #[arg(long = "env-file", allow_hyphen_values = true)]
    pub(super) env_file: Vec<String>,
    #[arg(short = 'v', long = "volume", allow_hyphen_values = true)]
    pub(super) volume: Vec<String>,
    #[arg(long = "cpus", allow_hyphen_values = true)]
    pub(super) cpus: Option<String>,
    #[arg(short = 'm', long = "memory", allow_hyphen_values = true)]
    pub(super) memory: Option<String>,
    #[arg(long = "memory-reservation", allow_hyphen_values = true)]
    pub(super) memory_reservation: Option<String>,
    #[arg(long = "cap-add", allow_hyphen_values = true)]
    pub(super) cap_add: Vec<String>,
    #[arg(long = "cap-drop", allow_hyphen_values = true)]
    pub(super) cap_drop: Vec<String>,
    /// `--privileged`, or docker's `--privileged=true|false`.
    #[arg(
        long = "privileged",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub(super) privileged: Option<String>,
    #[arg(short = 'u', long = "user", allow_hyphen_values = true)]
    pub(super) user: Option<String>,
    #[arg(short = 'w', long = "workdir", allow_hyphen_values = true)]
    pub(super) workdir: Option<String>,
    #[arg(long = "entrypoint", allow_hyphen_values = true)]
    pub(super) entrypoint: Option<String>,
    #[arg(short = 'h', long = "hostname", allow_hyphen_values = true)]
    pub(super) hostname: Option<String>,
    #[arg(long = "network", alias = "net", allow_hyphen_values = true)]
    pub(super) network: Option<String>,
    #[arg(short = 'p', long = "publish", allow_hyphen_values = true)]
    pub(super) publish: Vec<String>,
    #[arg(long = "device", allow_hyphen_values = true)]
    pub(super) device: Vec<String>,
    #[arg(short = 'l', long = "label", allow_hyphen_values = true)]
    pub(super) label: Vec<String>,
    #[arg(long = "restart", allow_hyphen_values = true)]
    pub(super) restart: Option<String>,
    #[arg(long = "health-cmd", allow_hyphen_values = true)]
    pub(super) health_cmd: Option<String>,
    #[arg(long = "health-tcp", allow_hyphen_values = true)]
    pub(super) health_tcp: Option<String>,
    #[arg(long = "health-http", allow_hyphen_values = true)]
    pub(super) health_http: Option<String>,
    #[arg(long = "health-interval", allow_hyphen_values = true)]
    pub(super) health_interval: Option<String>,
    #[arg(long = "health-timeout", allow_hyphen_values = true)]
    pub(super) health_timeout: Option<String>,
    #[arg(long = "health-retries", allow_hyphen_values = true)]
    pub(super) health_retries: Option<String>,
    #[arg(long = "health-start-period", allow_hyphen_values = true)]
    pub(super) health_start_period: Option<String>,
    /// `--no-healthcheck`: no health check (docker: not even the image's).
    #[arg(long = "no-healthcheck")]
    pub(super) no_healthcheck: bool,
    #[arg(long = "security-opt", allow_hyphen_values = true)]
    pub(super) security_opt: Vec<String>,
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub(super) pids_limit: Option<String>,
    #[arg(long = "ulimit", allow_hyphen_values = true)]
    pub(super) ulimit: Vec<String>,
    /// `--read-only`, or docker's `--read-only=true|false`.
    #[arg(
        long = "read-only",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub(super) read_only: Option<String>,
    #[arg(long = "tmpfs", allow_hyphen_values = true)]
    pub(super) tmpfs: Vec<String>,
    #[arg(long = "shm-size", allow_hyphen_values = true)]
    pub(super) shm_size: Option<String>,
    #[arg(long = "sysctl", allow_hyphen_values = true)]
    pub(super) sysctl: Vec<String>,
    #[arg(long = "add-host", allow_hyphen_values = true)]
    pub(super) add_host: Vec<String>,
    #[arg(long = "dns", allow_hyphen_values = true)]
    pub(super) dns: Vec<String>,
    #[arg(long = "dns-search", allow_hyphen_values = true)]
    pub(super) dns_search: Vec<String>,
    #[arg(long = "dns-option", alias = "dns-opt", allow_hyphen_values = true)]
    pub(super) dns_option: Vec<String>,
    #[arg(long = "stop-signal", allow_hyphen_values = true)]
    pub(super) stop_signal: Option<String>,
    #[arg(long = "stop-timeout", allow_hyphen_values = true)]
    pub(super) stop_timeout: Option<String>,
    #[arg(long = "oom-score-adj", allow_hyphen_values = true)]
    pub(super) oom_score_adj: Option<String>,
    /// `--init`, or docker's `--init=true|false`.
    #[arg(
        long = "init",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub(super) init: Option<String>,
    #[arg(long = "uts", allow_hyphen_values = true)]
    pub(super) uts: Option<String>,
    /// Everything from the first word that is not a flag (or after `--`).
    #[arg(trailing_var_arg = true, num_args = 1..)]
    pub(super) command: Vec<String>,
}

/// `docker run` flags deliberately not accepted, and why (shown with "unknown flag").
const REFUSED: &[(&[&str], &str)] = &[
    (
        &["-d", "--detach"],
        "every TPC runs detached, under its systemd unit",
    ),
    (
        &["-i", "--interactive", "-t", "--tty", "-a", "--attach"],
        "a TPC runs without a terminal or standard input",
    ),
    (&["--rm"], "a TPC is kept until tpcm uninstall"),
    (&["--name"], "the TPC's name is the argument of tpcm install"),
    (
        &["-P", "--publish-all", "--expose"],
        "publish each port with -p host:container (and --network bridge)",
    ),
    (&["--mount"], "use -v host:container[:ro] or --tmpfs"),
    (
        &["-c", "--cpu-shares", "--cpu-quota", "--cpu-period"],
        "use --cpus",
    ),
];

/// Every other `docker run` flag (docker 27-29): known to docker, not supported by tpcm. Such
/// a flag is named as docker's, with a pointer to the supported subset, instead of a guess.
const DOCKER_RUN_FLAGS: &[&str] = &[
    "--annotation",
    "--blkio-weight",
    "--blkio-weight-device",
    "--cgroup-parent",
    "--cgroupns",
    "--cidfile",
    "--cpu-count",
    "--cpu-percent",
    "--cpu-rt-period",
    "--cpu-rt-runtime",
    "--cpuset-cpus",
    "--cpuset-mems",
    "--detach-keys",
    "--device-cgroup-rule",
    "--device-read-bps",
    "--device-read-iops",
    "--device-write-bps",
    "--device-write-iops",
    "--disable-content-trust",
    "--domainname",
    "--gpus",
    "--group-add",
    "--health-start-interval",
    "--io-maxbandwidth",
    "--io-maxiops",
    "--ip",
    "--ip6",
    "--ipc",
    "--isolation",
    "--kernel-memory",
    "--label-file",
    "--link",
    "--link-local-ip",
    "--log-driver",
    "--log-opt",
    "--mac-address",
    "--memory-swap",
    "--memory-swappiness",
    "--network-alias",
    "--net-alias",
    "--oom-kill-disable",
    "--pid",
    "--platform",
    "--pull",
    "--quiet",
    "--runtime",
    "--sig-proxy",
    "--storage-opt",
    "--use-api-socket",
    "--userns",
    "--volume-driver",
    "--volumes-from",
];

/// The accepted flag most like `flag`, when it is close enough to be a typo: at most 2 edits
/// (a swap of neighbours counts once) and at most a third of the flag, so `--memroy` is
/// `--memory` but nothing unrelated is offered.
fn close_flag(flag: &str) -> Option<String> {
    use clap::CommandFactory;
    let written = flag.trim_start_matches('-');
    RawArgs::command()
        .get_arguments()
        .flat_map(|a| {
            a.get_long_and_visible_aliases()
                .into_iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .map(|long| (strsim::osa_distance(written, &long), long))
        .filter(|(d, long)| *d <= 2 && *d * 3 <= long.len().max(written.len()))
        .min()
        .map(|(_, long)| format!("--{long}"))
}

/// Turns clap's multi-line error into one [`ArgsError`] line that names the flag.
pub(super) fn from_clap(e: clap::Error) -> ArgsError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let string = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    // clap names an option with its value placeholder ("--memory <MEMORY>"), and an unknown
    // long flag as written ("--foo=bar"): keep the flag alone.
    let flag = string(ContextKind::InvalidArg).map(|a| {
        let a = a.split(' ').next().unwrap_or_default();
        a.split('=').next().unwrap_or_default().to_string()
    });
    let first_line = || {
        let text = e.to_string();
        let line = text.lines().next().unwrap_or_default();
        line.strip_prefix("error: ").unwrap_or(line).to_string()
    };
    match (e.kind(), flag) {
        (ErrorKind::UnknownArgument, Some(flag)) => {
            let hint = REFUSED
                .iter()
                .find(|(names, _)| names.contains(&flag.as_str()))
                .map(|(_, why)| why.to_string())
                .or_else(|| {
                    DOCKER_RUN_FLAGS.contains(&flag.as_str()).then(|| {
                        format!("docker's {flag} is not supported by tpcm; docs/args.md lists what is")
                    })
                })
                .or_else(|| close_flag(&flag).map(|s| format!("did you mean {s}?")));
            ArgsError::UnknownFlag { flag, hint }
        }
        (ErrorKind::InvalidValue, Some(flag))
            if string(ContextKind::InvalidValue).is_none_or(|v| v.is_empty()) =>
        {
            ArgsError::MissingValue { flag }
        }
        (_, Some(flag)) => ArgsError::Invalid {
            flag,
            message: first_line(),
        },
        (_, None) => ArgsError::Other(first_line()),
    }
}
