//! The `tpcm` command line: clap definitions, dispatch, and how errors reach the user (one line
//! on stderr, a non-zero exit code; see `docs/cli.md`).

mod client;
mod exec;
mod generate;
mod images;
mod observe;
mod progress;
mod serve;
mod source;
mod table;
mod tpc;
mod units;

use crate::config::{self, Settings};
use crate::containerd::Containerd;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code for a failed operation (bad input, runtime refusal, unreachable containerd).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a command line clap rejects.
pub const EXIT_USAGE: u8 = 2;

/// Third-party container manager for SONiC switches (drives containerd directly).
#[derive(Parser, Debug)]
#[command(name = "tpcm", version, about, propagate_version = true)]
pub struct Cli {
    /// containerd's gRPC socket.
    #[arg(long, global = true, env = "TPCM_CONTAINERD", default_value = config::DEFAULT_CONTAINERD)]
    containerd: PathBuf,
    /// containerd namespace that holds tpcm's images and containers.
    #[arg(long, global = true, env = "TPCM_NAMESPACE", default_value = config::DEFAULT_NAMESPACE)]
    namespace: String,
    /// TPCM store: state, generated units, shared volume, migration exports.
    #[arg(long, global = true, env = "TPCM_ROOT", default_value = config::DEFAULT_ROOT)]
    root: PathBuf,
    /// Root of the per-TPC data directories (mounted at /tpc).
    #[arg(long, global = true, env = "TPCM_DATA_ROOT", default_value = config::DEFAULT_DATA_ROOT)]
    data_root: PathBuf,
    /// Directory the per-TPC systemd units are installed into.
    #[arg(long, global = true, env = "TPCM_SYSTEMD_DIR", default_value = config::DEFAULT_SYSTEMD_DIR)]
    systemd_dir: PathBuf,
    /// The tpcm binary the per-TPC units run [default: tpcm_binary in tpcm.toml, else
    /// /usr/bin/tpcm].
    #[arg(long, global = true, env = "TPCM_BINARY", hide_short_help = true)]
    binary: Option<PathBuf>,
    /// Where gNOI plugins' socket directories go on the host.
    #[arg(long, global = true, env = "TPCM_PLUGIN_SOCKETS", default_value = config::DEFAULT_PLUGIN_SOCKETS, hide_short_help = true)]
    plugin_sockets: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install a third-party container (TPC) from an image archive or a registry and start it.
    Install(tpc::Install),
    /// Replace a TPC's image (pre/post data hooks, health-checked, rolled back on failure).
    Upgrade(tpc::Upgrade),
    /// Stop and remove a TPC (its data directory is kept unless --clean_data).
    Uninstall(tpc::Uninstall),
    /// List installed TPCs with their state and limits.
    #[command(alias = "ls")]
    List(tpc::List),
    /// Start a stopped TPC.
    Start {
        /// TPC name.
        name: String,
    },
    /// Stop a TPC (it stays stopped across reboots until started).
    Stop {
        /// TPC name.
        name: String,
    },
    /// Stop and start a TPC.
    Restart {
        /// TPC name.
        name: String,
    },
    /// Show a TPC's output (stdout and stderr, oldest first, across rotated files).
    Logs(tpc::Logs),
    /// Run a command in a running TPC (-i: forward stdin, -t: a pseudo-terminal); exits with
    /// the command's exit code.
    Exec(exec::Exec),
    /// Show everything about a TPC: its settings, image, mounts, state, health, restarts.
    Inspect(observe::Inspect),
    /// Show TPCs' CPU, memory, pids, block and network I/O, live (like docker stats).
    Stats(observe::Stats),
    /// Show the processes running in a TPC.
    Top(observe::Top),
    /// Show what happened to TPCs (starts, exits, restarts, health, upgrades, updates).
    Events(observe::Events),
    /// Change a running TPC's CPU cap, memory limits, pids limit or restart policy without
    /// re-creating it.
    Update(tpc::Update),
    /// After a reboot (the boot unit runs this): finish or roll back interrupted operations, then
    /// start every TPC that was running.
    Boot,
    /// The main process of the TPC's systemd unit: start the container (unless the operator
    /// stopped the TPC) and wait for it, exiting with its exit code.
    #[command(name = "unit-run")]
    UnitRun {
        /// TPC name.
        name: String,
    },
    /// The stop command of the TPC's systemd unit (also run at shutdown): stop the container
    /// without recording that the operator stopped it.
    #[command(name = "unit-stop")]
    UnitStop {
        /// TPC name.
        name: String,
    },
    /// SONiC image-upgrade migration: save every TPC into the store, restore, show what is saved.
    #[command(subcommand)]
    Migrate(tpc::MigrateCommand),
    /// Manage images in containerd (import, list, remove).
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Run the gNOI containerz server (mTLS, read/write scopes), its janitor and restart supervisor.
    Serve(serve::Serve),
    /// Remove stopped containers no TPC owns and images nothing uses (what serve's janitor does).
    Janitor(serve::Janitor),
    /// Drive gNOI containerz servers (tpcm serve on other switches): one or many at once.
    Client(Box<client::ClientArgs>),
    /// Print the completion script for a shell (the package installs them; generated from this
    /// binary's own command line).
    #[command(hide = true)]
    Completions {
        /// bash, zsh or fish.
        shell: generate::Shell,
    },
    /// Write the man pages (tpcm.1, tpcm-<command>.1, ...) into an existing directory.
    #[command(hide = true)]
    Man {
        /// Directory to write them into.
        dir: PathBuf,
    },
}

impl Cli {
    /// The locations this invocation works with; the namespace is checked here, so a bad one is
    /// one line before anything is touched.
    fn settings(&self) -> Result<Settings, String> {
        if !crate::tpc_spec::is_identifier(&self.namespace) {
            return Err(format!(
                "--namespace (or TPCM_NAMESPACE) {:?} is not a containerd namespace: use letters and digits joined by single '.', '_' or '-', at most {} characters",
                self.namespace,
                crate::tpc_spec::MAX_IDENTIFIER
            ));
        }
        Ok(Settings {
            containerd: self.containerd.clone(),
            namespace: self.namespace.clone(),
            root: self.root.clone(),
            data_root: self.data_root.clone(),
            systemd_dir: self.systemd_dir.clone(),
            binary: self.binary.clone(),
            plugin_sockets: self.plugin_sockets.clone(),
        })
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // containerd's shim runs tpcm as the TPCs' logging binary (see runtime::logs).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(target) = crate::runtime::logs::LogTarget::from_driver_args(&args) {
        crate::runtime::logs::run_driver(target);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // The server logs its write calls and janitor sweeps by default (to stderr, for journald).
    init_logging(matches!(cli.command, Command::Serve(_)));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => fail(&msg),
    }
}

/// Diagnostics go to stderr when `TPCM_LOG` asks for them (e.g. `TPCM_LOG=debug` shows the
/// import phases and their durations); by default tpcm prints only its results and errors.
fn init_logging(serving: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TPCM_LOG")
        .ok()
        .or_else(|| serving.then(|| tracing_subscriber::EnvFilter::new("tpcm=info")));
    if let Some(filter) = filter {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

fn fail(msg: &str) -> ExitCode {
    // One line: the messages of every layer already name the object and, where there is one, the fix.
    eprintln!("tpcm: error: {}", msg.replace('\n', " "));
    ExitCode::from(EXIT_FAILURE)
}

async fn run(cli: Cli) -> Result<(), String> {
    let settings = cli.settings()?;
    match cli.command {
        Command::Install(cmd) => tpc::install(cmd, &settings).await,
        Command::Upgrade(cmd) => tpc::upgrade(cmd, &settings).await,
        Command::Uninstall(cmd) => tpc::uninstall(cmd, &settings).await,
        Command::List(cmd) => tpc::list(cmd, &settings).await,
        Command::Start { name } => tpc::start(&name, &settings).await,
        Command::Stop { name } => tpc::stop(&name, &settings).await,
        Command::Restart { name } => tpc::restart(&name, &settings).await,
        Command::Logs(cmd) => tpc::logs(cmd, &settings).await,
        Command::Exec(cmd) => exec::exec(cmd, &settings).await,
        Command::Inspect(cmd) => observe::inspect(cmd, &settings).await,
        Command::Stats(cmd) => observe::stats(cmd, &settings).await,
        Command::Top(cmd) => observe::top(cmd, &settings).await,
        Command::Events(cmd) => observe::events(cmd, &settings).await,
        Command::Update(cmd) => tpc::update(cmd, &settings).await,
        Command::Boot => tpc::boot(&settings).await,
        Command::Migrate(cmd) => tpc::migrate(cmd, &settings).await,
        Command::UnitRun { name } => tpc::unit_run(&name, &settings).await,
        Command::UnitStop { name } => tpc::unit_stop(&name, &settings).await,
        Command::Image(cmd) => images::run(cmd, &settings).await,
        Command::Serve(cmd) => serve::serve(cmd, &settings).await,
        Command::Janitor(cmd) => serve::janitor(cmd, &settings).await,
        Command::Client(cmd) => client::run(*cmd, &settings).await,
        Command::Completions { shell } => generate::completions(shell),
        Command::Man { dir } => generate::man_pages(&dir),
    }
}

/// Connects to the configured containerd (the error names the socket), with tpcm.toml's
/// bridge subnet, if it names one.
async fn connect(settings: &Settings) -> Result<Containerd, String> {
    let subnet = crate::config::FileConfig::load(&settings.root)?.bridge_subnet;
    let cd = Containerd::connect(&settings.containerd, &settings.namespace)
        .await
        .map_err(|e| e.to_string())?;
    Ok(match subnet {
        Some(subnet) => cd.with_bridge_subnet(subnet),
        None => cd,
    })
}
