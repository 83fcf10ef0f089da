//! `tpcm upgrade`: replace a TPC's image, carrying its data across with the pre/post hooks, and
//! keep the new version only if it stays up and passes its health check; otherwise bring the old
//! container back exactly as it was, writable layer included. Every step is journaled first
//! (`journal.rs`), so a crash at any point is finished or rolled back by the next command.
//!
//! Sequence (see `docs/upgrade.md`): pin the old image's manifest → import the new image → pre
//! hook in the old container → hold the old container (definition + writable layer) → stop it →
//! detach it → create and start the new container → post hook → health gate → commit (write the
//! record) → discard the old layer, unpin, remove the old image if unused.

use super::container::{
    check_ports, cpu_cap, create_container, default_cpu_share, install_unit, lock_ports, require_locked,
    start_task, stop_grace,
};
use super::hooks::{self, Found, Hook};
use super::journal::{self, Entry, UpgradeJournal, UpgradeStep, crash_point};
use super::journal_steps::{abort_upgrade, finish_upgrade, roll_back_upgrade};
use super::store::{ImagesAccess, Store, TpcRecord};
use super::tpc::RequestedSettings;
use super::{Error, ImageSource, Progress};
use crate::config::Settings;
use crate::runtime::{ContainerState, Runtime};
use crate::tpc_spec::{HealthCheck, HealthTiming, ImageRef, TpcSpec};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the health gate looks at the new container.
const HEALTH_POLL: Duration = Duration::from_millis(200);

/// What an upgrade is asked to do.
pub struct UpgradeRequest<'a> {
    /// Where the new image comes from.
    pub source: &'a ImageSource,
    /// New settings; `None` keeps the TPC's.
    pub settings: Option<RequestedSettings>,
    /// Skip both hooks.
    pub skip_data: bool,
    /// How long the new container must stay up (and its health check pass within).
    pub grace: Duration,
    /// Longest run of each hook.
    pub hook_timeout: Duration,
}

/// How an upgrade ended (failures that were rolled back are errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeOutcome {
    /// The TPC runs the new image.
    Upgraded {
        /// Image before.
        from: String,
        /// Image after.
        to: String,
    },
    /// The source holds the image the TPC already runs, with the same settings.
    AlreadyCurrent {
        /// Its manifest digest.
        digest: String,
    },
}

/// Upgrades TPC `name`. `say` receives each step and hook output.
pub async fn upgrade<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    name: &str,
    request: &UpgradeRequest<'_>,
    progress: Arc<dyn Progress>,
    say: &dyn Fn(&str),
) -> Result<UpgradeOutcome, Error> {
    let store = Store::new(&settings.root);
    let _lock = store.lock_for_command(name)?;
    super::recovery::recover(runtime, settings, &store, name, say).await?;
    let old = require_locked(&store, name)?;
    if old.plugin.is_some() {
        return Err(Error::Invalid(format!(
            "{name} is a gNOI plugin: a plugin is upgraded by deploying the new tarball, removing the plugin (RemovePlugin) and starting it again (StartPlugin)"
        )));
    }
    let wanted = match &request.settings {
        Some(s) => s.clone(),
        None => RequestedSettings {
            container: old.spec.settings.clone(),
            args: old.args.clone(),
        },
    };
    wanted
        .container
        .check()
        .map_err(|e| Error::Invalid(e.to_string()))?;
    super::container::check_bind_sources(&wanted.container)?;
    let cpu_share = default_cpu_share(settings)?;
    let _ports = lock_ports(&store, &wanted.container)?;
    check_ports(&store, name, &wanted.container)?;
    let source =
        super::images::prefer_present(runtime, request.source, Some(old.spec.image.digest.as_str())).await?;

    // Shared with other imports from before the images are listed until the journal names the
    // new image: no removal can come between what this upgrade sees and what its journal says
    // (from then on a removal refuses what the journal names). Dropped before an abort, which
    // removes images itself.
    let images_lock = super::lock_images(&store, ImagesAccess::Import, super::IMAGES_PATIENCE).await?;
    let images = runtime.list_images().await?;
    // While the old container is detached, nothing else may keep the manifest it runs on: a
    // name does. One that exists already pins it, unless another upgrade made it (two TPCs on
    // one image): then this upgrade shares it, and whichever ends last removes it.
    let pin = Some(journal::pin_name(old.image(), old.runs_on())).filter(|_| !old.runs_on().is_empty());
    let pin = match pin {
        Some(pin) if images.iter().any(|i| i.name == pin) => {
            let shared = journal::pin_made_by_another(&store, &pin, name).map_err(|e| {
                Error::Internal(format!(
                    "cannot tell whether another upgrade made the pin {pin}: {e}"
                ))
            })?;
            shared.then_some(pin)
        }
        other => other,
    };
    let mut j = UpgradeJournal {
        pin,
        tag_before: images
            .iter()
            .find(|i| i.name == old.image())
            .map(|i| i.digest.clone()),
        old: old.clone(),
        new_image: None,
        held: None,
        new_record: None,
        step: UpgradeStep::Importing,
        keep_new_image: !source.owned(),
    };
    journal::write(&store, name, Entry::Upgrade(&j))?;
    if let Some(pin) = j.pin.clone() {
        match runtime.name_image(&pin, old.runs_on()).await {
            Ok(()) => {}
            // The old manifest is gone already (a container made before containers pinned
            // their image): nothing to pin.
            Err(crate::runtime::Error::ImageNotFound(_)) => {
                j.pin = None;
                journal::write(&store, name, Entry::Upgrade(&j))?;
            }
            Err(e) => {
                journal::remove(&store, name)?;
                return Err(e.into());
            }
        }
    }
    crash_point("upgrade:pinned");

    say(&format!("{} the new TPC-{name} image", source.fetch_verb()));
    let imported = match super::import_image(runtime, &store, &source, None, progress).await {
        Ok(images) => images,
        Err(e) => {
            drop(images_lock);
            return Err(abort(runtime, &store, name, &j, e).await);
        }
    };
    let (new_image, new_digest) = match imported.as_slice() {
        [one] => (one.names[0].clone(), one.digest.clone()),
        _ => {
            drop(images_lock);
            j.new_image = imported.first().map(|i| (i.names[0].clone(), i.digest.clone()));
            let e = Error::Invalid(format!(
                "{} holds {} images; a TPC needs exactly one",
                source.describe(),
                imported.len()
            ));
            return Err(abort(runtime, &store, name, &j, e).await);
        }
    };
    j.new_image = Some((new_image.clone(), new_digest.clone()));
    j.step = UpgradeStep::Imported;
    journal::write(&store, name, Entry::Upgrade(&j))?;
    drop(images_lock);
    crash_point("upgrade:imported");

    if old.spec.image.digest == new_digest
        && old.base_digest.is_none()
        && wanted.container == old.spec.settings
    {
        // Nothing to do; the import only re-pointed names at what was already there.
        abort_upgrade(runtime, &store, name, &j).await?;
        return Ok(UpgradeOutcome::AlreadyCurrent { digest: new_digest });
    }

    let data_dir = settings.data_root.join(name);
    let old_running = matches!(
        runtime.container_state(name).await?,
        ContainerState::Running { .. }
    );
    // The hooks are looked up before anything changes, so a broken one stops here: the pre
    // hook in the image the old container runs on (by digest: its tag may have moved with the
    // import), the post hook in the new image.
    let new_ref = ImageRef {
        reference: new_image.clone(),
        digest: new_digest.clone(),
    };
    let old_ref = ImageRef {
        reference: old.image().to_string(),
        digest: old.runs_on().to_string(),
    };
    let found = async {
        if request.skip_data {
            say("Skipping the pre and post hooks (--skip_data)");
            return Ok::<_, Error>((None, None));
        }
        let pre = if old_running {
            Some(hooks::find(runtime, &data_dir, &old_ref, Hook::Pre).await?)
        } else {
            say(&format!(
                "TPC-{name} is not running: no {} runs",
                Hook::Pre.path()
            ));
            None
        };
        let post = hooks::find(runtime, &data_dir, &new_ref, Hook::Post).await?;
        Ok((pre, Some(post)))
    }
    .await;
    let (pre_hook, post_hook) = match found {
        Ok(found) => found,
        Err(e) => {
            let e = Error::Invalid(format!("{e}; nothing was changed"));
            return Err(abort(runtime, &store, name, &j, e).await);
        }
    };
    // The new image's own health check (HEALTHCHECK), which the gate runs when the settings
    // name none; read before anything changes.
    let image_health = match runtime.image_healthcheck(&new_ref).await {
        Ok(h) => h,
        Err(e) => return Err(abort(runtime, &store, name, &j, e.into()).await),
    };
    match &pre_hook {
        None => {}
        Some(Found::Hook(source)) => {
            if let Err(e) = hooks::run(runtime, name, Hook::Pre, source, request.hook_timeout, say).await {
                let e = Error::Invalid(format!("{e}; nothing was changed"));
                return Err(abort(runtime, &store, name, &j, e).await);
            }
        }
        Some(absent) => say(&absent.absence(Hook::Pre).unwrap_or_default()),
    }
    crash_point("upgrade:pre-hook");

    say(&format!("Stopping the old TPC-{name} container"));
    let held = match runtime.hold_container(name).await {
        Ok(h) => h,
        Err(e) => return Err(abort(runtime, &store, name, &j, e.into()).await),
    };
    j.held = Some(held.clone());
    j.step = UpgradeStep::Held;
    journal::write(&store, name, Entry::Upgrade(&j))?;
    crash_point("upgrade:held");
    // Through systemd first when it runs the unit, so it does not restart the old version.
    let stopped = match crate::systemd::stop_unit(name) {
        Ok(()) => runtime
            .stop_container(name, stop_grace(&old.spec.settings))
            .await
            .map_err(Error::from),
        Err(e) => Err(Error::Internal(e)),
    };
    if let Err(e) = stopped {
        return Err(roll_back(runtime, settings, &store, name, &j, e, say).await);
    }
    super::volumes::unmount_driver_volumes(settings, &store, name).await;
    crash_point("upgrade:old-stopped");
    j.step = UpgradeStep::Detaching;
    journal::write(&store, name, Entry::Upgrade(&j))?;
    if let Err(e) = runtime.detach_container(&held).await {
        return Err(roll_back(runtime, settings, &store, name, &j, e.into(), say).await);
    }
    crash_point("upgrade:detached");

    say(&format!("Starting the new TPC-{name} container"));
    // `finish_upgrade` keeps the old image in exactly these cases.
    let old_image_kept = new_image != old.image() && (!old.owns_image || j.keep_new_image);
    let new_record = TpcRecord {
        spec: TpcSpec {
            image: ImageRef {
                reference: new_image.clone(),
                digest: new_digest.clone(),
            },
            settings: wanted.container.clone(),
        },
        args: wanted.args.clone(),
        cpus: cpu_cap(&wanted.container, cpu_share),
        base_digest: None,
        running: true,
        owns_image: source.owned(),
        rollback_image: old_image_kept.then(|| old.image().to_string()),
        converted: false,
        plugin: old.plugin.clone(),
        image_health,
        ..old.clone()
    };
    j.new_record = Some(new_record.clone());
    j.step = UpgradeStep::NewCreated;
    journal::write(&store, name, Entry::Upgrade(&j))?;
    let started = async {
        super::container::create_missing_bind_sources(&store, &wanted.container, say)?;
        create_container(runtime, settings, &store, &new_record).await?;
        crash_point("upgrade:new-created");
        start_task(runtime, settings, &store, &new_record).await?;
        crash_point("upgrade:new-started");
        Ok::<(), Error>(())
    }
    .await;
    if let Err(e) = started {
        return Err(roll_back(runtime, settings, &store, name, &j, e, say).await);
    }
    match post_hook.map(|found| found.again(&data_dir, Hook::Post)) {
        None => {}
        Some(Found::Hook(source)) => {
            if let Err(e) = hooks::run(runtime, name, Hook::Post, &source, request.hook_timeout, say).await {
                return Err(roll_back(runtime, settings, &store, name, &j, Error::Invalid(e), say).await);
            }
        }
        Some(absent) => say(&absent.absence(Hook::Post).unwrap_or_default()),
    }
    let check = new_record.health();
    say(&format!(
        "Checking that the new TPC-{name} container stays up for {} s{}",
        request.grace.as_secs_f64(),
        match check {
            Some(_) if new_record.spec.settings.health.is_none() => " and passes its image's health check",
            Some(_) => " and passes its health check",
            None => "",
        }
    ));
    if let Err(e) = health_gate(runtime, name, request.grace, check.as_ref().map(|(c, t)| (c, *t))).await {
        return Err(roll_back(runtime, settings, &store, name, &j, Error::Invalid(e), say).await);
    }
    crash_point("upgrade:healthy");

    // The commit point: from here on, recovery finishes the upgrade instead of undoing it.
    store.put(&new_record)?;
    j.step = UpgradeStep::Committed;
    journal::write(&store, name, Entry::Upgrade(&j))?;
    crash_point("upgrade:committed");
    // The restart policy may have changed with the arguments.
    install_unit(settings, &store, name, &wanted.container)?;
    crate::systemd::unit_started(name).map_err(Error::Internal)?;
    say(&format!("Removing the old TPC-{name} version"));
    finish_upgrade(runtime, &store, name, &j).await?;
    super::status::operator_started(&store, name);
    super::events::emit(
        &store,
        name,
        "upgrade",
        &[("from", old.image().to_string()), ("image", new_image.clone())],
    );
    Ok(UpgradeOutcome::Upgraded {
        from: old.image().to_string(),
        to: new_image,
    })
}

/// The new container must keep running for `grace`, and its health check (if any) must pass
/// before `grace` ends a second time, or later by the check's start period: a slow starter is
/// given the time its check allows it, as docker counts no failure in the start period.
async fn health_gate<R: Runtime>(
    runtime: &R,
    name: &str,
    grace: Duration,
    check: Option<(&HealthCheck, HealthTiming)>,
) -> Result<(), String> {
    let up_until = Instant::now() + grace;
    loop {
        match runtime.container_state(name).await.map_err(|e| e.to_string())? {
            ContainerState::Running { .. } => {}
            ContainerState::Exited { code } => {
                return Err(format!("the new version exited with code {code}"));
            }
            other => return Err(format!("the new version is not running ({other:?})")),
        }
        if Instant::now() >= up_until {
            break;
        }
        tokio::time::sleep(HEALTH_POLL.min(up_until.saturating_duration_since(Instant::now()))).await;
    }
    let Some((check, timing)) = check else {
        return Ok(());
    };
    let timeout = Duration::from_millis(timing.timeout_ms);
    let deadline = Instant::now() + grace + Duration::from_millis(timing.start_period_ms);
    loop {
        let Err(last) = super::health::probe(runtime, name, check, timeout).await else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(format!("the new version failed its health check: {last}"));
        }
        if let ContainerState::Exited { code } =
            runtime.container_state(name).await.map_err(|e| e.to_string())?
        {
            return Err(format!("the new version exited with code {code}"));
        }
        tokio::time::sleep(HEALTH_POLL * 5).await;
    }
}

/// Ends an upgrade that changed nothing yet (the old container was never touched), returning
/// `cause` with whatever cleanup could not be done appended.
async fn abort<R: Runtime>(
    runtime: &R,
    store: &Store,
    name: &str,
    j: &UpgradeJournal,
    cause: Error,
) -> Error {
    match abort_upgrade(runtime, store, name, j).await {
        Ok(()) => cause,
        Err(e) => Error::Internal(format!("{cause} (and cleaning up failed: {e})")),
    }
}

/// Brings the old version back ([`roll_back_upgrade`]) and returns `cause`, saying the old
/// version runs again.
async fn roll_back<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    store: &Store,
    name: &str,
    j: &UpgradeJournal,
    cause: Error,
    say: &dyn Fn(&str),
) -> Error {
    say(&format!("Upgrade failed: {cause}; rolling back"));
    let rolled = roll_back_upgrade(runtime, settings, store, name, j).await;
    super::events::emit(
        store,
        name,
        "rollback",
        &[
            ("reason", cause.to_string()),
            ("restored", rolled.is_ok().to_string()),
        ],
    );
    match rolled {
        Ok(()) => Error::RolledBack(format!(
            "upgrade of TPC {name} failed: {cause}; rolled back, the old version is {}",
            if j.old.running {
                "running again"
            } else {
                "back (stopped, as before)"
            }
        )),
        Err(e) => Error::RollbackFailed(format!(
            "upgrade of TPC {name} failed: {cause}; ROLLBACK FAILED: {e}; run any tpcm command on {name} to retry it"
        )),
    }
}
