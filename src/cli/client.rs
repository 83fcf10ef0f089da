//! `tpcm client`: the containerz client library from the command line, against one or many
//! devices at once. Every command runs on every `--target` concurrently (at most `--parallel`
//! at a time), prints one result line per target (or, with `--json`, one JSON array), and
//! exits non-zero if any target failed; a failure on one target never stops the others.
//! Targets and TLS files can also come from `[client]` in the TPCM config file.

use crate::config::{FileConfig, Settings};
use crate::containerz::client::{Client, ClientError, StartOptions, TlsFiles, split_image};
use crate::containerz::proto;
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `tpcm client` options.
#[derive(Args, Debug)]
pub(super) struct ClientArgs {
    /// A device's containerz server, host:port (repeat for several; default: `targets` under
    /// [client] in tpcm.toml).
    #[arg(long = "target")]
    targets: Vec<String>,
    /// CA certificate (PEM) that signs the devices' certificates.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// This client's certificate (PEM).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Most targets worked on at once.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Print the results as JSON (one array entry per target).
    #[arg(long)]
    json: bool,
    /// Seconds a target may take for the whole command before it counts as failed (a hung
    /// switch must not hold the others' results); `container logs -f` is not limited.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Subcommand, Debug)]
enum ClientCommand {
    /// Images on the devices.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Containers on the devices.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Volumes on the devices.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Push an image archive and start it (the startup client); prints the instance name.
    Deploy {
        /// Image archive (docker save, OCI layout; plain or gzip).
        archive: PathBuf,
        /// Image name to give it.
        #[arg(long)]
        name: String,
        /// Image tag.
        #[arg(long, default_value = "latest")]
        tag: String,
        /// Instance name.
        #[arg(long)]
        instance: String,
        #[command(flatten)]
        start: Box<StartArgs>,
    },
    /// Push a new version and move the instance to it; roll back to the previous image unless
    /// it stays up (the update client).
    Upgrade {
        /// Image archive of the new version.
        archive: PathBuf,
        /// Image name.
        #[arg(long)]
        name: String,
        /// Image tag of the new version.
        #[arg(long)]
        tag: String,
        /// Instance to upgrade.
        #[arg(long)]
        instance: String,
        /// Seconds the new version must stay running before it is kept.
        #[arg(long, default_value_t = 10)]
        health_timeout: u64,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Push an image archive.
    Push {
        /// Image archive.
        archive: PathBuf,
        /// Image name.
        #[arg(long)]
        name: String,
        /// Image tag.
        #[arg(long, default_value = "latest")]
        tag: String,
    },
    /// Have the devices pull an image from a registry.
    Pull {
        /// Image reference (registry/repository:tag).
        reference: String,
        /// Registry user (the password is asked on the terminal unless --password).
        #[arg(long)]
        username: Option<String>,
        /// Registry password.
        #[arg(long, requires = "username")]
        password: Option<String>,
    },
    /// List images.
    #[command(alias = "ls")]
    List,
    /// Remove an image (name:tag).
    #[command(alias = "rm")]
    Remove {
        /// name:tag.
        image: String,
        /// Even while containers use it.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ContainerCommand {
    /// Start a container from a pushed image.
    Start {
        /// name:tag of the image.
        #[arg(long)]
        image: String,
        /// Instance name.
        #[arg(long)]
        instance: String,
        #[command(flatten)]
        start: Box<StartArgs>,
    },
    /// List containers.
    #[command(alias = "ls")]
    List {
        /// Include stopped ones.
        #[arg(long)]
        all: bool,
    },
    /// Stop a container.
    Stop {
        /// Instance name.
        instance: String,
        /// SIGKILL at once.
        #[arg(long)]
        force: bool,
    },
    /// Remove a container.
    #[command(alias = "rm")]
    Remove {
        /// Instance name.
        instance: String,
        /// Even while it runs.
        #[arg(long)]
        force: bool,
    },
    /// Show a container's output.
    Logs {
        /// Instance name.
        instance: String,
        /// Keep showing new output.
        #[arg(short, long)]
        follow: bool,
    },
    /// Move a container to another image (its settings kept).
    Update {
        /// Instance name.
        instance: String,
        /// name:tag of the image.
        #[arg(long)]
        image: String,
        /// Return at once; the outcome shows as label io.tpcm.update in `container list`.
        #[arg(long = "async")]
        is_async: bool,
    },
}

#[derive(Subcommand, Debug)]
enum VolumeCommand {
    /// Create a local volume.
    Create {
        /// Volume name.
        name: String,
        /// Driver option: o=bind,ro (mount options) or device=/dir (bind that existing directory
        /// of the device).
        #[arg(short = 'o', long = "opt")]
        options: Vec<String>,
    },
    /// List volumes.
    #[command(alias = "ls")]
    List,
    /// Remove a volume.
    #[command(alias = "rm")]
    Remove {
        /// Volume name.
        name: String,
        /// Even while a container uses it.
        #[arg(long)]
        force: bool,
    },
}

/// What a started container gets besides its image.
#[derive(Args, Debug, Clone, Default)]
struct StartArgs {
    /// Environment variable K=V.
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Published port internal:external (TCP and UDP are both forwarded: the protocol has no
    /// field for it; a /tcp or /udp suffix is accepted).
    #[arg(long = "port", short = 'p')]
    ports: Vec<String>,
    /// Volume name:path[:ro].
    #[arg(long = "volume", short = 'v')]
    volumes: Vec<String>,
    /// CPU cap in CPUs.
    #[arg(long)]
    cpus: Option<f64>,
    /// Memory limit (e.g. 256m, 1g).
    #[arg(long)]
    memory: Option<String>,
    /// Restart policy: no, always, unless-stopped, on-failure[:N].
    #[arg(long)]
    restart: Option<String>,
    /// Label k=v.
    #[arg(long = "label", short = 'l')]
    labels: Vec<String>,
    /// Network: host (default), none or bridge (chosen when ports are given).
    #[arg(long)]
    network: Option<String>,
    /// The command to run instead of the image's.
    #[arg(last = true)]
    cmd: Vec<String>,
}

impl StartArgs {
    fn request(&self, instance: &str) -> Result<StartOptions, String> {
        use proto::start_container_request::{Limits, Port, Restart, restart::Policy};
        let mut r = StartOptions {
            instance_name: instance.into(),
            cmd: shell_words::join(&self.cmd),
            network: self.network.clone().unwrap_or_default(),
            ..Default::default()
        };
        for e in &self.env {
            let (k, v) = e.split_once('=').ok_or_else(|| format!("--env {e:?}: use K=V"))?;
            r.environment.insert(k.into(), v.into());
        }
        for l in &self.labels {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            r.labels.insert(k.into(), v.into());
        }
        for p in &self.ports {
            let spec = p
                .strip_suffix("/tcp")
                .or_else(|| p.strip_suffix("/udp"))
                .unwrap_or(p);
            let bad = || format!("--port {p:?}: use internal:external (e.g. 80:8080)");
            let (i, x) = spec.split_once(':').ok_or_else(bad)?;
            r.ports.push(Port {
                internal: i.parse().map_err(|_| bad())?,
                external: x.parse().map_err(|_| bad())?,
            });
        }
        for v in &self.volumes {
            let parts: Vec<&str> = v.split(':').collect();
            let (name, path, ro) = match parts.as_slice() {
                [n, p] => (*n, *p, false),
                [n, p, "ro"] => (*n, *p, true),
                [n, p, "rw"] => (*n, *p, false),
                _ => return Err(format!("--volume {v:?}: use name:path[:ro]")),
            };
            r.volumes.push(proto::Volume {
                name: name.into(),
                mount_point: path.into(),
                read_only: ro,
            });
        }
        if self.cpus.is_some() || self.memory.is_some() {
            let memory = match &self.memory {
                Some(m) => crate::tpc_spec::parse_size(m).map_err(|e| format!("--memory: {e}"))? as i64,
                None => 0,
            };
            r.limits = Some(Limits {
                max_cpu: self.cpus.unwrap_or(0.0),
                soft_mem_bytes: 0,
                hard_mem_bytes: memory,
            });
        }
        if let Some(policy) = &self.restart {
            let parsed: crate::tpc_spec::RestartPolicy =
                policy.parse().map_err(|e: String| format!("--restart: {e}"))?;
            use crate::tpc_spec::RestartPolicy as P;
            let (policy, attempts) = match parsed {
                P::No => (Policy::None, 0),
                P::Always => (Policy::Always, 0),
                P::UnlessStopped => (Policy::UnlessStopped, 0),
                P::OnFailure { max_retries } => (Policy::OnFailure, max_retries.unwrap_or(0)),
            };
            r.restart = Some(Restart {
                policy: policy as i32,
                attempts,
            });
        }
        Ok(r)
    }
}

/// `-o` options of `volume create`: docker's `o=…` (mount options), `device=…` (an existing
/// directory of the device) and `type=none`.
fn volume_options(options: &[String]) -> Result<(Vec<String>, Option<String>), String> {
    let (mut mount, mut device) = (Vec::new(), None);
    for o in options {
        match o.split_once('=') {
            Some(("o", v)) => mount.extend(v.split(',').filter(|s| !s.is_empty()).map(str::to_string)),
            Some(("device", d)) if d.starts_with('/') => device = Some(d.to_string()),
            Some(("type", "none")) => {}
            _ => {
                return Err(format!(
                    "-o {o:?}: use o=<mount options>, device=/dir or type=none"
                ));
            }
        }
    }
    Ok((mount, device))
}

/// One target's outcome: lines for people, a value for `--json`.
struct Outcome {
    lines: Vec<String>,
    json: serde_json::Value,
}

impl Outcome {
    fn line(text: impl Into<String>) -> Outcome {
        let text = text.into();
        Outcome {
            json: serde_json::Value::String(text.clone()),
            lines: vec![text],
        }
    }
}

/// Told `(bytes sent, bytes in all)` as a transfer goes.
type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Progress bars per target, on a terminal only.
#[derive(Clone)]
struct Bars {
    multi: Option<MultiProgress>,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            multi: std::io::stderr().is_terminal().then(MultiProgress::new),
        }
    }

    /// A bar for `target`, or a no-op callback off a terminal.
    fn for_target(&self, target: &str) -> (Option<ProgressBar>, ProgressFn) {
        let Some(multi) = &self.multi else {
            return (None, Arc::new(|_, _| {}));
        };
        let bar = multi.add(ProgressBar::new(0));
        let style = ProgressStyle::with_template("{msg:20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("template is valid")
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(target.to_string());
        let b = bar.clone();
        (
            Some(bar),
            Arc::new(move |sent, total| {
                b.set_length(total);
                b.set_position(sent);
            }),
        )
    }
}

fn tls_and_targets(args: &ClientArgs, settings: &Settings) -> Result<(Vec<String>, TlsFiles), String> {
    let file = FileConfig::load(&settings.root)?.client.unwrap_or_default();
    let targets = if args.targets.is_empty() {
        file.targets
    } else {
        args.targets.clone()
    };
    if targets.is_empty() {
        return Err("tpcm client needs --target host:port (or targets under [client] in tpcm.toml)".into());
    }
    let need = |flag: &Option<PathBuf>, key: Option<PathBuf>, name: &str| {
        flag.clone().or(key).ok_or_else(|| {
            format!(
                "tpcm client needs --{name} (or {} under [client] in tpcm.toml)",
                name.replace('-', "_")
            )
        })
    };
    let tls = TlsFiles {
        ca_cert: need(&args.ca_cert, file.ca_cert, "ca-cert")?,
        cert: need(&args.cert, file.cert, "cert")?,
        key: need(&args.key, file.key, "key")?,
    };
    Ok((targets, tls))
}

pub(super) async fn run(args: ClientArgs, settings: &Settings) -> Result<(), String> {
    let (targets, tls) = tls_and_targets(&args, settings)?;
    if args.parallel == 0 {
        return Err("--parallel must be at least 1".into());
    }
    // Validate what does not depend on a device once, before contacting any.
    let start = match &args.command {
        ClientCommand::Deploy { start, instance, .. }
        | ClientCommand::Container(ContainerCommand::Start { start, instance, .. }) => {
            Some(start.request(instance)?)
        }
        _ => None,
    };
    if let ClientCommand::Volume(VolumeCommand::Create { options, .. }) = &args.command {
        volume_options(options)?;
    }
    let credentials = match &args.command {
        ClientCommand::Image(ImageCommand::Pull {
            username: Some(user),
            password,
            reference,
        }) => {
            let password = match password {
                Some(p) => p.clone(),
                None if std::io::stdin().is_terminal() => {
                    rpassword::prompt_password(format!("Password for {user} at {reference}: "))
                        .map_err(|e| format!("cannot read the password: {e}"))?
                }
                None => {
                    return Err(
                        "a password is needed and there is no terminal to ask on; give --password".into(),
                    );
                }
            };
            Some((user.clone(), password))
        }
        _ => None,
    };
    let command = Arc::new(args.command);
    let (tls, start, credentials) = (Arc::new(tls), Arc::new(start), Arc::new(credentials));
    let bars = Bars::new();
    let follow_single = targets.len() == 1;
    let following = matches!(
        &*command,
        ClientCommand::Container(ContainerCommand::Logs { follow: true, .. })
    );
    let limit = Duration::from_secs(args.timeout);
    let results: Vec<(String, Result<Outcome, String>)> = futures_util::stream::iter(targets)
        .map(|target| {
            let (command, tls, start, credentials, bars) = (
                command.clone(),
                tls.clone(),
                start.clone(),
                credentials.clone(),
                bars.clone(),
            );
            async move {
                let work = on_target(
                    &target,
                    &command,
                    &tls,
                    &start,
                    &credentials,
                    &bars,
                    follow_single,
                );
                let result = if following {
                    work.await.map_err(|e| e.to_string())
                } else {
                    match tokio::time::timeout(limit, work).await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err(format!("no result within {} s (--timeout)", limit.as_secs())),
                    }
                };
                (target, result)
            }
        })
        .buffer_unordered(args.parallel)
        .collect()
        .await;
    let mut results = results;
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.1.is_err())
        .map(|r| r.0.as_str())
        .collect();
    if args.json {
        let entries: Vec<serde_json::Value> = results
            .iter()
            .map(|(target, r)| match r {
                Ok(o) => serde_json::json!({"target": target, "ok": true, "result": o.json}),
                Err(e) => serde_json::json!({"target": target, "ok": false, "error": e}),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).expect("JSON serializes")
        );
    } else {
        for (target, r) in &results {
            match r {
                Ok(o) if o.lines.is_empty() => println!("{target}: ok"),
                Ok(o) => {
                    for l in &o.lines {
                        println!("{target}: {l}");
                    }
                }
                // Errors name their device; the line already does.
                Err(e) => println!(
                    "{target}: FAILED: {}",
                    e.strip_prefix(&format!("{target}: ")).unwrap_or(e)
                ),
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "failed on {} of {} targets: {}",
            failed.len(),
            results.len(),
            failed.join(", ")
        ))
    }
}

/// Runs the command on one device.
async fn on_target(
    target: &str,
    command: &ClientCommand,
    tls: &TlsFiles,
    start: &Option<StartOptions>,
    credentials: &Option<(String, String)>,
    bars: &Bars,
    follow_single: bool,
) -> Result<Outcome, ClientError> {
    let mut c = Client::connect(target, tls).await?;
    let with_bar = |outcome: Result<Outcome, ClientError>, bar: Option<ProgressBar>| {
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        outcome
    };
    match command {
        ClientCommand::Image(ImageCommand::Push { archive, name, tag }) => {
            let (bar, progress) = bars.for_target(target);
            let r = c
                .push_image(archive, name, tag, progress.as_ref())
                .await
                .map(|s| Outcome::line(format!("pushed {}:{} ({} bytes)", s.name, s.tag, s.image_size)));
            with_bar(r, bar)
        }
        ClientCommand::Image(ImageCommand::Pull { reference, .. }) => {
            let (name, tag) = split_image(reference.split_once('@').map_or(reference.as_str(), |(n, _)| n));
            let s = c.pull_image(reference, name, tag, credentials.clone()).await?;
            Ok(Outcome::line(format!("pulled {}:{}", s.name, s.tag)))
        }
        ClientCommand::Image(ImageCommand::List) => {
            let images = c.list_images().await?;
            Ok(Outcome {
                lines: images
                    .iter()
                    .map(|i| format!("{}:{} {}", i.image_name, i.tag, i.id))
                    .collect(),
                json: serde_json::json!(
                    images
                        .iter()
                        .map(|i| serde_json::json!({"name": i.image_name, "tag": i.tag, "id": i.id}))
                        .collect::<Vec<_>>()
                ),
            })
        }
        ClientCommand::Image(ImageCommand::Remove { image, force }) => {
            let (name, tag) = split_image(image);
            c.remove_image(name, tag, *force).await?;
            Ok(Outcome::line(format!("removed {name}:{tag}")))
        }
        ClientCommand::Container(ContainerCommand::Start { image, .. }) => {
            let mut r = start.clone().expect("checked before");
            let (name, tag) = split_image(image);
            r.image_name = name.into();
            r.tag = tag.into();
            let instance = c.start_container(r).await?;
            Ok(Outcome::line(format!("started {instance}")))
        }
        ClientCommand::Container(ContainerCommand::List { all }) => {
            let list = c.list_containers(*all).await?;
            Ok(Outcome {
                lines: list
                    .iter()
                    .map(|l| format!("{} {} {}", l.name, l.image_name, l.status().as_str_name()))
                    .collect(),
                json: serde_json::json!(
                    list.iter()
                        .map(|l| serde_json::json!({
                            "name": l.name,
                            "image": l.image_name,
                            "status": l.status().as_str_name(),
                            "labels": l.labels,
                        }))
                        .collect::<Vec<_>>()
                ),
            })
        }
        ClientCommand::Container(ContainerCommand::Stop { instance, force }) => {
            c.stop_container(instance, *force).await?;
            Ok(Outcome::line(format!("stopped {instance}")))
        }
        ClientCommand::Container(ContainerCommand::Remove { instance, force }) => {
            c.remove_container(instance, *force).await?;
            Ok(Outcome::line(format!("removed {instance}")))
        }
        ClientCommand::Container(ContainerCommand::Logs { instance, follow }) => {
            // Following: lines as they come (prefixed with the device when there are several);
            // otherwise collected per device like every other result.
            if *follow {
                use std::io::Write;
                c.logs(instance, true, &mut |l| {
                    let mut out = std::io::stdout().lock();
                    let written = if follow_single {
                        write!(out, "{l}")
                    } else {
                        write!(out, "{target}: {l}")
                    };
                    written.and_then(|()| out.flush()).is_ok()
                })
                .await?;
                return Ok(Outcome {
                    lines: vec![],
                    json: serde_json::Value::Null,
                });
            }
            let mut lines = Vec::new();
            c.logs(instance, *follow, &mut |l| {
                lines.push(l.trim_end_matches('\n').to_string());
                true
            })
            .await?;
            Ok(Outcome {
                json: serde_json::json!(lines),
                lines,
            })
        }
        ClientCommand::Container(ContainerCommand::Update {
            instance,
            image,
            is_async,
        }) => {
            let (name, tag) = split_image(image);
            c.update_container(instance, name, tag, *is_async).await?;
            Ok(Outcome::line(if *is_async {
                format!("update of {instance} to {name}:{tag} accepted")
            } else {
                format!("updated {instance} to {name}:{tag}")
            }))
        }
        ClientCommand::Volume(VolumeCommand::Create { name, options }) => {
            let (mount, device) = volume_options(options).map_err(ClientError::Config)?;
            let created = c.create_volume(name, mount, device).await?;
            Ok(Outcome::line(format!("created volume {created}")))
        }
        ClientCommand::Volume(VolumeCommand::List) => {
            let list = c.list_volumes().await?;
            Ok(Outcome {
                lines: list.iter().map(|v| format!("{} {}", v.name, v.driver)).collect(),
                json: serde_json::json!(
                    list.iter()
                        .map(|v| serde_json::json!({"name": v.name, "driver": v.driver, "labels": v.labels}))
                        .collect::<Vec<_>>()
                ),
            })
        }
        ClientCommand::Volume(VolumeCommand::Remove { name, force }) => {
            c.remove_volume(name, *force).await?;
            Ok(Outcome::line(format!("removed volume {name}")))
        }
        ClientCommand::Deploy {
            archive, name, tag, ..
        } => {
            let (bar, progress) = bars.for_target(target);
            let r = c
                .deploy(
                    archive,
                    name,
                    tag,
                    start.clone().expect("checked before"),
                    progress.as_ref(),
                )
                .await
                .map(|instance| Outcome::line(format!("deployed {name}:{tag} as {instance}, started")));
            with_bar(r, bar)
        }
        ClientCommand::Upgrade {
            archive,
            name,
            tag,
            instance,
            health_timeout,
        } => {
            let (bar, progress) = bars.for_target(target);
            let r = c
                .upgrade(
                    archive,
                    name,
                    tag,
                    instance,
                    Duration::from_secs(*health_timeout),
                    progress.as_ref(),
                )
                .await
                .map(|previous| {
                    Outcome::line(format!("upgraded {instance} from {previous} to {name}:{tag}"))
                });
            with_bar(r, bar)
        }
    }
}
