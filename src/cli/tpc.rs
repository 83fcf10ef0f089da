//! `tpcm install|uninstall|list|start|stop|restart`: the SONiC TPCM commands.

use super::progress::TerminalProgress;
use super::source::{SourceArgs, image_source};
use crate::config::Settings;
use crate::manager::container::validate_name;
use crate::manager::log_follow::FollowEnd;
use crate::manager::tpc::{self, InstallRequest, RequestedSettings};
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

/// `tpcm install`.
#[derive(Args, Debug)]
pub(super) struct Install {
    /// TPC name: 1 to 76 of letters, digits, '.', '_' and '-' (containerd's identifier rule).
    name: String,
    /// The image: an archive (docker save or OCI layout, .tar or gzip'd) as a local path, an
    /// http(s) URL or, with --protocol, a path on the SSH server; or a registry image
    /// (`host[:port]/repo[:tag|@digest]`, tag latest by default).
    location: String,
    #[command(flatten)]
    source: SourceArgs,
    /// Container arguments, a subset of `docker run` flags (see docs/args.md).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    args: String,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    yes: bool,
}

/// `tpcm upgrade`.
#[derive(Args, Debug)]
pub(super) struct Upgrade {
    /// TPC name.
    name: String,
    /// The new image, from any source `install` takes.
    location: String,
    #[command(flatten)]
    source: SourceArgs,
    /// New container arguments (default: the TPC's current ones).
    #[arg(long, allow_hyphen_values = true)]
    args: Option<String>,
    /// Do not run /tpc/hook/pre.sh and /tpc/hook/post.sh.
    #[arg(long = "skip_data", alias = "skip-data")]
    skip_data: bool,
    /// Seconds the new version must stay up (and pass its health check within) before it is
    /// kept [default: upgrade_grace_secs in tpcm.toml, else 10].
    #[arg(long, value_name = "SECS")]
    grace: Option<f64>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    yes: bool,
}

/// `tpcm migrate ...`.
#[derive(clap::Subcommand, Debug)]
pub(super) enum MigrateCommand {
    /// Save every TPC (image + writable layer, compressed, shared layers once) and its record into
    /// the store, for a SONiC image upgrade. What the installer runs before rebooting.
    Save,
    /// Recreate saved TPCs missing from containerd, then delete the export (`tpcm boot` does
    /// this too).
    Restore,
    /// Show what is saved.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `tpcm uninstall`.
#[derive(Args, Debug)]
pub(super) struct Uninstall {
    /// TPC name.
    name: String,
    /// Also delete the TPC's private data directory.
    #[arg(long = "clean_data", alias = "clean-data")]
    clean_data: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    yes: bool,
}

/// `tpcm list`.
#[derive(Args, Debug)]
pub(super) struct List {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `tpcm logs`.
#[derive(Args, Debug)]
pub(super) struct Logs {
    /// TPC name.
    name: String,
    /// Keep printing output as it arrives, until the TPC's process exits (as docker logs -f)
    /// or until interrupted.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    /// Start each line with the time tpcm received it (RFC 3339, UTC).
    #[arg(short = 't', long)]
    timestamps: bool,
    /// Only lines received at or after TIME: 2026-12-06T02:16:07Z, seconds since the epoch,
    /// or a duration ago (10m, 1h30m).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only lines received before TIME (the same forms as --since).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
}

/// `tpcm update`.
#[derive(Args, Debug)]
pub(super) struct Update {
    /// TPC name.
    name: String,
    /// CPU cap in CPUs (e.g. 0.5).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    cpus: Option<String>,
    /// Memory limit (e.g. 512m, 1g; 0 removes it).
    #[arg(short = 'm', long, value_name = "SIZE", allow_hyphen_values = true)]
    memory: Option<String>,
    /// Memory soft limit (0 removes it).
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    memory_reservation: Option<String>,
    /// Most processes (0 or -1: no limit).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pids_limit: Option<String>,
    /// Restart policy: no, always, unless-stopped, on-failure[:N].
    #[arg(long, value_name = "POLICY")]
    restart: Option<String>,
}

/// Asks `[y/N]` on a terminal; without one (and without `-y`) refuses rather than hang.
fn confirm(question: &str, yes: bool) -> Result<(), String> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "{question}: no terminal to confirm on; pass -y to proceed"
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| e.to_string())?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err("cancelled".into())
    }
}

fn say(step: &str) {
    println!("{step}");
}

pub(super) async fn install(cmd: Install, settings: &Settings) -> Result<(), String> {
    // Refuse bad input before asking anything or touching containerd.
    validate_name(&cmd.name).map_err(|e| e.to_string())?;
    let requested = RequestedSettings::from_args(&cmd.args).map_err(|e| e.to_string())?;
    let source = image_source(&cmd.location, &cmd.source, cmd.yes, settings)?;
    confirm(
        &format!("Install TPC {} from {}?", cmd.name, source.describe()),
        cmd.yes,
    )?;
    let cd = super::connect(settings).await?;
    let progress = Arc::new(TerminalProgress::new());
    let request = InstallRequest {
        source: &source,
        settings: requested,
        plugin: None,
    };
    tpc::install(&cd, settings, &cmd.name, &request, progress, &say)
        .await
        .map_err(|e| e.to_string())?;
    println!("[ SUCCESS ] TPC {} is installed and running", cmd.name);
    Ok(())
}

pub(super) async fn upgrade(cmd: Upgrade, settings: &Settings) -> Result<(), String> {
    use crate::manager::upgrade::{UpgradeOutcome, UpgradeRequest};
    validate_name(&cmd.name).map_err(|e| e.to_string())?;
    let requested = cmd
        .args
        .as_deref()
        .map(RequestedSettings::from_args)
        .transpose()
        .map_err(|e| e.to_string())?;
    let config = crate::config::FileConfig::load(&settings.root)?;
    let grace = match cmd.grace {
        Some(g) if g.is_finite() && g >= 0.0 => std::time::Duration::from_secs_f64(g),
        Some(g) => return Err(format!("--grace {g}: give a number of seconds, 0 or more")),
        None => std::time::Duration::from_secs(config.upgrade_grace_secs.unwrap_or(10)),
    };
    let hook_timeout = std::time::Duration::from_secs(config.hook_timeout_secs.unwrap_or(300));
    let source = image_source(&cmd.location, &cmd.source, cmd.yes, settings)?;
    confirm(
        &format!("Upgrade TPC {} to {}?", cmd.name, source.describe()),
        cmd.yes,
    )?;
    let cd = super::connect(settings).await?;
    let request = UpgradeRequest {
        source: &source,
        settings: requested,
        skip_data: cmd.skip_data,
        grace,
        hook_timeout,
    };
    let progress = Arc::new(TerminalProgress::new());
    let outcome = crate::manager::upgrade::upgrade(&cd, settings, &cmd.name, &request, progress, &say)
        .await
        .map_err(|e| e.to_string())?;
    match outcome {
        UpgradeOutcome::Upgraded { from, to } => {
            println!(
                "[ SUCCESS ] TPC {} is upgraded from {from} to {to} and running",
                cmd.name
            )
        }
        UpgradeOutcome::AlreadyCurrent { digest } => println!(
            "[ SUCCESS ] TPC {} already runs this image ({digest}); nothing to do",
            cmd.name
        ),
    }
    Ok(())
}

pub(super) async fn unit_run(name: &str, settings: &Settings) -> Result<(), String> {
    let cd = super::connect(settings).await?;
    match tpc::unit_run(&cd, settings, name)
        .await
        .map_err(|e| e.to_string())?
    {
        None => {
            println!("TPC {name} was stopped by the operator; not starting it");
            std::process::exit(crate::systemd::EXIT_LEFT_STOPPED.into());
        }
        Some(code) => {
            println!("TPC {name} exited with code {code}");
            // The unit's exit status is the container's, so Restart=on-failure sees failures.
            std::process::exit(code.min(255) as i32);
        }
    }
}

pub(super) async fn unit_stop(name: &str, settings: &Settings) -> Result<(), String> {
    let cd = super::connect(settings).await?;
    tpc::unit_stop(&cd, settings, name)
        .await
        .map_err(|e| e.to_string())
}

pub(super) async fn migrate(cmd: MigrateCommand, settings: &Settings) -> Result<(), String> {
    use crate::manager::migrate;
    match cmd {
        MigrateCommand::Save => {
            let cd = super::connect(settings).await?;
            let report = migrate::save(&cd, settings, &say)
                .await
                .map_err(|e| e.to_string())?;
            for (name, written) in &report.saved {
                println!("TPC-{name}: saved ({} added)", super::units::human_size(*written));
            }
            println!(
                "[ SUCCESS ] {} TPC(s) saved in {}; the export takes {}",
                report.saved.len(),
                settings.root.join(migrate::MIGRATION_DIR).display(),
                super::units::human_size(report.export_bytes)
            );
        }
        MigrateCommand::Restore => {
            let cd = super::connect(settings).await?;
            let restored = migrate::restore(&cd, settings, &say)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "[ SUCCESS ] {} TPC(s) restored; run `tpcm boot` or `tpcm start` to start them",
                restored.len()
            );
        }
        MigrateCommand::Status { json } => {
            let saved = migrate::saved(settings).map_err(|e| e.to_string())?;
            if json {
                let list: Vec<_> = saved
                    .iter()
                    .map(|s| serde_json::json!({"name": s.record.name, "image": s.record.image(), "digest": s.record.spec.image.digest, "running": s.record.running, "added": s.written}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list).expect("serializes"));
            } else if saved.is_empty() {
                println!("Nothing is saved.");
            } else {
                for s in &saved {
                    println!(
                        "TPC-{}: {} ({}), {} added",
                        s.record.name,
                        s.record.image(),
                        if s.record.running { "running" } else { "stopped" },
                        super::units::human_size(s.written)
                    );
                }
                println!(
                    "Export size: {}",
                    super::units::human_size(migrate::export_size(settings))
                );
            }
        }
    }
    Ok(())
}

pub(super) async fn boot(settings: &Settings) -> Result<(), String> {
    let cd = super::connect(settings).await?;
    let report = crate::manager::boot::boot(&cd, settings, &say)
        .await
        .map_err(|e| e.to_string())?;
    for (name, why) in &report.recovery_failures {
        println!("TPC-{name}: recovering an interrupted operation failed: {why}");
    }
    for name in &report.started {
        println!("TPC-{name}: running");
    }
    for name in &report.stopped {
        println!("TPC-{name}: stopped by the operator; left stopped");
    }
    for (name, why) in &report.failed {
        println!("TPC-{name}: FAILED to start: {why}");
    }
    if report.ok() {
        Ok(())
    } else {
        let failed: Vec<&str> = report
            .recovery_failures
            .iter()
            .chain(&report.failed)
            .map(|(n, _)| n.as_str())
            .collect();
        Err(format!(
            "boot: {} TPC(s) need attention: {}",
            failed.len(),
            failed.join(", ")
        ))
    }
}

pub(super) async fn uninstall(cmd: Uninstall, settings: &Settings) -> Result<(), String> {
    validate_name(&cmd.name).map_err(|e| e.to_string())?;
    confirm(&format!("Uninstall TPC {}?", cmd.name), cmd.yes)?;
    let cd = super::connect(settings).await?;
    tpc::uninstall(&cd, settings, &cmd.name, cmd.clean_data, &say)
        .await
        .map_err(|e| e.to_string())?;
    println!("[ SUCCESS ] TPC {} is uninstalled", cmd.name);
    Ok(())
}

pub(super) async fn list(cmd: List, settings: &Settings) -> Result<(), String> {
    let cd = super::connect(settings).await?;
    let tpcs = tpc::list(&cd, settings).await.map_err(|e| e.to_string())?;
    if cmd.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&tpcs).expect("statuses serialize")
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = tpcs
        .iter()
        .map(|t| {
            // A limit, so in the binary units it was given in (`--memory 512m`).
            let memory = t
                .memory
                .map(super::units::human_memory)
                .unwrap_or_else(|| "-".into());
            let uptime = t
                .uptime
                .map(|s| humantime::format_duration(std::time::Duration::from_secs(s)).to_string());
            vec![
                t.name.clone(),
                t.image.clone(),
                t.status.to_string(),
                t.health.map(|h| h.to_string()).unwrap_or_else(|| "-".into()),
                t.restarts.to_string(),
                format!("{:.2}", t.cpus),
                memory,
                uptime.unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print!(
        "{}",
        super::table::render(
            &[
                "NAME", "IMAGE", "STATUS", "HEALTH", "RESTARTS", "CPUS", "MEMORY", "UPTIME"
            ],
            &rows
        )
    );
    Ok(())
}

pub(super) async fn start(name: &str, settings: &Settings) -> Result<(), String> {
    let cd = super::connect(settings).await?;
    tpc::start_with(&cd, settings, name, &say)
        .await
        .map_err(|e| e.to_string())?;
    println!("[ SUCCESS ] TPC {name} is running");
    Ok(())
}

pub(super) async fn stop(name: &str, settings: &Settings) -> Result<(), String> {
    let cd = super::connect(settings).await?;
    tpc::stop(&cd, settings, name).await.map_err(|e| e.to_string())?;
    println!("[ SUCCESS ] TPC {name} is stopped");
    Ok(())
}

pub(super) async fn restart(name: &str, settings: &Settings) -> Result<(), String> {
    let cd = super::connect(settings).await?;
    tpc::restart(&cd, settings, name)
        .await
        .map_err(|e| e.to_string())?;
    println!("[ SUCCESS ] TPC {name} is running");
    Ok(())
}

pub(super) async fn logs(cmd: Logs, settings: &Settings) -> Result<(), String> {
    use crate::runtime::logs;
    let now = std::time::SystemTime::now();
    let time = |flag: &str, v: &Option<String>| {
        v.as_deref()
            .map(|v| logs::parse_time(v, now).map_err(|e| format!("{flag}: {e}")))
            .transpose()
    };
    let options = logs::ReadOptions {
        tail: cmd.tail,
        timestamps: cmd.timestamps,
        since: time("--since", &cmd.since)?,
        until: time("--until", &cmd.until)?,
    };
    let target = tpc::log_target(settings, &cmd.name).map_err(|e| e.to_string())?;
    // A follow, as `docker logs -f`, goes on only while the TPC's process runs, and ends with it
    // (or when the TPC is uninstalled). Asked before the log is read, so no exit falls between.
    let follow = match cmd.follow {
        true => follow_end(&cmd.name, settings).await,
        false => None,
    };
    // As `docker logs`: the TPC's stderr to stderr, everything else to stdout.
    let mut out = StreamsApart {
        stdout: std::io::stdout().lock(),
        stderr: std::io::stderr().lock(),
    };
    let shown = |e: std::io::Error| format!("cannot read the logs of {}: {e}", cmd.name);
    let from = tokio::task::block_in_place(|| logs::read_tail(&target, &options, &mut out)).map_err(shown)?;
    if let Some(end) = follow {
        tokio::task::block_in_place(|| logs::follow(&target, from, &options, &mut out, &|| end.reached()))
            .map_err(shown)?;
    }
    Ok(())
}

/// When `tpcm logs -f <name>` ends ([`FollowEnd::watch`]). Without containerd, a follow goes on
/// until interrupted or the TPC is uninstalled: the TPC's shim and log driver outlive containerd.
async fn follow_end(name: &str, settings: &Settings) -> Option<FollowEnd> {
    let store = crate::manager::store::Store::new(&settings.root);
    match super::connect(settings).await {
        Ok(cd) => FollowEnd::watch(Arc::new(cd), |cd| cd, &store, name).await,
        Err(_) => Some(FollowEnd::unwatched(&store, name)),
    }
}

/// A TPC's stderr lines to stderr, the rest to stdout.
struct StreamsApart<'a> {
    stdout: std::io::StdoutLock<'a>,
    stderr: std::io::StderrLock<'a>,
}

impl crate::runtime::logs::LogOutput for StreamsApart<'_> {
    fn write(&mut self, stream: Option<crate::runtime::logs::Stream>, bytes: &[u8]) -> std::io::Result<()> {
        match stream {
            Some(crate::runtime::logs::Stream::Stderr) => self.stderr.write_all(bytes),
            _ => self.stdout.write_all(bytes),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stdout.flush()?;
        self.stderr.flush()
    }
}

/// Reads `tpcm update`'s values with the `--args` parsers themselves, before anything is touched.
fn update_change(cmd: &Update) -> Result<crate::manager::update::Change, String> {
    use crate::manager::args::values::{parse_cpus, parse_pids_limit, sized};
    // The parsers speak of `--args`; here the flags are update's own.
    let text = |e: crate::manager::args::ArgsError| {
        let e = e.to_string();
        e.strip_prefix("--args: ").map(str::to_string).unwrap_or(e)
    };
    let size = |flag: &'static str, v: &Option<String>| -> Result<Option<Option<u64>>, String> {
        v.as_deref()
            .map(|v| sized(flag, Some(v)).map_err(text))
            .transpose()
    };
    Ok(crate::manager::update::Change {
        cpus: cmd.cpus.as_deref().map(parse_cpus).transpose().map_err(text)?,
        memory: size("--memory", &cmd.memory)?,
        memory_reservation: size("--memory-reservation", &cmd.memory_reservation)?,
        pids_limit: cmd
            .pids_limit
            .as_deref()
            .map(parse_pids_limit)
            .transpose()
            .map_err(text)?,
        restart: cmd
            .restart
            .as_deref()
            .map(|r| r.parse().map_err(|e: String| format!("--restart: {e}")))
            .transpose()?,
    })
}

pub(super) async fn update(cmd: Update, settings: &Settings) -> Result<(), String> {
    validate_name(&cmd.name).map_err(|e| e.to_string())?;
    let change = update_change(&cmd)?;
    let cd = super::connect(settings).await?;
    let record = crate::manager::update::update(&cd, settings, &cmd.name, &change)
        .await
        .map_err(|e| e.to_string())?;
    let s = &record.spec.settings;
    let size = |v: Option<u64>| v.map_or("none".to_string(), super::units::human_memory);
    println!(
        "[ SUCCESS ] TPC {} updated: cpus {:.2}, memory {}, memory reservation {}, pids limit {}, restart {}",
        cmd.name,
        record.cpus,
        size(s.memory),
        size(s.memory_reservation),
        s.pids_limit.map_or("none".to_string(), |p| p.to_string()),
        s.restart
    );
    Ok(())
}
