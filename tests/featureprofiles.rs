//! The public containerz conformance tests, openconfig/featureprofiles
//! `feature/container/containerz/tests/container_lifecycle` (CNTR-1.1 … 1.8) and
//! `feature/container/networking/tests/container_connectivity` (CNTR-2.1, 2.4), followed step
//! by step against `tpcm serve` over mutual TLS and a real containerd: the same RPCs in the same
//! order, with the same names (40-character ones included), tags, commands, ports (`60061:60061`
//! with every start, on the host network too), volumes, the verbatim sshfs plugin config, and
//! the same accepted status codes. docs/containerz.md maps each step to the test here.
//!
//! Stand-ins, built here: the cntrsrv container (`support/cntrsrv.c`: listens on `--port`,
//! answers ping and dials another server; upstream's speaks gRPC) and the sshfs plugin tarball
//! (`support/volume_plugin.c` as `/docker-volume-sshfs`, listening on `sshfs.sock` as the
//! config says). Where the Go tests sleep a fixed time, these poll with a deadline. The cold
//! reboot of CNTR-1.8 is what a reboot does to tpcm: every task dies, the server dies, and
//! `tpcm boot` runs before the server is back.
//!
//! The tests publish host ports 60061 and 60062, as upstream's do, so they take turns.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;
#[path = "support/gnoi.rs"]
mod gnoi;
#[path = "support/plugin_kit.rs"]
mod plugin_kit;

use common::{Containerd, assert_ok, tpcm};
use gnoi::{ContainerzClient, Server, deploy, deploy_plugin, proto};
use proto::list_container_response::Status as Listed;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::transport::Channel;

const IMAGE_NAME: &str = "cntrsrv_image";
const INSTANCE_NAME: &str = "test-instance";
const POLL_TIMEOUT: Duration = Duration::from_secs(30);

/// The host ports the tests publish are one machine's: one test at a time.
static HOST_PORTS: Mutex<()> = Mutex::new(());

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The cntrsrv stand-in, compiled once.
fn cntrsrv_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("tpcm-cntrsrv-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let out = dir.join("cntrsrv");
            let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/cntrsrv.c");
            let made = std::process::Command::new("cc")
                .args(["-static", "-O2", "-o"])
                .arg(&out)
                .arg(src)
                .output()
                .expect("cc (scripts/install-deps.sh installs a C toolchain)");
            assert!(made.status.success(), "cc: {}", common::describe(&made));
            out
        })
        .clone()
}

/// `--container_tar` (`cntrsrv_image:latest`) or `--container_upgrade_tar`: the same image
/// re-tagged `cntrsrv_image:upgrade`, byte for byte, as upstream's README makes it.
fn container_tar(dir: &Path, tag: &str) -> PathBuf {
    let path = dir.join(format!("cntrsrv-{tag}.tar"));
    let mut image = builder::busybox_image(&[&format!("{IMAGE_NAME}:{tag}")]);
    image
        .layers
        .push(builder::Layer::new(vec![builder::Entry::host_file(
            "cntrsrv",
            0o755,
            cntrsrv_binary(),
        )]));
    builder::write_archive(&image, builder::ArchiveFormat::DockerV12, false, &path).unwrap();
    path
}

/// One line to the cntrsrv stand-in on the host's `port`, its answer back.
fn ask(port: u16, line: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    Some(answer.trim_end().to_string())
}

/// Ping retried every 100 ms until it is answered or 30 s passed (CNTR-2.1's loop).
fn ping(port: u16) -> String {
    let end = Instant::now() + POLL_TIMEOUT;
    loop {
        if let Some(a) = ask(port, "ping").filter(|a| a.starts_with("pong ")) {
            return a;
        }
        assert!(Instant::now() < end, "nothing answered ping on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- internal/containerztest, as Rust -----------------------------------------------------

/// `StartContainerOptions` after `withDefaults()`.
#[derive(Clone)]
struct StartOptions {
    image_name: String,
    image_tag: String,
    instance_name: String,
    command: String,
    ports: Vec<(u32, u32)>,
    network: String,
    volumes: Vec<proto::Volume>,
    tar_path: PathBuf,
    remove_existing_image: bool,
    poll_for_running_state: bool,
}

impl StartOptions {
    fn new(tar_path: &Path) -> StartOptions {
        StartOptions {
            image_name: IMAGE_NAME.into(),
            image_tag: "latest".into(),
            instance_name: INSTANCE_NAME.into(),
            command: "./cntrsrv".into(),
            ports: vec![(60061, 60061)],
            network: String::new(),
            volumes: Vec::new(),
            tar_path: tar_path.to_path_buf(),
            remove_existing_image: false,
            poll_for_running_state: false,
        }
    }
}

fn start_request(o: &StartOptions) -> proto::StartContainerRequest {
    proto::StartContainerRequest {
        image_name: o.image_name.clone(),
        tag: o.image_tag.clone(),
        cmd: o.command.clone(),
        instance_name: o.instance_name.clone(),
        ports: o
            .ports
            .iter()
            .map(|(internal, external)| proto::start_container_request::Port {
                internal: *internal,
                external: *external,
            })
            .collect(),
        volumes: o.volumes.clone(),
        network: o.network.clone(),
        cap: Some(Default::default()),
        restart: Some(proto::start_container_request::Restart {
            policy: proto::start_container_request::restart::Policy::Always as i32,
            attempts: 0,
        }),
        limits: Some(Default::default()),
        ..Default::default()
    }
}

/// `DeployAndStart`: remove the instance (and the image when asked; errors only logged),
/// Deploy, find `name:tag` in ListImage, StartContainer, then poll for RUNNING or, where the
/// Go helper sleeps, wait until the instance is listed.
/// The local volume featureprofiles creates: a bind of the host's /tmp.
fn bind_tmp_volume(name: &str) -> proto::CreateVolumeRequest {
    proto::CreateVolumeRequest {
        name: name.into(),
        driver: proto::Driver::DsLocal as i32,
        labels: Default::default(),
        options: Some(proto::create_volume_request::Options::LocalMountOptions(
            proto::LocalDriverOptions {
                r#type: proto::local_driver_options::Type::None as i32,
                options: vec!["bind".into()],
                mountpoint: "/tmp".into(),
            },
        )),
    }
}

async fn deploy_and_start(c: &mut ContainerzClient<Channel>, o: &StartOptions) {
    let _ = c
        .remove_container(proto::RemoveContainerRequest {
            name: o.instance_name.clone(),
            force: true,
        })
        .await;
    if o.remove_existing_image {
        let _ = c
            .remove_image(proto::RemoveImageRequest {
                name: o.image_name.clone(),
                tag: o.image_tag.clone(),
                force: false,
            })
            .await;
    }
    deploy(c, &o.tar_path, &o.image_name, &o.image_tag, None)
        .await
        .expect("Deploy");
    // As the Go helper asks: filtered by name and tag.
    let mut images = c
        .list_image(proto::ListImageRequest {
            filter: vec![
                proto::list_image_request::Filter {
                    key: "name".into(),
                    value: vec![o.image_name.clone()],
                },
                proto::list_image_request::Filter {
                    key: "tag".into(),
                    value: vec![o.image_tag.clone()],
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut found = false;
    while let Some(i) = images.message().await.unwrap() {
        found |= i.image_name == o.image_name && i.tag == o.image_tag;
    }
    assert!(
        found,
        "image {}:{} not found after successful push",
        o.image_name, o.image_tag
    );
    let started = c
        .start_container(start_request(o))
        .await
        .expect("StartContainer")
        .into_inner();
    assert!(
        matches!(
            started.response,
            Some(proto::start_container_response::Response::StartOk(_))
        ),
        "{started:?}"
    );
    if o.poll_for_running_state {
        wait_for_running(c, &o.instance_name, POLL_TIMEOUT).await;
    } else {
        gnoi::eventually(POLL_TIMEOUT, "the instance to be listed", || {
            let mut c = c.clone();
            let name = o.instance_name.clone();
            async move { listed(&mut c, &name).await.is_some() }
        })
        .await;
    }
}

/// `WaitForRunning`: ListContainer{all} until `name` (or `/name`) is RUNNING.
async fn wait_for_running(c: &mut ContainerzClient<Channel>, name: &str, timeout: Duration) {
    gnoi::eventually(timeout, &format!("{name} to run"), || {
        let mut c = c.clone();
        let name = name.to_string();
        async move {
            listed(&mut c, &name)
                .await
                .is_some_and(|x| x.status() == Listed::Running)
        }
    })
    .await;
}

/// The entry named `name` (or `/name`) of ListContainer{all, filter name}, as the Go tests ask.
async fn listed(c: &mut ContainerzClient<Channel>, name: &str) -> Option<proto::ListContainerResponse> {
    let mut s = c
        .list_container(proto::ListContainerRequest {
            all: true,
            limit: 0,
            filter: vec![proto::list_container_request::Filter {
                key: "name".into(),
                value: vec![name.into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let mut found = None;
    while let Some(x) = s.message().await.unwrap() {
        assert!(
            x.name == name || x.name == format!("/{name}"),
            "the name filter let {} through",
            x.name
        );
        found = Some(x);
    }
    found
}

/// `Setup`'s cleanup: StopContainer(force), then RemoveContainer(force); errors only logged.
async fn cleanup(c: &mut ContainerzClient<Channel>, name: &str) {
    let _ = c
        .stop_container(proto::StopContainerRequest {
            instance_name: name.into(),
            force: true,
            restart: false,
        })
        .await;
    let _ = c
        .remove_container(proto::RemoveContainerRequest {
            name: name.into(),
            force: true,
        })
        .await;
}

/// `startContainer()` of containerz_test.go: test-instance on cntrsrv_image:latest.
async fn start_container(c: &mut ContainerzClient<Channel>, tar: &Path) {
    deploy_and_start(c, &StartOptions::new(tar)).await;
}

/// A non-follow Log: every message, and the status the stream ended with.
async fn logs(c: &mut ContainerzClient<Channel>, name: &str) -> (Vec<String>, Result<(), tonic::Status>) {
    let mut out = Vec::new();
    let mut stream = match c
        .log(proto::LogRequest {
            instance_name: name.into(),
            follow: false,
        })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(e) => return (out, Err(e)),
    };
    loop {
        match stream.message().await {
            Ok(Some(m)) => out.push(m.msg),
            Ok(None) => return (out, Ok(())),
            Err(e) => return (out, Err(e)),
        }
    }
}

/// A containerd, `tpcm serve` on it, and the cntrsrv tarballs; the host ports held.
struct Dut {
    server: Option<Server>,
    cd: Containerd,
    tar: PathBuf,
    // Last: released once the containers above are gone.
    _ports: std::sync::MutexGuard<'static, ()>,
}

impl Dut {
    fn new() -> Dut {
        let ports = HOST_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        let cd = Containerd::start();
        let server = Server::start(&cd, &[]);
        let tar = container_tar(cd.dir(), "latest");
        Dut {
            server: Some(server),
            cd,
            tar,
            _ports: ports,
        }
    }

    async fn client(&self) -> ContainerzClient<Channel> {
        self.server.as_ref().unwrap().client("ops-robot").await.unwrap()
    }
}

// ---- CNTR-1 --------------------------------------------------------------------------------

#[test]
fn cntr_1_1_deploy_and_start_container() {
    let dut = Dut::new();
    rt().block_on(async {
        let mut c = dut.client().await;
        // SuccessfulDeployAndStart.
        let mut o = StartOptions::new(&dut.tar);
        o.remove_existing_image = true;
        o.poll_for_running_state = true;
        deploy_and_start(&mut c, &o).await;
        // The port is published: cntrsrv answers on the host's 60061.
        assert!(ping(60061).starts_with("pong "));
        cleanup(&mut c, INSTANCE_NAME).await;

        // StartWithNonExistentImage and StartWithNonExistentTag: any error passes.
        for (image, tag, instance) in [
            ("non-existent-image", "latest", "test-non-existent-img"),
            (IMAGE_NAME, "non-existent-tag", "test-non-existent-tag"),
        ] {
            let mut o = StartOptions::new(&dut.tar);
            o.image_name = image.into();
            o.image_tag = tag.into();
            o.instance_name = instance.into();
            o.command = "./cmd".into();
            let e = c.start_container(start_request(&o)).await.unwrap_err();
            assert_eq!(e.code(), Code::NotFound, "{instance}: {e:?}");
        }
        assert!(gnoi::containers(&mut c).await.is_empty());
    });
}

#[test]
fn cntr_1_2_retrieve_logs() {
    let dut = Dut::new();
    rt().block_on(async {
        let mut c = dut.client().await;
        // SuccessfulLogRetrieval: a non-follow Log ends, with what cntrsrv said.
        start_container(&mut c, &dut.tar).await;
        gnoi::eventually(POLL_TIMEOUT, "cntrsrv's first log line", || {
            let mut c = c.clone();
            async move {
                let (lines, end) = logs(&mut c, INSTANCE_NAME).await;
                end.unwrap();
                lines.iter().any(|l| l.contains("cntr server listening on"))
            }
        })
        .await;
        cleanup(&mut c, INSTANCE_NAME).await;

        // LogsFromNonExistentInstance (32 characters): NOT_FOUND.
        let missing = "test-instance-log-does-not-exist";
        assert_eq!(missing.len(), 32);
        let _ = c
            .remove_container(proto::RemoveContainerRequest {
                name: missing.into(),
                force: true,
            })
            .await;
        let (lines, end) = logs(&mut c, missing).await;
        assert!(lines.is_empty());
        assert_eq!(end.unwrap_err().code(), Code::NotFound);

        // LogsFromStoppedInstance (30 characters, ports 60062:60062, the tar deployed again).
        let stopped = "test-instance-for-stopped-logs";
        let mut o = StartOptions::new(&dut.tar);
        o.instance_name = stopped.into();
        o.ports = vec![(60062, 60062)];
        o.poll_for_running_state = true;
        deploy_and_start(&mut c, &o).await;
        gnoi::eventually(POLL_TIMEOUT, "a log line", || {
            let mut c = c.clone();
            async move { !logs(&mut c, stopped).await.0.is_empty() }
        })
        .await;
        c.stop_container(proto::StopContainerRequest {
            instance_name: stopped.into(),
            force: true,
            restart: false,
        })
        .await
        .unwrap();
        // tpcm keeps a stopped instance's log: the lines, then a clean end.
        let (lines, end) = logs(&mut c, stopped).await;
        end.unwrap();
        assert!(
            lines.iter().any(|l| l.contains("cntr server listening on")),
            "{lines:?}"
        );
        c.remove_container(proto::RemoveContainerRequest {
            name: stopped.into(),
            force: true,
        })
        .await
        .unwrap();
    });
}

/// ListVolume filtered by name, as the Go tests ask.
fn volume_filter(name: &str) -> proto::ListVolumeRequest {
    proto::ListVolumeRequest {
        filter: vec![proto::list_volume_request::Filter {
            key: "name".into(),
            value: vec![name.into()],
        }],
    }
}

#[test]
fn cntr_1_3_list_containers() {
    let dut = Dut::new();
    rt().block_on(async {
        let mut c = dut.client().await;
        // ListWhenTargetContainerIsNotRunning.
        let _ = c
            .remove_container(proto::RemoveContainerRequest {
                name: INSTANCE_NAME.into(),
                force: true,
            })
            .await;
        assert!(
            gnoi::containers(&mut c)
                .await
                .iter()
                .all(|x| x.name != INSTANCE_NAME)
        );
        // ListFindsSpecificRunningContainer: image_name is exactly name:tag.
        start_container(&mut c, &dut.tar).await;
        let all = gnoi::containers(&mut c).await;
        assert!(
            all.iter()
                .any(|x| x.image_name == "cntrsrv_image:latest"
                    && x.name.trim_start_matches('/') == INSTANCE_NAME),
            "{all:?}"
        );
        cleanup(&mut c, INSTANCE_NAME).await;
    });
}

#[test]
fn cntr_1_4_stop_container() {
    let dut = Dut::new();
    rt().block_on(async {
        let mut c = dut.client().await;
        let stop = |name: &str| proto::StopContainerRequest {
            instance_name: name.into(),
            force: true,
            restart: false,
        };
        // StopRunningContainer: STOPPED, and not restarted although its policy is ALWAYS
        // (watched for 2 s: the restart supervisor acts within 100 ms of an exit).
        start_container(&mut c, &dut.tar).await;
        wait_for_running(&mut c, INSTANCE_NAME, POLL_TIMEOUT).await;
        c.stop_container(stop(INSTANCE_NAME)).await.unwrap();
        let watch_until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < watch_until {
            if let Some(x) = listed(&mut c, INSTANCE_NAME).await {
                assert_eq!(x.status(), Listed::Stopped, "{x:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cleanup(&mut c, INSTANCE_NAME).await;

        // StopNonExistentContainer (37 characters): an error, NOT_FOUND.
        let missing = "test-instance-does-not-exist-for-stop";
        assert_eq!(missing.len(), 37);
        let _ = c
            .remove_container(proto::RemoveContainerRequest {
                name: missing.into(),
                force: true,
            })
            .await;
        let e = c.stop_container(stop(missing)).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");

        // StopAlreadyStoppedContainer: OK, NOT_FOUND or FAILED_PRECONDITION.
        start_container(&mut c, &dut.tar).await;
        wait_for_running(&mut c, INSTANCE_NAME, POLL_TIMEOUT).await;
        c.stop_container(stop(INSTANCE_NAME)).await.unwrap();
        let e = c.stop_container(stop(INSTANCE_NAME)).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        cleanup(&mut c, INSTANCE_NAME).await;
    });
}

#[test]
fn cntr_1_5_volumes() {
    let dut = Dut::new();
    rt().block_on(async {
        let mut c = dut.client().await;
        let name = "test-vol-positive";
        let remove = |name: &str| proto::RemoveVolumeRequest {
            name: name.into(),
            force: true,
        };
        // CreateListRemoveVolume.
        let _ = c.remove_volume(remove(name)).await;
        let made = c.create_volume(bind_tmp_volume(name)).await.unwrap().into_inner();
        assert_eq!(made.name, name);
        let volumes = |mut c: ContainerzClient<Channel>| async move {
            let mut s = c.list_volume(volume_filter(name)).await.unwrap().into_inner();
            let mut out = Vec::new();
            while let Some(v) = s.message().await.unwrap() {
                out.push(v);
            }
            out
        };
        let listed = volumes(c.clone()).await;
        let v = listed.iter().find(|v| v.name == name).expect("listed");
        assert_eq!(v.driver, "local");
        let want: std::collections::HashMap<String, String> =
            [("device", "/tmp"), ("o", "bind"), ("type", "none")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(v.options, want);
        c.remove_volume(remove(name)).await.unwrap();
        assert!(volumes(c.clone()).await.iter().all(|v| v.name != name));
        assert!(
            Path::new("/tmp").is_dir(),
            "removing a bind volume took its directory"
        );

        // RemoveNonExistentVolume: OK or NOT_FOUND, twice.
        for _ in 0..2 {
            c.remove_volume(remove("test-vol-does-not-exist")).await.unwrap();
        }
    });
}

#[test]
fn cntr_1_6_upgrade() {
    let dut = Dut::new();
    let upgrade_tar = container_tar(dut.cd.dir(), "upgrade");
    rt().block_on(async {
        let mut c = dut.client().await;
        let params = |image: &str, tag: &str, instance: &str| {
            let mut o = StartOptions::new(&dut.tar);
            o.image_name = image.into();
            o.image_tag = tag.into();
            o.instance_name = instance.into();
            let mut r = start_request(&o);
            r.restart = None;
            r
        };
        let update = |image: &str, tag: &str, instance: &str| proto::UpdateContainerRequest {
            instance_name: instance.into(),
            image_name: image.into(),
            image_tag: tag.into(),
            params: Some(params(image, tag, instance)),
            r#async: false,
        };
        // SuccessfulUpgrade: the same image re-tagged, the restart policy dropped, the same host
        // port kept.
        start_container(&mut c, &dut.tar).await;
        deploy(&mut c, &upgrade_tar, IMAGE_NAME, "upgrade", None)
            .await
            .expect("Deploy of the upgrade");
        c.update_container(update(IMAGE_NAME, "upgrade", INSTANCE_NAME))
            .await
            .expect("UpdateContainer");
        wait_for_running(&mut c, INSTANCE_NAME, POLL_TIMEOUT).await;
        let x = listed(&mut c, INSTANCE_NAME).await.unwrap();
        assert_eq!(x.image_name, "cntrsrv_image:upgrade");
        assert_eq!(x.status(), Listed::Running);
        assert!(ping(60061).starts_with("pong "));
        // The deferred RemoveImage(upgrade, force) runs while the container uses the image.
        let _ = c
            .remove_image(proto::RemoveImageRequest {
                name: IMAGE_NAME.into(),
                tag: "upgrade".into(),
                force: true,
            })
            .await;
        cleanup(&mut c, INSTANCE_NAME).await;

        // UpgradeToNonExistentImage, UpgradeToNonExistentTag: NOT_FOUND.
        start_container(&mut c, &dut.tar).await;
        for (image, tag) in [
            ("non-existent-image-for-upgrade", "latest"),
            (IMAGE_NAME, "non-existent-tag-for-upgrade"),
        ] {
            let e = c
                .update_container(update(image, tag, INSTANCE_NAME))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::NotFound, "{image}:{tag}: {e:?}");
        }
        wait_for_running(&mut c, INSTANCE_NAME, POLL_TIMEOUT).await;
        cleanup(&mut c, INSTANCE_NAME).await;

        // UpgradeNonExistentInstance (40 characters): NOT_FOUND.
        let missing = "test-instance-does-not-exist-for-upgrade";
        assert_eq!(missing.len(), 40);
        let _ = c
            .remove_container(proto::RemoveContainerRequest {
                name: missing.into(),
                force: true,
            })
            .await;
        let e = c
            .update_container(update(IMAGE_NAME, "latest", missing))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
    });
}

/// featureprofiles' `testdata/test_sshfs_config.json`, key for key and value for value.
const SSHFS_CONFIG: &str = r#"{
  "description": "sshFS plugin for Docker (Test Configuration)",
  "documentation": "https://docs.docker.com/engine/extend/plugins/",
  "entrypoint": ["/docker-volume-sshfs"],
  "env": [
    {"name": "DEBUG", "settable": ["value"], "value": "0"},
    {"name": "SSH_HOST", "settable": ["value"], "value": "localhost"},
    {"name": "SSH_USER", "settable": ["value"], "value": "testuser"},
    {"name": "SSH_PASSWORD", "settable": ["value"], "value": "testpass"},
    {"name": "SSHFS_OPTS", "settable": ["value"], "value": "allow_other,reconnect"}
  ],
  "interface": {"socket": "sshfs.sock", "types": ["docker.volumedriver/1.0"]},
  "linux": {"capabilities": ["CAP_SYS_ADMIN"], "devices": [{"path": "/dev/fuse"}]},
  "mounts": [
    {"destination": "/mnt/state", "options": ["rbind"], "name": "state", "source": "/tmp", "settable": ["source"], "type": "bind"},
    {"destination": "/root/.ssh", "options": ["rbind"], "name": "sshkey", "source": "", "settable": ["source"], "type": "bind"}
  ],
  "network": {"type": "host"},
  "propagatedmount": "/mnt/volumes"
}"#;

#[test]
fn cntr_1_7_plugins() {
    let dut = Dut::new();
    // `--plugin_tar`: the root filesystem at the top of a gzip'd tar, config.json beside it.
    let plugin_tar = plugin_kit::tarball(
        &dut.cd.dir().join("rootfs.tar.gz"),
        plugin_kit::Layout::FlatGzip,
        "docker-volume-sshfs",
        "sshfs.sock",
        Some(SSHFS_CONFIG),
        &[],
    );
    rt().block_on(async {
        let mut c = dut.client().await;
        let start = |plugin: &str, instance: &str, config: &str| proto::StartPluginRequest {
            name: plugin.into(),
            instance_name: instance.into(),
            config: config.into(),
        };
        // SuccessfulPluginCompleteLifecycle.
        let (plugin, instance) = ("sshfs-plugin-positive", "sshfs-instance-positive");
        deploy_plugin(&mut c, &plugin_tar, plugin)
            .await
            .expect("Deploy is_plugin");
        c.start_plugin(start(plugin, instance, SSHFS_CONFIG))
            .await
            .expect("StartPlugin");
        let listed = c
            .list_plugins(proto::ListPluginsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .plugins;
        assert!(
            listed
                .iter()
                .any(|p| p.instance_name == "sshfs-instance-positive:latest"),
            "{listed:?}"
        );
        let full = format!("{instance}:latest");
        c.stop_plugin(proto::StopPluginRequest {
            instance_name: full.clone(),
        })
        .await
        .expect("StopPlugin");
        c.remove_plugin(proto::RemovePluginRequest { instance_name: full })
            .await
            .expect("RemovePlugin");
        // The deferred RemoveImage: a plugin tarball is no image (the reference: NOT_FOUND).
        let e = c
            .remove_image(proto::RemoveImageRequest {
                name: plugin.into(),
                tag: "latest".into(),
                force: true,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");

        // StartWithNonExistentPluginImage: UNKNOWN, NOT_FOUND or FAILED_PRECONDITION.
        let e = c
            .start_plugin(start(
                "non-existent-plugin-image",
                "test-instance-non-existent-image",
                r#"{"description":"dummy"}"#,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");

        // StartAlreadyStartedInstance: UNKNOWN or ALREADY_EXISTS.
        let (plugin, instance) = ("sshfs-plugin-already-started", "sshfs-instance-already-started");
        deploy_plugin(&mut c, &plugin_tar, plugin)
            .await
            .expect("Deploy is_plugin");
        c.start_plugin(start(plugin, instance, SSHFS_CONFIG))
            .await
            .expect("StartPlugin");
        let e = c
            .start_plugin(start(plugin, instance, SSHFS_CONFIG))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        let full = format!("{instance}:latest");
        let _ = c
            .stop_plugin(proto::StopPluginRequest {
                instance_name: full.clone(),
            })
            .await;
        let _ = c
            .remove_plugin(proto::RemovePluginRequest { instance_name: full })
            .await;
        assert!(
            c.list_plugins(proto::ListPluginsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .plugins
                .is_empty()
        );
    });
    assert!(dut.cd.containers().is_empty(), "{:?}", dut.cd.containers());
}

#[test]
fn cntr_1_8_container_persistence_after_cold_reboot() {
    let mut dut = Dut::new();
    let volume = "test-coldreboot-vol";
    rt().block_on(async {
        let mut c = dut.client().await;
        // Setup.
        c.create_volume(bind_tmp_volume(volume))
            .await
            .expect("CreateVolume");
        let mut o = StartOptions::new(&dut.tar);
        o.volumes = vec![proto::Volume {
            name: volume.into(),
            mount_point: "/data".into(),
            read_only: false,
        }];
        o.remove_existing_image = true;
        o.poll_for_running_state = true;
        deploy_and_start(&mut c, &o).await;
    });
    // ColdReboot: the server and every task die; the device boots (`tpcm boot`) and the
    // server comes back.
    dut.server.take().unwrap().kill();
    for (id, _, _) in dut.cd.tasks() {
        let _ = dut.cd.ctr(&["tasks", "kill", "--signal", "SIGKILL", &id]);
        common::wait_until(POLL_TIMEOUT, "the task to die", || {
            dut.cd.tasks().iter().all(|(t, _, s)| t != &id || s != "RUNNING")
        });
        dut.cd.ctr_ok(&["tasks", "delete", &id]);
    }
    assert_ok(&tpcm(&dut.cd, &["boot"]));
    dut.server = Some(Server::start(&dut.cd, &[]));
    rt().block_on(async {
        let mut c = dut.client().await;
        // VerifyPersistence.
        wait_for_running(&mut c, INSTANCE_NAME, Duration::from_secs(300)).await;
        let mut s = c.list_volume(volume_filter(volume)).await.unwrap().into_inner();
        let mut names = Vec::new();
        while let Some(v) = s.message().await.unwrap() {
            names.push(v.name);
        }
        assert!(names.iter().any(|n| n == volume), "{names:?}");
        assert!(ping(60061).starts_with("pong "));
        // Cleanup: each tolerates NOT_FOUND.
        cleanup(&mut c, INSTANCE_NAME).await;
        let _ = c
            .remove_image(proto::RemoveImageRequest {
                name: IMAGE_NAME.into(),
                tag: "latest".into(),
                force: true,
            })
            .await;
        c.remove_volume(proto::RemoveVolumeRequest {
            name: volume.into(),
            force: true,
        })
        .await
        .unwrap();
    });
}

// ---- CNTR-2 --------------------------------------------------------------------------------

/// `setupContainer` of cntr_test.go: cntr-test-conn (or `instance`), `./cntrsrv --port=<port>`,
/// network host, ports `60061:60061` (sent with host networking too), polled for RUNNING.
async fn setup_connectivity(c: &mut ContainerzClient<Channel>, tar: &Path, instance: &str, port: u16) {
    let mut o = StartOptions::new(tar);
    o.instance_name = instance.into();
    o.command = format!("./cntrsrv --port={port}");
    o.network = "host".into();
    o.ports = vec![(port as u32, port as u32)];
    o.poll_for_running_state = true;
    deploy_and_start(c, &o).await;
}

#[test]
fn cntr_2_1_dial() {
    let dut = Dut::new();
    rt().block_on(async {
        let mut c = dut.client().await;
        setup_connectivity(&mut c, &dut.tar, "cntr-test-conn", 60061).await;
        // The test host reaches the container on the device's own port.
        assert!(ping(60061).starts_with("pong "));
        // Unequal ports on the host network are refused, saying why.
        let mut o = StartOptions::new(&dut.tar);
        o.instance_name = "cntr-test-unequal".into();
        o.network = "host".into();
        o.ports = vec![(60061, 60063)];
        let e = c.start_container(start_request(&o)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("host network"), "{}", e.message());
        cleanup(&mut c, "cntr-test-conn").await;
    });
}

#[test]
fn cntr_2_4_connect_to_another_container_on_the_local_node() {
    let dut = Dut::new();
    rt().block_on(async {
        let mut c = dut.client().await;
        setup_connectivity(&mut c, &dut.tar, "cntr-test-c1", 60061).await;
        setup_connectivity(&mut c, &dut.tar, "cntr-test-c2", 60062).await;
        ping(60061);
        ping(60062);
        // C1 dials C2's port and gets its answer, and the other way round.
        let answer = ask(60061, "dial [::1]:60062").unwrap_or_default();
        let answer = if answer.starts_with("dialed pong ") {
            answer
        } else {
            // A host without IPv6 on lo.
            ask(60061, "dial 127.0.0.1:60062").unwrap_or_default()
        };
        assert!(answer.starts_with("dialed pong "), "{answer}");
        let back = ask(60062, "dial 127.0.0.1:60061").unwrap_or_default();
        assert!(back.starts_with("dialed pong "), "{back}");
        cleanup(&mut c, "cntr-test-c1").await;
        cleanup(&mut c, "cntr-test-c2").await;
    });
}
