//! `tpcm image ...`: import, list, remove.

use super::progress::TerminalProgress;
use super::source::{SourceArgs, image_source};
use super::units::human_size;
use crate::config::Settings;
use crate::manager;
use clap::Subcommand;
use std::sync::Arc;

#[derive(Subcommand, Debug)]
pub(super) enum ImageCommand {
    /// Import an image: a docker-save or OCI-layout archive (.tar or gzip'd), or pull one from
    /// a registry.
    #[command(alias = "pull")]
    Import {
        /// A local path, an http(s) URL, with --protocol a path on the SSH server, or a
        /// registry image (`host[:port]/repo[:tag|@digest]`).
        location: String,
        /// Name for the image (name[:tag], tag defaults to latest), replacing its own.
        #[arg(long)]
        tag: Option<String>,
        #[command(flatten)]
        source: SourceArgs,
        /// Accept an unknown SSH host key (and record it) without asking.
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// List images.
    #[command(alias = "ls")]
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove an image and whatever only it used.
    #[command(alias = "rm")]
    Remove {
        /// Image reference (e.g. busybox:1.0 or docker.io/library/busybox:1.0).
        reference: String,
        /// Remove the name even though TPCs use the image (they keep running on the image
        /// their containers pin).
        #[arg(short, long)]
        force: bool,
    },
}

pub(super) async fn run(cmd: ImageCommand, settings: &Settings) -> Result<(), String> {
    let cd = super::connect(settings).await?;
    match cmd {
        ImageCommand::Import {
            location,
            tag,
            source,
            yes,
        } => {
            let source = image_source(&location, &source, yes, settings)?;
            let progress = Arc::new(TerminalProgress::new());
            let store = manager::store::Store::new(&settings.root);
            let images = manager::import_image(&cd, &store, &source, tag, progress)
                .await
                .map_err(|e| e.to_string())?;
            for img in images {
                println!(
                    "Imported {} ({}, {} layer{}, {})",
                    img.names.join(", "),
                    img.digest,
                    img.layers,
                    if img.layers == 1 { "" } else { "s" },
                    human_size(img.size)
                );
            }
        }
        ImageCommand::List { json } => {
            let images = manager::list_images(&cd).await.map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&images).expect("summaries serialize")
                );
            } else {
                let rows: Vec<Vec<String>> = images
                    .iter()
                    .map(|i| {
                        let short = i.digest.strip_prefix("sha256:").unwrap_or(&i.digest);
                        let created = i
                            .created
                            .map(|s| {
                                humantime::format_rfc3339_seconds(
                                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
                                )
                                .to_string()
                            })
                            .unwrap_or_else(|| "-".into());
                        vec![
                            i.name.clone(),
                            format!("sha256:{}", &short[..short.len().min(12)]),
                            human_size(i.size),
                            created,
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    super::table::render(&["NAME", "DIGEST", "SIZE", "CREATED"], &rows)
                );
            }
        }
        ImageCommand::Remove { reference, force } => {
            let store = manager::store::Store::new(&settings.root);
            let (name, users) = manager::remove_image(&cd, &store, &reference, force)
                .await
                .map_err(|e| e.to_string())?;
            println!("Removed {name}");
            if !users.is_empty() {
                println!(
                    "TPC(s) {} keep running on the image they pin; it is freed when they are upgraded or uninstalled",
                    users.join(", ")
                );
            }
        }
    }
    Ok(())
}
