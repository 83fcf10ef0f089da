//! gNOI containerz plugins on a real containerd, through mutual TLS: a real volume plugin
//! (`support/volume_plugin.c`, compiled here, speaking docker's plugin protocol on its socket)
//! deployed as a tarball, started with a config merged by docker's settable rules, serving a
//! DS_CUSTOM volume that a container writes through (the file lands in the mount the plugin
//! made, on the host through the propagated mount), across `tpcm boot` after a simulated
//! reboot and a migration to a new containerd, untouched by the janitor; StopPlugin,
//! RemovePlugin and RemovePluginTar with their refusals; and bad input that leaves nothing.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;
#[path = "support/gnoi.rs"]
mod gnoi;
#[path = "support/plugin_kit.rs"]
mod plugin_kit;

use common::{Containerd, assert_ok, tpcm};
use gnoi::{ContainerzClient, Server, deploy, deploy_plugin, proto};
use plugin_kit::{Layout, on_tmpfs, sha256, tarball};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(60);

/// The test plugin's own config (docker's spelling, keys in mixed case as real ones are):
/// `MARK` is settable, `VOLUME_ROOT` is not.
const TVOL_CONFIG: &str = r#"{
  "Description": "tpcm's test volume plugin",
  "Entrypoint": ["/tvol"],
  "Env": [
    {"Name": "MARK", "Value": "from-tarball", "Settable": ["value"]},
    {"Name": "VOLUME_ROOT", "Value": "/mnt/volumes"}
  ],
  "Interface": {"Socket": "tvol.sock", "Types": ["docker.volumedriver/1.0"]},
  "Linux": {"Capabilities": ["CAP_SYS_ADMIN"]},
  "Network": {"Type": "none"},
  "PropagatedMount": "/mnt/volumes"
}"#;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn tvol_tarball(dir: &Path) -> PathBuf {
    tarball(
        &dir.join("tvol.tar"),
        Layout::Docker,
        "tvol",
        "tvol.sock",
        Some(TVOL_CONFIG),
        &[],
    )
}

/// A busybox app image, `app:1`.
fn app_archive(dir: &Path) -> PathBuf {
    let path = dir.join("app.tar");
    builder::write_archive(
        &builder::busybox_image(&["app:1"]),
        builder::ArchiveFormat::DockerV12,
        false,
        &path,
    )
    .unwrap();
    path
}

async fn plugins(c: &mut ContainerzClient<Channel>, name: &str) -> Vec<proto::Plugin> {
    c.list_plugins(proto::ListPluginsRequest {
        instance_name: name.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .plugins
}

async fn volume_names(c: &mut ContainerzClient<Channel>) -> Vec<(String, String)> {
    let mut s = c
        .list_volume(proto::ListVolumeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(v) = s.message().await.unwrap() {
        out.push((v.name, v.driver));
    }
    out
}

fn custom_volume(name: &str, options: &[(&str, &str)]) -> proto::CreateVolumeRequest {
    proto::CreateVolumeRequest {
        name: name.into(),
        driver: proto::Driver::DsCustom as i32,
        labels: Default::default(),
        options: Some(proto::create_volume_request::Options::CustomOptions(
            proto::CustomOptions {
                options: options
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        )),
    }
}

/// The writer: puts a file into the custom volume at /data and stays.
fn writer_request() -> proto::StartContainerRequest {
    proto::StartContainerRequest {
        image_name: "app".into(),
        tag: "1".into(),
        cmd: "sh -c 'echo from-writer > /data/out; trap \"exit 0\" TERM; sleep 1000 & wait'".into(),
        instance_name: "writer".into(),
        volumes: vec![proto::Volume {
            name: "vol1".into(),
            mount_point: "/data".into(),
            read_only: false,
        }],
        ..Default::default()
    }
}

/// The users the test plugin counts for a volume (Mounts less Unmounts).
fn users(volume_dir: &Path) -> i32 {
    std::fs::read_to_string(volume_dir.join("mounts"))
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or(0)
}

fn running(cd: &Containerd, name: &str) -> bool {
    cd.tasks().iter().any(|(id, _, s)| id == name && s == "RUNNING")
}

fn task_pid(cd: &Containerd, name: &str) -> u32 {
    cd.tasks()
        .into_iter()
        .find(|(id, _, _)| id == name)
        .map(|(_, pid, _)| pid)
        .unwrap_or_else(|| panic!("no task {name}"))
}

/// The propagated directory of plugin `instance` on the host.
fn propagated(cd: &Containerd, instance: &str) -> PathBuf {
    cd.store_dir()
        .join("plugins/instances")
        .join(instance)
        .join("propagated")
}

/// What a reboot does: every process dies, no task is left, and the host forgets its mounts
/// (the plugin's propagated one and what the plugin mounted in it) and /run.
fn reboot(cd: &Containerd, instance: &str) {
    for (id, _, _) in cd.tasks() {
        let _ = cd.ctr(&["tasks", "kill", "--signal", "SIGKILL", &id]);
        common::wait_until(WAIT, &format!("{id} to die"), || !running(cd, &id));
        cd.ctr_ok(&["tasks", "delete", &id]);
    }
    let dir = propagated(cd, instance);
    while std::process::Command::new("umount")
        .arg("-l")
        .arg(&dir)
        .output()
        .unwrap()
        .status
        .success()
    {}
    std::fs::remove_dir_all(cd.plugin_sockets()).unwrap();
}

#[test]
fn a_volume_plugin_serves_a_container_across_a_reboot_and_goes_cleanly() {
    let cd = Containerd::start();
    let mut server = Server::start(&cd, &["--janitor-interval", "1"]);
    let tar = tvol_tarball(cd.dir());
    let volume_dir = propagated(&cd, "tvol").join("vol1");
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        let stored = deploy_plugin(&mut c, &tar, "tvol").await.unwrap();
        assert_eq!(
            (stored.name.as_str(), stored.image_size),
            ("tvol", std::fs::metadata(&tar).unwrap().len())
        );

        // The tarball's config sets what it may: a value not marked settable is refused, and
        // nothing of the plugin is left.
        let e = c
            .start_plugin(proto::StartPluginRequest {
                name: "tvol".into(),
                instance_name: "tvol".into(),
                config: r#"{"env":[{"name":"VOLUME_ROOT","value":"/elsewhere"}]}"#.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("VOLUME_ROOT"), "{}", e.message());
        assert!(plugins(&mut c, "").await.is_empty());
        assert!(cd.containers().is_empty(), "{:?}", cd.containers());

        let started = c
            .start_plugin(proto::StartPluginRequest {
                name: "tvol".into(),
                instance_name: "tvol".into(),
                config: r#"{"Env":[{"Name":"MARK","Value":"from-request"}]}"#.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(started.instance_name, "tvol");
        let listed = plugins(&mut c, "tvol:latest").await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        let p = &listed[0];
        assert_eq!(p.instance_name, "tvol:latest");
        assert!(
            p.id.len() == 64 && p.id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{}",
            p.id
        );
        let hash = p.hash.as_ref().expect("a hash");
        assert_eq!(hash.hash, sha256(&tar));
        let config: serde_json::Value = serde_json::from_str(&p.config).unwrap();
        assert_eq!(config["env"][0]["value"], "from-request", "{config}");
        // The plugin runs with the merged environment, its socket where docker puts it.
        let environ = std::fs::read(format!("/proc/{}/environ", task_pid(&cd, "tvol"))).unwrap();
        assert!(
            environ.split(|b| *b == 0).any(|v| v == b"MARK=from-request"),
            "{}",
            String::from_utf8_lossy(&environ)
        );
        assert!(cd.plugin_sockets().join(&p.id).join("tvol.sock").exists());
        // It is a plugin, not a container instance.
        assert!(gnoi::containers(&mut c).await.iter().all(|x| x.name != "tvol"));
        let e = c
            .stop_container(proto::StopContainerRequest {
                instance_name: "tvol".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

        // A DS_CUSTOM volume: the options (less `driver`) reach the driver's Create.
        let made = c
            .create_volume(custom_volume("vol1", &[("driver", "tvol"), ("size", "1m")]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(made.name, "vol1");
        let create = std::fs::read_to_string(volume_dir.join("create.json")).unwrap();
        assert!(create.contains(r#""size":"1m""#), "{create}");
        assert!(!create.contains("driver"), "{create}");
        assert_eq!(
            volume_names(&mut c).await,
            [("vol1".to_string(), "tvol:latest".to_string())]
        );
        // The driver's refusal, an unknown driver and a plugin that serves no volumes.
        let e = c
            .create_volume(custom_volume("vol2", &[("driver", "tvol"), ("refuse", "yes")]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("refused as asked"), "{}", e.message());
        let e = c
            .create_volume(custom_volume("vol3", &[("driver", "nosuch")]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert_eq!(volume_names(&mut c).await.len(), 1);
        assert!(!propagated(&cd, "tvol").join("vol2").exists());

        // A container writes through the volume: the file is in the tmpfs the plugin mounted,
        // which reached the host through the propagated mount.
        deploy(&mut c, &app_archive(cd.dir()), "app", "1", None)
            .await
            .unwrap();
        c.start_container(writer_request()).await.unwrap();
    });
    let out = volume_dir.join("data/out");
    common::wait_until(WAIT, "the writer's file in the plugin's mount", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t == "from-writer\n")
    });
    assert!(
        on_tmpfs(&volume_dir.join("data")),
        "the driver's mount did not reach the host"
    );

    // The janitor removes a stray container and leaves the plugin and its image alone.
    let made = cd.ctr(&["containers", "create", "docker.io/library/app:1", "stray"]);
    assert!(made.status.success(), "{}", common::describe(&made));
    common::wait_until(WAIT, "the janitor to remove the stray container", || {
        !cd.containers().contains(&"stray".to_string())
    });
    assert!(cd.containers().contains(&"tvol".to_string()));
    assert!(
        cd.images().iter().any(|i| i.contains("plugin/tvol")),
        "{:?}",
        cd.images()
    );

    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        // In use: the plugin can be neither stopped nor removed.
        let e = c
            .stop_plugin(proto::StopPluginRequest {
                instance_name: "tvol:latest".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("writer"), "{}", e.message());
        let e = c
            .remove_plugin(proto::RemovePluginRequest {
                instance_name: "tvol".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("vol1"), "{}", e.message());
    });
    // The CLI keeps the same rules, and does not upgrade a plugin as a TPC.
    let err = common::assert_fails(&tpcm(&cd, &["stop", "tvol"]));
    assert!(err.contains("writer"), "{err}");
    let err = common::assert_fails(&tpcm(&cd, &["uninstall", "tvol", "-y"]));
    assert!(err.contains("vol1"), "{err}");
    let err = common::assert_fails(&tpcm(
        &cd,
        &["upgrade", "tvol", app_archive(cd.dir()).to_str().unwrap(), "-y"],
    ));
    assert!(err.contains("gNOI plugin"), "{err}");
    assert!(running(&cd, "tvol"));

    // After a reboot (the server dies with everything else), `tpcm boot` brings the plugin
    // back first, then the writer with its volume mounted again by the driver.
    server.kill();
    reboot(&cd, "tvol");
    assert!(!on_tmpfs(&volume_dir.join("data")));
    let booted = assert_ok(&tpcm(&cd, &["boot"]));
    assert!(booted.contains("tvol") && booted.contains("writer"), "{booted}");
    common::wait_until(WAIT, "the writer's file after the reboot", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t == "from-writer\n")
    });
    assert!(on_tmpfs(&volume_dir.join("data")));
    let server = Server::start(&cd, &[]);

    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        assert_eq!(users(&volume_dir), 1, "one Mount after the boot");
        // A second user, and an update of the first: every Mount has its Unmount, so the
        // driver's count follows the containers that use the volume.
        c.start_container(proto::StartContainerRequest {
            image_name: "app".into(),
            tag: "1".into(),
            cmd: "sh -c 'trap \"exit 0\" TERM; sleep 1000 & wait'".into(),
            instance_name: "reader".into(),
            volumes: vec![proto::Volume {
                name: "vol1".into(),
                mount_point: "/data".into(),
                read_only: true,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(users(&volume_dir), 2);
        let mut params = writer_request();
        params.environment.insert("MODE".into(), "updated".into());
        c.update_container(proto::UpdateContainerRequest {
            instance_name: "writer".into(),
            image_name: "app".into(),
            image_tag: "1".into(),
            params: Some(params),
            r#async: false,
        })
        .await
        .unwrap();
        assert_eq!(users(&volume_dir), 2, "the update unmounted and mounted once");
        // Unmount after a task stops; the tmpfs goes with its last user.
        let stop = |name: &str| proto::StopContainerRequest {
            instance_name: name.into(),
            ..Default::default()
        };
        c.stop_container(stop("writer")).await.unwrap();
        assert_eq!(users(&volume_dir), 1);
        assert!(on_tmpfs(&volume_dir.join("data")), "unmounted under the reader");
        c.stop_container(stop("reader")).await.unwrap();
        assert_eq!(users(&volume_dir), 0);
        assert!(!on_tmpfs(&volume_dir.join("data")));
        for name in ["writer", "reader"] {
            c.remove_container(proto::RemoveContainerRequest {
                name: name.into(),
                force: false,
            })
            .await
            .unwrap();
        }
        // A stopped plugin cannot remove its volume: said at once, and the volume stays.
        c.stop_plugin(proto::StopPluginRequest {
            instance_name: "tvol".into(),
        })
        .await
        .unwrap();
        let e = c
            .remove_volume(proto::RemoveVolumeRequest {
                name: "vol1".into(),
                force: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("stopped"), "{}", e.message());
        assert_eq!(volume_names(&mut c).await.len(), 1);
        assert_ok(&tpcm(&cd, &["start", "tvol"]));
        // RemoveVolume goes through the driver's Remove.
        c.remove_volume(proto::RemoveVolumeRequest {
            name: "vol1".into(),
            force: false,
        })
        .await
        .unwrap();
        assert!(!volume_dir.exists());
        assert!(volume_names(&mut c).await.is_empty());

        // Stopped, it is still listed (docker lists disabled plugins); removed, it is gone
        // with its container, image and socket directory.
        let id = plugins(&mut c, "tvol").await[0].id.clone();
        c.stop_plugin(proto::StopPluginRequest {
            instance_name: "tvol:latest".into(),
        })
        .await
        .unwrap();
        assert!(!running(&cd, "tvol"));
        assert_eq!(plugins(&mut c, "").await.len(), 1);
        c.remove_plugin(proto::RemovePluginRequest {
            instance_name: "tvol:latest".into(),
        })
        .await
        .unwrap();
        assert!(plugins(&mut c, "").await.is_empty());
        assert!(!cd.containers().contains(&"tvol".to_string()));
        assert!(
            !cd.images().iter().any(|i| i.contains("plugin/tvol")),
            "{:?}",
            cd.images()
        );
        assert!(!cd.plugin_sockets().join(&id).exists());
        assert!(!cd.store_dir().join("plugins/instances/tvol").exists());
        // Both are no-ops now (the proto).
        c.stop_plugin(proto::StopPluginRequest {
            instance_name: "tvol".into(),
        })
        .await
        .unwrap();
        c.remove_plugin(proto::RemovePluginRequest {
            instance_name: "tvol".into(),
        })
        .await
        .unwrap();

        // The tarball stays until RemovePluginTar; then it is NOT_FOUND.
        c.remove_plugin_tar(proto::RemovePluginTarRequest { name: "tvol".into() })
            .await
            .unwrap();
        let e = c
            .remove_plugin_tar(proto::RemovePluginTarRequest { name: "tvol".into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let e = c
            .start_plugin(proto::StartPluginRequest {
                name: "tvol".into(),
                instance_name: "again".into(),
                config: "{}".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(
            std::fs::read_dir(cd.store_dir().join("plugins/tars"))
                .unwrap()
                .next()
                .is_none(),
            "a file stayed in the tarball store"
        );
    });
}

#[test]
fn a_plugin_and_a_container_on_its_volume_survive_a_migration_to_a_new_containerd() {
    let old = Containerd::start();
    let tar = tvol_tarball(old.dir());
    {
        let server = Server::start(&old, &[]);
        rt().block_on(async {
            let mut c = server.client("ops-robot").await.unwrap();
            deploy_plugin(&mut c, &tar, "tvol").await.unwrap();
            c.start_plugin(proto::StartPluginRequest {
                name: "tvol".into(),
                instance_name: "tvol".into(),
                config: "{}".into(),
            })
            .await
            .unwrap();
            c.create_volume(custom_volume("vol1", &[("driver", "tvol")]))
                .await
                .unwrap();
            deploy(&mut c, &app_archive(old.dir()), "app", "1", None)
                .await
                .unwrap();
            c.start_container(writer_request()).await.unwrap();
        });
    }
    // (the store and the plugins' directories are on /host, kept by a SONiC image upgrade)
    let out = propagated(&old, "tvol").join("vol1/data/out");
    common::wait_until(WAIT, "the writer's file in the plugin's volume", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t == "from-writer\n")
    });
    let saved = assert_ok(&tpcm(&old, &["migrate", "save"]));
    assert!(saved.contains("2 TPC(s) saved"), "{saved}");
    // The old image goes down with everything it ran and mounted.
    reboot(&old, "tvol");
    assert!(!on_tmpfs(&propagated(&old, "tvol").join("vol1/data")));

    // The new SONiC image: an empty containerd, the same /host.
    let new = Containerd::start();
    let env = [
        ("TPCM_ROOT", old.store_dir()),
        ("TPCM_DATA_ROOT", old.data_dir()),
        ("TPCM_PLUGIN_SOCKETS", new.plugin_sockets()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.to_str().unwrap())).collect();
    assert_ok(&common::tpcm_env(&new, &["boot"], &env));
    common::wait_until(WAIT, "the plugin to run in the new containerd", || {
        running(&new, "tvol")
    });
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(old.store_dir().join("tpcs/tvol.json")).unwrap()).unwrap();
    let id = record["plugin"]["id"]
        .as_str()
        .expect("a plugin record")
        .to_string();
    common::wait_until(WAIT, "the plugin's socket", || {
        new.plugin_sockets().join(&id).join("tvol.sock").exists()
    });
    // The writer is back on its volume, which the plugin mounted again for it.
    common::wait_until(WAIT, "the writer to run in the new containerd", || {
        running(&new, "writer")
    });
    common::wait_until(WAIT, "the writer's file in the volume again", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t == "from-writer\n")
    });
    assert!(on_tmpfs(&propagated(&old, "tvol").join("vol1/data")));
}

#[test]
fn bad_plugin_input_is_refused_and_leaves_nothing() {
    let cd = Containerd::start();
    let server = Server::start(&cd, &[]);
    let before = (cd.images(), cd.snapshots(), cd.containers());
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        // Only a writer may deploy, start or remove plugins; a reader may list them.
        let mut reader = server.client("dashboard").await.unwrap();
        let e = reader
            .start_plugin(proto::StartPluginRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        let e = reader
            .remove_plugin_tar(proto::RemovePluginTarRequest { name: "x".into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(plugins(&mut reader, "").await.is_empty());

        // A bad name, and more bytes than announced.
        let tar = tvol_tarball(cd.dir());
        let e = deploy_plugin(&mut c, &tar, "../escape").await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        use proto::deploy_request::Request as In;
        let e = gnoi::deploy_messages(
            &mut c,
            vec![
                proto::DeployRequest {
                    request: Some(In::ImageTransfer(proto::ImageTransfer {
                        name: "short".into(),
                        image_size: 10,
                        is_plugin: true,
                        ..Default::default()
                    })),
                },
                proto::DeployRequest {
                    request: Some(In::Content(vec![0; 11].into())),
                },
                proto::DeployRequest {
                    request: Some(In::ImageTransferEnd(proto::ImageTransferEnd {})),
                },
            ],
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

        // A tarball that escapes its root, and one that is no tar at all: refused at start.
        let hostile = tarball(
            &cd.dir().join("hostile.tar.gz"),
            Layout::FlatGzip,
            "tvol",
            "tvol.sock",
            None,
            &[("../../escaped", b"x")],
        );
        deploy_plugin(&mut c, &hostile, "hostile").await.unwrap();
        let garbage = cd.dir().join("garbage");
        std::fs::write(&garbage, vec![7u8; 5000]).unwrap();
        deploy_plugin(&mut c, &garbage, "garbage").await.unwrap();
        for name in ["hostile", "garbage"] {
            let e = c
                .start_plugin(proto::StartPluginRequest {
                    name: name.into(),
                    instance_name: name.into(),
                    config: TVOL_CONFIG.into(),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e:?}");
        }

        // Configs that cannot run.
        deploy_plugin(&mut c, &tvol_tarball(cd.dir()), "tvol").await.unwrap();
        for (config, why) in [
            ("not json", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"env":[{"name":"NOPE","value":"1"}]}"#, "NOPE"),
        ] {
            let e = c
                .start_plugin(proto::StartPluginRequest {
                    name: "tvol".into(),
                    instance_name: "tvol".into(),
                    config: config.into(),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{config}: {e:?}");
            assert!(e.message().contains(why), "{config}: {}", e.message());
        }
        // A plugin that never makes its socket is taken back after 10 s.
        let silent = tarball(
            &cd.dir().join("silent.tar.gz"),
            Layout::FlatGzip,
            "tvol",
            "elsewhere.sock",
            None,
            &[],
        );
        deploy_plugin(&mut c, &silent, "silent").await.unwrap();
        let e = c
            .start_plugin(proto::StartPluginRequest {
                name: "silent".into(),
                instance_name: "silent".into(),
                config: r#"{"entrypoint":["/tvol"],"interface":{"socket":"tvol.sock","types":["docker.volumedriver/1.0"]},"linux":{"capabilities":["CAP_SYS_ADMIN"]},"propagatedmount":"/mnt/volumes"}"#.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("tvol.sock"), "{}", e.message());
        assert!(plugins(&mut c, "").await.is_empty());
    });
    common::wait_until(WAIT, "no lease left", || cd.leases().is_empty());
    assert_eq!((cd.images(), cd.snapshots(), cd.containers()), before);
    assert!(!cd.store_dir().join("plugins/instances/silent").exists());
    // Neither a socket directory nor a mount of a plugin that failed to start.
    let sockets: Vec<_> = std::fs::read_dir(cd.plugin_sockets())
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(sockets.is_empty(), "{sockets:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(cd.store_dir().join("plugins").to_str().unwrap()),
        "a plugin mount stayed"
    );
    let work: Vec<_> = std::fs::read_dir(cd.store_dir().join("plugins/instances"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(work.is_empty(), "{work:?}");
    let builds: Vec<_> = std::fs::read_dir(cd.store_dir().join("plugins/work"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(builds.is_empty(), "{builds:?}");
}
