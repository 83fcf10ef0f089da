//! `tpcm inspect|stats|top|events`: what an operator looks at, as docker shows it.

use crate::config::Settings;
use crate::manager::events::{self, Event, Follower};
use crate::manager::observe;
use crate::manager::store::Store;
use clap::Args;
use std::io::IsTerminal;
use std::time::Duration;

/// `tpcm inspect`.
#[derive(Args, Debug)]
pub(super) struct Inspect {
    /// TPC name.
    name: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Show environment values (masked otherwise) and the --args text.
    #[arg(long)]
    show_env: bool,
}

/// `tpcm stats`.
#[derive(Args, Debug)]
pub(super) struct Stats {
    /// TPC names (default: every running TPC).
    names: Vec<String>,
    /// Print one reading and exit.
    #[arg(long)]
    no_stream: bool,
    /// Print JSON (one array per reading).
    #[arg(long)]
    json: bool,
}

/// `tpcm top`.
#[derive(Args, Debug)]
pub(super) struct Top {
    /// TPC name.
    name: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `tpcm events`.
#[derive(Args, Debug)]
pub(super) struct Events {
    /// Show events since this time: RFC 3339 (2024-05-01T10:00:00Z), seconds since the epoch,
    /// or a duration ago (10m, 1h30m) [default: now].
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Stop at this time (same forms); without it, follow new events until interrupted.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Print JSON, one event per line.
    #[arg(long)]
    json: bool,
}

/// How often `stats` reads again, and the interval of its CPU figure.
const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// How often `events` looks for new ones in tpcm's event file.
const EVENTS_POLL: Duration = Duration::from_millis(200);

/// A time as `--since`/`--until` take it (the forms of `tpcm logs`), in nanoseconds since the
/// epoch.
pub(super) fn parse_time(flag: &str, text: &str) -> Result<u64, String> {
    let t = crate::runtime::logs::parse_time(text, std::time::SystemTime::now())
        .map_err(|e| format!("{flag}: {e}"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0))
}

pub(super) async fn inspect(cmd: Inspect, settings: &Settings) -> Result<(), String> {
    let cd = super::connect(settings).await?;
    let i = observe::inspect(&cd, settings, &cmd.name, cmd.show_env)
        .await
        .map_err(|e| e.to_string())?;
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&i).expect("serializes"));
        return Ok(());
    }
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!("Name:            {}", i.name);
    println!("Image:           {}", i.image.reference);
    println!("Digest:          {}", i.image.digest);
    if let Some(base) = &i.base_digest {
        println!("Runs on:         {base} (saved with its writable layer)");
    }
    println!("State:           {}", i.state);
    println!("Pid:             {}", or_dash(i.pid.map(|p| p.to_string())));
    println!("Started at:      {}", or_dash(i.started_at.clone()));
    println!("Installed at:    {}", i.installed_at);
    println!("Restart policy:  {}", i.restart_policy);
    println!("Restart count:   {}", i.restart_count);
    println!(
        "Last exit:       {}",
        or_dash(i.last_exit.as_ref().map(|e| format!("{} at {}", e.code, e.at)))
    );
    println!(
        "Health:          {}",
        match &i.health {
            None => "- (no health check)".to_string(),
            Some(h) => format!(
                "{} (failing streak {}; {} from the {}, every {} s)",
                h.status.map_or("-".to_string(), |s| s.to_string()),
                h.failing_streak,
                describe_check(&h.check),
                if h.from == "image" {
                    "image's HEALTHCHECK"
                } else {
                    "settings"
                },
                h.timing.interval_ms as f64 / 1000.0,
            ),
        }
    );
    println!("CPUs:            {:.2}", i.cpus);
    println!(
        "Memory:          {}",
        or_dash(i.settings.memory.map(super::units::human_memory))
    );
    println!("Network:         {}", i.network);
    for p in &i.ports {
        println!("Port:            {}:{}/{}", p.host, p.container, p.protocol);
    }
    for m in &i.mounts {
        println!(
            "Mount:           {} -> {}{}",
            m.source,
            m.destination,
            if m.read_only { " (read-only)" } else { "" }
        );
    }
    println!("Log file:        {}", i.log_file);
    println!(
        "Settings:\n{}",
        serde_json::to_string_pretty(&i.settings).expect("serializes")
    );
    Ok(())
}

pub(super) async fn stats(cmd: Stats, settings: &Settings) -> Result<(), String> {
    let cd = super::connect(settings).await?;
    let names = observe::stats_targets(&cd, settings, &cmd.names)
        .await
        .map_err(|e| e.to_string())?;
    let sample_all = || async {
        let mut out = Vec::new();
        for n in &names {
            out.push(
                observe::sample(&cd, settings, n)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok::<_, String>(out)
    };
    let mut before = sample_all().await?;
    let clear = !cmd.no_stream && !cmd.json && std::io::stdout().is_terminal();
    loop {
        tokio::time::sleep(STATS_INTERVAL).await;
        let after = sample_all().await?;
        let rows: Vec<observe::Stats> = before
            .iter()
            .zip(&after)
            .map(|(b, a)| observe::stats(b, a))
            .collect();
        if cmd.json {
            println!("{}", serde_json::to_string(&rows).expect("serializes"));
        } else {
            if clear {
                print!("\x1b[2J\x1b[H");
            }
            print_stats(&rows);
        }
        if cmd.no_stream {
            return Ok(());
        }
        before = after;
    }
}

fn print_stats(rows: &[observe::Stats]) {
    // As docker stats: memory in powers of 1024, I/O in powers of 1000.
    let (memory, size) = (super::units::human_memory, super::units::human_size);
    println!(
        "{:<20} {:>8} {:>22} {:>7} {:>20} {:>20} {:>6}",
        "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"
    );
    for s in rows {
        let limit = s.memory_limit.map_or("-".to_string(), memory);
        let net = match (s.net_rx, s.net_tx) {
            (Some(rx), Some(tx)) => format!("{} / {}", size(rx), size(tx)),
            _ => "- (host)".to_string(),
        };
        println!(
            "{:<20} {:>7.2}% {:>22} {:>6.2}% {:>20} {:>20} {:>6}",
            s.name,
            s.cpu_percent,
            format!("{} / {limit}", memory(s.memory_usage)),
            s.memory_percent,
            net,
            format!("{} / {}", size(s.block_read), size(s.block_write)),
            s.pids
        );
    }
}

pub(super) async fn top(cmd: Top, settings: &Settings) -> Result<(), String> {
    let cd = super::connect(settings).await?;
    let procs = observe::top(&cd, settings, &cmd.name)
        .await
        .map_err(|e| e.to_string())?;
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&procs).expect("serializes"));
        return Ok(());
    }
    println!(
        "{:>6} {:>8} {:>8} {:>9} {:<21} CMD",
        "UID", "PID", "PPID", "TIME", "STARTED"
    );
    for p in procs {
        let t = p.cpu_seconds;
        println!(
            "{:>6} {:>8} {:>8} {:>9} {:<21} {}",
            p.uid,
            p.pid,
            p.ppid,
            format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60),
            p.started,
            p.command
        );
    }
    Ok(())
}

fn show(e: &Event, json: bool) {
    if json {
        let time = std::time::UNIX_EPOCH + Duration::from_nanos(e.time_nano);
        let v = serde_json::json!({
            "time": humantime::format_rfc3339_nanos(time).to_string(),
            "time_nano": e.time_nano,
            "tpc": e.tpc,
            "action": e.action,
            "attributes": e.attributes,
        });
        println!("{v}");
    } else {
        println!("{}", e.line());
    }
}

pub(super) async fn events(cmd: Events, settings: &Settings) -> Result<(), String> {
    let until = cmd
        .until
        .as_deref()
        .map(|t| parse_time("--until", t))
        .transpose()?;
    let store = Store::new(&settings.root);
    // Following starts at the file's end now; what is older comes from reading it.
    let mut follower = Follower::new(&store);
    let start = events::now_nanos();
    let since = cmd
        .since
        .as_deref()
        .map(|t| parse_time("--since", t))
        .transpose()?
        .unwrap_or(start);
    for e in events::read(&store, since, until.unwrap_or(u64::MAX).min(start)) {
        show(&e, cmd.json);
    }
    if until.is_some_and(|u| u <= start) {
        return Ok(());
    }
    // Live: tpcm's own events from the file, and the containers' exits from containerd as they
    // happen (those recorded in the file by whoever waits on a container are the same exits).
    let cd = super::connect(settings).await?;
    let (tx, mut exits) = tokio::sync::mpsc::channel::<(String, u32)>(64);
    let (subscribed, watching) = tokio::sync::oneshot::channel();
    let watcher = cd.clone();
    tokio::spawn(async move {
        let _ = crate::runtime::Runtime::watch_exits(&watcher, tx, subscribed).await;
    });
    let _ = tokio::time::timeout(Duration::from_secs(5), watching).await;
    let mut poll = tokio::time::interval(EVENTS_POLL);
    loop {
        tokio::select! {
            _ = poll.tick() => {
                for e in follower.poll() {
                    if e.time_nano > start && e.action != "die" && until.is_none_or(|u| e.time_nano <= u) {
                        show(&e, cmd.json);
                    }
                }
            }
            Some((id, code)) = exits.recv() => {
                if store.get(&id).ok().flatten().is_some() {
                    show(&Event::now(&id, "die", &[("exitCode", code.to_string())]), cmd.json);
                }
            }
        }
        if until.is_some_and(|u| events::now_nanos() > u) {
            return Ok(());
        }
    }
}

/// A health check as an operator would write it.
fn describe_check(check: &crate::tpc_spec::HealthCheck) -> String {
    use crate::tpc_spec::HealthCheck;
    match check {
        HealthCheck::Cmd(cmd) => format!("`{cmd}`"),
        HealthCheck::Exec(argv) => format!("`{}`", argv.join(" ")),
        HealthCheck::Tcp(port) => format!("TCP 127.0.0.1:{port}"),
        HealthCheck::Http(url) => format!("GET {url}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_epoch_seconds_or_durations_ago() {
        assert_eq!(
            parse_time("--since", "1700000000").unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_time("--since", "2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000_000_000
        );
        let ago = parse_time("--since", "10m").unwrap();
        let expected = events::now_nanos() - 600_000_000_000;
        assert!(ago.abs_diff(expected) < 5_000_000_000);
        assert!(parse_time("--since", "yesterday").is_err());
    }
}
