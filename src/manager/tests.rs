//! The manager's decisions against the recording fake runtime: upgrade, rollback (with a failure
//! injected at each step), recovery from a journal, the janitor, the restart supervisor, image
//! pins and removal. The same operations run against a real containerd in `tests/`.

use super::journal::{self, Entry, UpgradeJournal, UpgradeStep};
use super::testing::Bench;
use super::upgrade::UpgradeOutcome;
use super::{Error, janitor, recovery, supervise};
use crate::runtime::{ContainerState, Runtime};
use crate::tpc_spec::RestartPolicy;

const D1: &str = "sha256:d1";
const D2: &str = "sha256:d2";
const V1: &str = "docker.io/acme/app:1";
const V2: &str = "docker.io/acme/app:2";

fn running(b: &Bench, name: &str) -> bool {
    matches!(b.runtime.state_of(name), ContainerState::Running { .. })
}

fn pin_of(b: &Bench, name: &str) -> String {
    b.runtime.state.lock().unwrap().containers[name].pin.clone()
}

fn layer_of(b: &Bench, name: &str) -> String {
    b.runtime.state.lock().unwrap().containers[name].layer.clone()
}

#[tokio::test]
async fn install_records_the_spec_and_pins_the_manifest() {
    let b = Bench::new();
    let r = b.install("app", V1, D1, "-e A=1 --restart always").await;
    assert_eq!(r.spec.image.reference, V1);
    assert_eq!(r.spec.image.digest, D1);
    assert_eq!(r.spec.settings.env, ["A=1"]);
    assert_eq!(r.spec.settings.restart, RestartPolicy::Always);
    assert_eq!(pin_of(&b, "app"), D1);
    assert!(running(&b, "app"));
    let unit = std::fs::read_to_string(b.settings.systemd_dir.join("tpc-app.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/tpcm unit-run app"), "{unit}");
}

#[tokio::test]
async fn an_upgrade_replaces_the_container_and_lets_the_old_version_go() {
    let b = Bench::new();
    b.install("app", V1, D1, "").await;
    let outcome = b.upgrade("app", V2, D2).await.unwrap();
    assert!(matches!(outcome, UpgradeOutcome::Upgraded { .. }));
    let r = b.record("app");
    assert_eq!((r.image(), r.spec.image.digest.as_str()), (V2, D2));
    assert_eq!(pin_of(&b, "app"), D2);
    assert!(running(&b, "app"));
    let s = b.runtime.state.lock().unwrap();
    assert!(!s.images.contains_key(V1), "the old owned image goes");
    assert!(!s.content.contains(D1), "and its content with it");
    assert!(s.holds.is_empty(), "the old writable layer is discarded");
    assert!(s.images.keys().all(|n| !n.contains('@')), "no pin name stays");
    drop(s);
    assert!(journal::read(&b.store(), "app").unwrap().is_none());
}

/// Every runtime call an upgrade makes after the old container is held, failed in turn: the
/// old version comes back on its own layer, running, with its record, and nothing of the new
/// one stays.
#[tokio::test]
async fn a_failure_at_any_step_after_the_hold_brings_the_old_version_back() {
    for (method, nth) in [
        ("stop_container", 1),
        ("detach_container", 1),
        ("create_container", 1),
        ("start_container", 1),
    ] {
        let b = Bench::new();
        let old = b.install("app", V1, D1, "").await;
        let old_layer = layer_of(&b, "app");
        b.runtime.fail(method, nth);
        let err = b.upgrade("app", V2, D2).await.unwrap_err();
        assert!(matches!(err, Error::RolledBack(_)), "{method}: {err}");
        assert_eq!(b.record("app"), old, "{method}");
        assert_eq!(layer_of(&b, "app"), old_layer, "{method}: the old layer is back");
        assert_eq!(pin_of(&b, "app"), D1, "{method}");
        assert!(running(&b, "app"), "{method}: the old version runs again");
        let s = b.runtime.state.lock().unwrap();
        assert!(
            !s.images.contains_key(V2),
            "{method}: the new image is taken back"
        );
        assert_eq!(s.images.get(V1).map(String::as_str), Some(D1), "{method}");
        assert!(s.holds.is_empty(), "{method}: the hold is released");
        drop(s);
        assert!(journal::read(&b.store(), "app").unwrap().is_none(), "{method}");
    }
}

/// A rollback that fails too (the old container cannot be put back) says so, keeps its
/// journal, and the next command's recovery, once the runtime works again, finishes it: the old
/// version runs on its own layer. So does a recovery that fails at a step of its own.
#[tokio::test]
async fn a_failed_rollback_is_said_and_finished_by_the_next_recovery() {
    for method in ["restore_container", "delete_container"] {
        let b = Bench::new();
        let old = b.install("app", V1, D1, "").await;
        let old_layer = layer_of(&b, "app");
        // The new version does not start; then the rollback's own step fails.
        b.runtime.fail("start_container", 1);
        b.runtime.fail(method, 1);
        let err = b.upgrade("app", V2, D2).await.unwrap_err();
        assert!(matches!(err, Error::RollbackFailed(_)), "{method}: {err}");
        let store = b.store();
        assert!(
            journal::read(&store, "app").unwrap().is_some(),
            "{method}: the journal stays"
        );
        // The first recovery meets one more failure and keeps the journal; the next finishes.
        b.runtime.fail(method, 1);
        let _lock = store.lock("app").unwrap();
        let first = recovery::recover(&b.runtime, &b.settings, &store, "app", &|_| {}).await;
        assert!(first.is_err(), "{method}: the injected failure is reported");
        assert!(journal::read(&store, "app").unwrap().is_some(), "{method}");
        recovery::recover(&b.runtime, &b.settings, &store, "app", &|_| {})
            .await
            .unwrap();
        assert!(journal::read(&store, "app").unwrap().is_none(), "{method}");
        assert_eq!(b.record("app"), old, "{method}");
        assert_eq!(layer_of(&b, "app"), old_layer, "{method}: the old layer is back");
        assert!(running(&b, "app"), "{method}: the old version runs again");
        let s = b.runtime.state.lock().unwrap();
        assert!(s.holds.is_empty(), "{method}: the hold is released");
        assert!(
            !s.images.contains_key(V2),
            "{method}: the new image is taken back"
        );
    }
}

/// Failures before the old container is touched leave it running and change nothing.
#[tokio::test]
async fn a_failure_before_the_hold_changes_nothing() {
    for (method, nth) in [("import_image", 1), ("hold_container", 1)] {
        let b = Bench::new();
        let old = b.install("app", V1, D1, "").await;
        let layer = layer_of(&b, "app");
        b.runtime.fail(method, nth);
        let err = b.upgrade("app", V2, D2).await.unwrap_err();
        assert!(!matches!(err, Error::RolledBack(_)), "{method}: {err}");
        assert_eq!(b.record("app"), old, "{method}");
        assert_eq!(layer_of(&b, "app"), layer, "{method}");
        assert!(running(&b, "app"), "{method}");
        assert!(
            !b.runtime.state.lock().unwrap().images.contains_key(V2),
            "{method}"
        );
    }
}

#[tokio::test]
async fn a_new_version_that_fails_its_health_check_is_rolled_back() {
    let b = Bench::new();
    let old = b.install("app", V1, D1, "--health-cmd probe").await;
    b.runtime
        .state
        .lock()
        .unwrap()
        .exec_codes
        .insert("probe".into(), 1);
    let err = b.upgrade("app", V2, D2).await.unwrap_err().to_string();
    assert!(err.contains("failed its health check"), "{err}");
    assert_eq!(b.record("app"), old);
    assert!(running(&b, "app"));
}

#[tokio::test]
async fn an_upgrade_to_the_same_manifest_and_settings_does_nothing() {
    let b = Bench::new();
    b.install("app", V1, D1, "").await;
    let layer = layer_of(&b, "app");
    let outcome = b.upgrade("app", V1, D1).await.unwrap();
    assert_eq!(outcome, UpgradeOutcome::AlreadyCurrent { digest: D1.into() });
    assert_eq!(layer_of(&b, "app"), layer);
    assert_eq!(b.runtime.count("hold_container"), 0);
}

/// Two TPCs on one image upgraded at once share the pin the first made: it stays while either
/// needs it, and the one that ends last removes it.
#[tokio::test]
async fn overlapping_upgrades_share_a_pin_and_the_last_to_end_removes_it() {
    let b = Bench::new();
    let a_old = b.install("a", V1, D1, "").await;
    b.install("b", V1, D1, "").await;
    let store = b.store();
    let pin = journal::pin_name(V1, D1);
    // a's upgrade is in flight: it made the pin and imported its new image.
    b.runtime.add_image(&pin, D1);
    let a = UpgradeJournal {
        old: a_old,
        pin: Some(pin.clone()),
        tag_before: Some(D1.into()),
        new_image: None,
        held: None,
        new_record: None,
        step: UpgradeStep::Imported,
        keep_new_image: false,
    };
    journal::write(&store, "a", Entry::Upgrade(&a)).unwrap();
    assert!(journal::pin_made_by_another(&store, &pin, "b").unwrap());
    assert!(!journal::pin_made_by_another(&store, &pin, "a").unwrap());
    // b's upgrade shares the pin, and is interrupted after its commit (its cleanup fails), so
    // its journal stays open.
    b.runtime.fail("discard_detached", 1);
    assert!(b.upgrade("b", V2, D2).await.is_err());
    let recover = |name: &'static str| {
        let (b, store) = (&b, &store);
        async move {
            let _lock = store.lock(name).unwrap();
            recovery::recover(&b.runtime, &b.settings, store, name, &|_| {})
                .await
                .unwrap();
        }
    };
    // a ends first (taken back by its recovery): b still needs the pin.
    recover("a").await;
    assert!(b.runtime.state.lock().unwrap().images.contains_key(&pin));
    // b ends last (its recovery finishes it) and removes the pin it shared.
    recover("b").await;
    assert!(journal::pending(&store).is_empty());
    assert!(
        !b.runtime.state.lock().unwrap().images.contains_key(&pin),
        "the shared pin was left behind"
    );
    assert!(running(&b, "a") && running(&b, "b"));
}

/// An upgrade interrupted while the old container was detached (its journal says so) is rolled
/// back by the next command's recovery; one interrupted after its commit is finished.
#[tokio::test]
async fn recovery_rolls_back_before_the_commit_and_finishes_after_it() {
    for committed in [false, true] {
        let b = Bench::new();
        let old = b.install("app", V1, D1, "").await;
        let store = b.store();
        // What an upgrade had done when it died: held and detached the old container, imported
        // and started the new one.
        let held = b.runtime.hold_container("app").await.unwrap();
        b.runtime.detach_container(&held).await.unwrap();
        b.runtime.add_image(V2, D2);
        let mut new_record = old.clone();
        new_record.spec.image.reference = V2.into();
        new_record.spec.image.digest = D2.into();
        let config = super::container::container_config(&b.settings, &store, &new_record);
        b.runtime
            .create_container(&config, Default::default())
            .await
            .unwrap();
        b.runtime
            .start_container("app", &store.log_target("app"))
            .await
            .unwrap();
        let j = UpgradeJournal {
            old: old.clone(),
            pin: None,
            tag_before: Some(D1.into()),
            new_image: Some((V2.into(), D2.into())),
            held: Some(held),
            new_record: Some(new_record.clone()),
            step: if committed {
                UpgradeStep::Committed
            } else {
                UpgradeStep::NewCreated
            },
            keep_new_image: false,
        };
        if committed {
            store.put(&new_record).unwrap();
        }
        journal::write(&store, "app", Entry::Upgrade(&j)).unwrap();

        let _lock = store.lock("app").unwrap();
        recovery::recover(&b.runtime, &b.settings, &store, "app", &|_| {})
            .await
            .unwrap();
        assert!(journal::read(&store, "app").unwrap().is_none());
        assert!(running(&b, "app"));
        let s = b.runtime.state.lock().unwrap();
        assert!(s.holds.is_empty());
        if committed {
            assert_eq!(s.containers["app"].pin, D2);
            assert!(
                !s.images.contains_key(V1),
                "the old owned image goes after the commit"
            );
        } else {
            assert_eq!(s.containers["app"].pin, D1, "the old container is back");
            assert!(!s.images.contains_key(V2), "the new image is taken back");
        }
        drop(s);
        assert_eq!(b.record("app"), if committed { new_record } else { old });
    }
}

/// A record converted from the older format belongs to a container that pins nothing: recovery
/// pins it (finding the digest by name if the record has none) and clears the mark.
#[tokio::test]
async fn recovery_pins_the_image_of_a_converted_record() {
    let b = Bench::new();
    b.install("app", V1, D1, "").await;
    let store = b.store();
    let mut r = b.record("app");
    r.converted = true;
    r.spec.image.digest.clear();
    store.put(&r).unwrap();
    b.runtime
        .state
        .lock()
        .unwrap()
        .containers
        .get_mut("app")
        .unwrap()
        .pin = String::new();
    let _lock = store.lock("app").unwrap();
    recovery::recover(&b.runtime, &b.settings, &store, "app", &|_| {})
        .await
        .unwrap();
    assert_eq!(pin_of(&b, "app"), D1);
    let r = b.record("app");
    assert!(!r.converted);
    assert_eq!(r.spec.image.digest, D1);
}

#[tokio::test]
async fn a_moved_tag_leaves_running_tpcs_on_their_pinned_manifest() {
    let b = Bench::new();
    b.install("a1", V1, D1, "").await;
    b.install("a2", V1, D1, "").await;
    // A rebuilt archive carrying the same tag, imported on its own.
    let source = b.archive(V1, D2);
    let store = b.store();
    type Notices = std::sync::Arc<std::sync::Mutex<Vec<String>>>;
    struct Collect(Notices);
    impl super::Progress for Collect {
        fn start(&self, _: &str, _: Option<u64>) {}
        fn advance(&self, _: u64) {}
        fn finish(&self) {}
        fn notice(&self, m: &str) {
            self.0.lock().unwrap().push(m.to_string());
        }
    }
    let notices = Notices::default();
    let imported = super::import_image(
        &b.runtime,
        &store,
        &source,
        None,
        std::sync::Arc::new(Collect(notices.clone())),
    )
    .await
    .unwrap();
    assert_eq!(imported[0].digest, D2);
    let notices = notices.lock().unwrap().clone();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("a1, a2"), "{notices:?}");
    let s = b.runtime.state.lock().unwrap();
    assert!(s.content.contains(D1), "the containers keep the old manifest");
    assert_eq!(s.images[V1], D2);
}

#[tokio::test]
async fn removing_an_image_a_tpc_runs_is_refused_unless_forced() {
    let b = Bench::new();
    b.install("app", V1, D1, "").await;
    let store = b.store();
    let err = super::remove_image(&b.runtime, &store, "acme/app:1", false)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InUse(_)), "{err}");
    assert!(err.to_string().contains("app"), "{err}");
    let (name, users) = super::remove_image(&b.runtime, &store, "acme/app:1", true)
        .await
        .unwrap();
    assert_eq!((name.as_str(), users), (V1, vec!["app".to_string()]));
    assert!(b.runtime.state.lock().unwrap().content.contains(D1));
    assert!(running(&b, "app"));
}

#[tokio::test]
async fn install_and_upgrade_record_the_images_own_health_check() {
    use crate::tpc_spec::image_health::ImageHealthcheck;
    use crate::tpc_spec::{HealthCheck, HealthTiming};
    let b = Bench::new();
    let declared = |cmd: &str| ImageHealthcheck {
        check: Some(HealthCheck::Cmd(cmd.into())),
        timing: HealthTiming::default(),
    };
    {
        let mut s = b.runtime.state.lock().unwrap();
        s.image_healthchecks.insert(D1.into(), declared("check-1"));
        s.image_healthchecks.insert(D2.into(), declared("check-2"));
    }
    b.install("app", V1, D1, "").await;
    b.install("quiet", V1, D1, "--no-healthcheck").await;
    let check = |name: &str| b.record(name).health().map(|(c, _)| c);
    assert_eq!(check("app"), Some(HealthCheck::Cmd("check-1".into())));
    assert_eq!(b.record("quiet").image_health, Some(declared("check-1")));
    assert_eq!(
        check("quiet"),
        None,
        "--no-healthcheck keeps the image's from running"
    );
    // The new image's check comes with an upgrade (whose gate runs it: the fake's exec passes).
    b.upgrade("app", V2, D2).await.unwrap();
    assert_eq!(check("app"), Some(HealthCheck::Cmd("check-2".into())));
}

#[tokio::test]
async fn an_image_an_unfinished_operation_needs_is_refused_even_forced() {
    let b = Bench::new();
    b.install("app", V1, D1, "").await;
    b.runtime
        .state
        .lock()
        .unwrap()
        .images
        .insert(V2.into(), D2.into());
    let store = b.store();
    let interrupted = super::journal::InstallJournal {
        image: Some(V2.into()),
        creates_data_dir: false,
    };
    journal::write(&store, "x", Entry::Install(&interrupted)).unwrap();
    for force in [false, true] {
        let err = super::remove_image(&b.runtime, &store, "acme/app:2", force)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InUse(_)), "{err}");
        assert!(err.to_string().contains("install or upgrade of x"), "{err}");
    }
    assert!(b.runtime.state.lock().unwrap().images.contains_key(V2));
    journal::remove(&store, "x").unwrap();
    super::remove_image(&b.runtime, &store, "acme/app:2", false)
        .await
        .unwrap();
    assert!(!b.runtime.state.lock().unwrap().images.contains_key(V2));
}

#[tokio::test]
async fn another_tpcs_uninstall_leaves_an_image_an_unfinished_operation_needs() {
    let b = Bench::new();
    b.install("c", V1, D1, "").await;
    assert!(b.record("c").owns_image);
    // An install of "a" imported the same image and was interrupted before its record.
    let store = b.store();
    let interrupted = super::journal::InstallJournal {
        image: Some(V1.into()),
        creates_data_dir: false,
    };
    journal::write(&store, "a", Entry::Install(&interrupted)).unwrap();
    super::tpc::uninstall(&b.runtime, &b.settings, "c", false, &|_| {})
        .await
        .unwrap();
    assert!(
        b.runtime.state.lock().unwrap().images.contains_key(V1),
        "the uninstall took the image the interrupted install needs"
    );
    // Taking that install back (its own journal still open meanwhile) removes the image.
    {
        let _lock = store.lock("a").unwrap();
        recovery::recover(&b.runtime, &b.settings, &store, "a", &|_| {})
            .await
            .unwrap();
    }
    assert!(journal::read(&store, "a").unwrap().is_none());
    assert!(!b.runtime.state.lock().unwrap().images.contains_key(V1));
}

#[tokio::test]
async fn migrate_save_names_the_tpc_whose_content_is_gone() {
    let b = Bench::new();
    b.install("app", V1, D1, "").await;
    b.runtime.state.lock().unwrap().content.remove(D1);
    let err = super::migrate::save(&b.runtime, &b.settings, &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("TPC app") && err.contains(D1) && err.contains("tpcm upgrade app"),
        "{err}"
    );
}

/// A container named `stray` on `image` that no TPC owns.
async fn stray_container(b: &Bench, image: &str, digest: &str) {
    let config = crate::runtime::spec::ContainerConfig {
        id: "stray".into(),
        image: crate::tpc_spec::ImageRef {
            reference: image.into(),
            digest: digest.into(),
        },
        ..Default::default()
    };
    b.runtime
        .create_container(&config, Default::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_janitor_removes_strays_and_unused_images_only() {
    let b = Bench::new();
    b.install("app", V1, D1, "").await;
    b.runtime.add_image("docker.io/acme/unused:1", "sha256:u");
    b.runtime.add_image("docker.io/acme/stray:1", "sha256:s");
    stray_container(&b, "docker.io/acme/stray:1", "sha256:s").await;
    let mut suspects = janitor::Suspects::new(false);
    let first = janitor::sweep(&b.runtime, &b.settings, &mut suspects)
        .await
        .unwrap();
    assert_eq!(first.containers, ["stray"]);
    assert!(
        first.images.is_empty(),
        "an image is removed on its second unused sweep"
    );
    let second = janitor::sweep(&b.runtime, &b.settings, &mut suspects)
        .await
        .unwrap();
    let mut images = second.images.clone();
    images.sort();
    assert_eq!(images, ["docker.io/acme/stray:1", "docker.io/acme/unused:1"]);
    assert!(running(&b, "app"));
    assert!(b.runtime.state.lock().unwrap().images.contains_key(V1));
}

#[tokio::test]
async fn a_janitor_step_that_fails_ends_the_sweep_and_the_next_sweep_finishes_it() {
    let b = Bench::new();
    b.install("app", V1, D1, "").await;
    b.runtime.add_image("docker.io/acme/unused:1", "sha256:u");
    b.runtime.add_image("docker.io/acme/other:1", "sha256:o");
    stray_container(&b, "docker.io/acme/unused:1", "sha256:u").await;
    let b = &b;
    let sweep =
        || async move { janitor::sweep(&b.runtime, &b.settings, &mut janitor::Suspects::new(true)).await };
    // The stray container cannot be deleted: the sweep says so and removes no image (the
    // container still uses one), nor anything of the TPC's.
    b.runtime.fail("delete_container", 1);
    assert!(sweep().await.is_err());
    {
        let s = b.runtime.state.lock().unwrap();
        assert!(s.containers.contains_key("stray"));
        assert!(
            s.images.contains_key("docker.io/acme/unused:1")
                && s.images.contains_key("docker.io/acme/other:1")
        );
    }
    // An image that cannot be removed: the sweep says so, after the container went.
    b.runtime.fail("remove_image", 1);
    assert!(sweep().await.is_err());
    assert!(!b.runtime.state.lock().unwrap().containers.contains_key("stray"));
    // Nothing failing: the rest goes, and the TPC keeps what it uses.
    let done = sweep().await.unwrap();
    assert!(done.containers.is_empty(), "{:?}", done.containers);
    let images = b.runtime.state.lock().unwrap().images.clone();
    assert!(
        !images.contains_key("docker.io/acme/unused:1") && !images.contains_key("docker.io/acme/other:1")
    );
    assert!(images.contains_key(V1));
    assert!(running(b, "app"));
}

#[tokio::test]
async fn the_janitor_releases_the_network_of_a_vanished_container_only() {
    let b = Bench::new();
    b.install("app", V1, D1, "").await;
    b.install("gone", V1, D1, "").await;
    b.install("busy", V1, D1, "").await;
    {
        // Deleted behind tpcm's back: the containers vanish, their networks stay.
        let mut s = b.runtime.state.lock().unwrap();
        for id in ["gone", "busy"] {
            s.containers.remove(id);
            s.tasks.remove(id);
        }
    }
    // An operation on "busy" holds its lock: its network waits for the next sweep.
    let lock = b.store().lock("busy").unwrap();
    let sweep = janitor::sweep(&b.runtime, &b.settings, &mut janitor::Suspects::new(false))
        .await
        .unwrap();
    assert_eq!(sweep.networks, ["gone"]);
    let networks = b.runtime.state.lock().unwrap().networks.clone();
    assert!(networks.contains("app") && networks.contains("busy") && !networks.contains("gone"));
    drop(lock);
    let sweep = janitor::sweep(&b.runtime, &b.settings, &mut janitor::Suspects::new(false))
        .await
        .unwrap();
    assert_eq!(sweep.networks, ["busy"]);
    assert!(running(&b, "app"));

    // A network that cannot be released is left for the next sweep, which still removes the
    // stray images.
    b.runtime.state.lock().unwrap().containers.remove("app");
    b.runtime.add_image("docker.io/acme/unused:1", "sha256:u");
    b.runtime.fail("release_network", 1);
    let sweep = janitor::sweep(&b.runtime, &b.settings, &mut janitor::Suspects::new(true))
        .await
        .unwrap();
    assert!(sweep.networks.is_empty());
    assert_eq!(sweep.images, ["docker.io/acme/unused:1"]);
    let sweep = janitor::sweep(&b.runtime, &b.settings, &mut janitor::Suspects::new(true))
        .await
        .unwrap();
    assert_eq!(sweep.networks, ["app"]);
}

/// A recovery run inside a command (an install of the name of a crashed one) must leave the
/// lock file the command holds: removing it would let another process lock a new file and act
/// on the TPC at the same time. Recovery at boot, holding nothing else, removes it.
#[tokio::test]
async fn recovery_inside_a_command_keeps_its_lock_file_and_boot_recovery_removes_it() {
    let b = Bench::new();
    let store = b.store();
    let lock_file = store.root().join("locks/x.lock");
    let crashed = super::journal::InstallJournal {
        image: None,
        creates_data_dir: false,
    };
    journal::write(&store, "x", Entry::Install(&crashed)).unwrap();
    {
        let _lock = store.lock("x").unwrap();
        recovery::recover(&b.runtime, &b.settings, &store, "x", &|_| {})
            .await
            .unwrap();
        assert!(journal::read(&store, "x").unwrap().is_none());
        assert!(
            lock_file.exists(),
            "recovery removed the lock file its caller holds"
        );
    }
    journal::write(&store, "x", Entry::Install(&crashed)).unwrap();
    let failures = recovery::recover_all(&b.runtime, &b.settings, &|_| {}).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(!lock_file.exists(), "nothing of x is left, its lock file neither");
}

#[tokio::test]
async fn the_janitor_does_nothing_while_an_operation_is_in_flight() {
    let b = Bench::new();
    b.runtime.add_image("docker.io/acme/unused:1", "sha256:u");
    let j = super::journal::InstallJournal {
        image: None,
        creates_data_dir: false,
    };
    journal::write(&b.store(), "x", Entry::Install(&j)).unwrap();
    let sweep = janitor::sweep(&b.runtime, &b.settings, &mut janitor::Suspects::new(true))
        .await
        .unwrap();
    assert!(sweep.skipped.is_some());
    assert!(
        b.runtime
            .state
            .lock()
            .unwrap()
            .images
            .contains_key("docker.io/acme/unused:1")
    );
}

#[tokio::test]
async fn the_supervisor_restarts_by_policy() {
    let cases: [(&str, u32, bool); 5] = [
        ("", 1, false),
        ("--restart always", 0, true),
        ("--restart unless-stopped", 3, true),
        ("--restart on-failure", 0, false),
        ("--restart on-failure", 2, true),
    ];
    for (args, code, restarted) in cases {
        let b = Bench::new();
        b.install("app", V1, D1, args).await;
        b.runtime.exit("app", code);
        let s = supervise::Supervisor::default();
        let did = s.on_exit(&b.runtime, &b.settings, "app", code).await.unwrap();
        assert_eq!(did, restarted, "{args:?} exit {code}");
        assert_eq!(running(&b, "app"), restarted, "{args:?} exit {code}");
    }
}

/// A restart the runtime refuses is an error for that exit and changes nothing else; the next
/// exit is restarted as the policy says.
#[tokio::test]
async fn a_restart_that_fails_is_reported_and_the_next_exit_restarts() {
    let b = Bench::new();
    b.install("app", V1, D1, "--restart always").await;
    let s = supervise::Supervisor::default();
    b.runtime.exit("app", 1);
    b.runtime.fail("start_container", 1);
    assert!(s.on_exit(&b.runtime, &b.settings, "app", 1).await.is_err());
    assert!(!running(&b, "app"));
    assert!(b.record("app").running, "the operator's wish is kept");
    assert!(s.on_exit(&b.runtime, &b.settings, "app", 1).await.unwrap());
    assert!(running(&b, "app"));
}

#[tokio::test]
async fn the_supervisor_stops_at_the_retry_limit_and_leaves_a_stopped_tpc_alone() {
    let b = Bench::new();
    b.install("app", V1, D1, "--restart on-failure:1").await;
    let s = supervise::Supervisor::default();
    b.runtime.exit("app", 1);
    assert!(s.on_exit(&b.runtime, &b.settings, "app", 1).await.unwrap());
    b.runtime.exit("app", 1);
    assert!(!s.on_exit(&b.runtime, &b.settings, "app", 1).await.unwrap());

    let b = Bench::new();
    b.install("app", V1, D1, "--restart always").await;
    super::tpc::stop(&b.runtime, &b.settings, "app").await.unwrap();
    assert!(!s.on_exit(&b.runtime, &b.settings, "app", 0).await.unwrap());
    assert!(!running(&b, "app"));
}
