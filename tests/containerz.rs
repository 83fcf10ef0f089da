//! The gNOI containerz server (`tpcm serve`) through a real mutual-TLS gRPC connection against a
//! private containerd: authentication and scopes, Deploy of every archive format with its error
//! codes, the container lifecycle with Log follow, UpdateContainer with rollback, volumes,
//! the janitor, restart policies, and a server restart that leaves containers running.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;
#[path = "support/gnoi.rs"]
mod gnoi;
#[path = "support/sshd.rs"]
mod sshd;

use builder::{Entry, Layer};
use common::{Containerd, assert_ok, tpcm};
use gnoi::{ContainerzClient, Server, containers, deploy, eventually, proto, status_of};
use proto::list_container_response::Status as Listed;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(60);

/// `tpcm-fixture/app:<version>`: busybox plus `/etc/version`.
fn app_archive(dir: &Path, version: &str, format: builder::ArchiveFormat, gzip: bool) -> PathBuf {
    let mut spec = builder::busybox_image(&[&format!("tpcm-fixture/app:{version}")]);
    spec.layers.push(Layer::new(vec![
        Entry::dir("etc", 0o755),
        Entry::file("etc/version", 0o644, format!("{version}\n")),
    ]));
    spec.gzip_layers = gzip;
    let path = dir.join(format!("app-{version}-{format:?}-{gzip}.tar"));
    builder::write_archive(&spec, format, gzip, &path).unwrap();
    path
}

fn docker_archive(dir: &Path, version: &str) -> PathBuf {
    app_archive(dir, version, builder::ArchiveFormat::DockerV12, false)
}

/// A service that prints its version and ticks, and ends on SIGTERM.
const SERVICE: &str = "sh -c 'echo version $(cat /etc/version) mode=$MODE; trap \"exit 0\" TERM; \
    i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done'";

/// Like [`SERVICE`], and keeps a random ID in its writable layer (made once, printed at every
/// start): a rollback onto the kept layer prints the same ID again, a fresh layer another.
const STATEFUL: &str = "sh -c '[ -f /etc/state ] || cat /proc/sys/kernel/random/uuid > /etc/state; \
    echo version $(cat /etc/version) mode=$MODE state $(cat /etc/state); trap \"exit 0\" TERM; \
    i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done'";

/// The IDs a [`STATEFUL`] container printed, one per start.
fn states(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once(" state ").map(|(_, s)| s.to_string()))
        .collect()
}

fn start_request(image: &str, tag: &str, instance: &str, cmd: &str) -> proto::StartContainerRequest {
    proto::StartContainerRequest {
        image_name: image.into(),
        tag: tag.into(),
        instance_name: instance.into(),
        cmd: cmd.into(),
        ..Default::default()
    }
}

async fn images(client: &mut ContainerzClient<Channel>) -> Vec<proto::ListImageResponse> {
    drain(
        client
            .list_image(proto::ListImageRequest::default())
            .await
            .unwrap()
            .into_inner(),
    )
    .await
}

async fn log_text(client: &mut ContainerzClient<Channel>, name: &str) -> String {
    let mut s = client
        .log(proto::LogRequest {
            instance_name: name.into(),
            follow: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = String::new();
    while let Some(m) = s.message().await.unwrap() {
        out.push_str(&m.msg);
    }
    out
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn clients_need_a_trusted_certificate_a_known_identity_and_the_scope() {
    let cd = Containerd::start();
    let server = Server::start(&cd, &[]);
    rt().block_on(async {
        // No client certificate: the TLS handshake fails, so no call gets through.
        let outcome = match gnoi::connect(&server.addr, &server.pki_dir, None).await {
            Err(_) => None,
            Ok(mut c) => Some(c.list_image(proto::ListImageRequest::default()).await.map(|_| ())),
        };
        assert!(
            !matches!(outcome, Some(Ok(()))),
            "a call without a client certificate succeeded"
        );
        // A certificate from a CA the server does not trust, even with a known name.
        let outcome = match server.client("rogue").await {
            Err(_) => None,
            Ok(mut c) => Some(c.list_image(proto::ListImageRequest::default()).await.map(|_| ())),
        };
        assert!(
            !matches!(outcome, Some(Ok(()))),
            "a rogue CA's certificate was accepted"
        );

        let mut stranger = server.client("stranger").await.unwrap();
        let e = stranger
            .list_image(proto::ListImageRequest::default())
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("stranger"), "{}", e.message());

        let mut dashboard = server.client("dashboard").await.unwrap();
        assert!(images(&mut dashboard).await.is_empty());
        assert!(containers(&mut dashboard).await.is_empty());
        let e = dashboard
            .start_container(start_request("app", "1", "x", ""))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert!(e.message().contains("write"), "{}", e.message());
        let archive = docker_archive(cd.dir(), "1");
        let e = deploy(&mut dashboard, &archive, "app", "1", None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        let e = dashboard
            .remove_volume(proto::RemoveVolumeRequest {
                name: "v".into(),
                force: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
    });
    assert!(cd.images().is_empty(), "a refused Deploy left an image");
}

#[test]
fn deploy_streams_every_archive_format_and_refuses_bad_transfers() {
    let cd = Containerd::start();
    let server = Server::start(&cd, &[]);
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        use builder::ArchiveFormat::*;
        for (i, (format, gzip)) in [
            (DockerV12, false),
            (Moby25, false),
            (OciLayout, false),
            (OciLayout, true),
        ]
        .into_iter()
        .enumerate()
        {
            let archive = app_archive(cd.dir(), &format!("f{i}"), format, gzip);
            let size = std::fs::metadata(&archive).unwrap().len();
            let answers = deploy(&mut c, &archive, "fleet/app", &format!("f{i}"), None)
                .await
                .unwrap();
            use proto::deploy_response::Response as Out;
            let Some(Out::ImageTransferReady(ready)) = &answers[0].response else {
                panic!("first answer is not ImageTransferReady: {answers:?}")
            };
            assert!(ready.chunk_size > 0 && ready.chunk_size <= 4 << 20);
            let progress: Vec<u64> = answers
                .iter()
                .filter_map(|a| match &a.response {
                    Some(Out::ImageTransferProgress(p)) => Some(p.bytes_received),
                    _ => None,
                })
                .collect();
            assert_eq!(
                progress.len() as u64,
                size.div_ceil(ready.chunk_size as u64),
                "one progress message per chunk"
            );
            assert_eq!(progress.last(), Some(&size));
            let Some(Out::ImageTransferSuccess(done)) = &answers.last().unwrap().response else {
                panic!("last answer is not ImageTransferSuccess: {answers:?}")
            };
            assert_eq!(
                (done.name.as_str(), done.tag.as_str()),
                ("fleet/app", format!("f{i}").as_str())
            );
        }
        let listed = images(&mut c).await;
        assert_eq!(listed.len(), 4, "{listed:?}");
        assert!(
            listed
                .iter()
                .all(|i| i.image_name == "fleet/app" && i.id.starts_with("sha256:"))
        );
        // The deployed image runs under ctr: containerd accepts what Deploy made.
        let out = cd.ctr(&[
            "run",
            "--rm",
            "docker.io/fleet/app:f3",
            "probe",
            "cat",
            "/etc/version",
        ]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "f3",
            "{}",
            common::describe(&out)
        );

        // Filters and limit.
        let mut s = c
            .list_image(proto::ListImageRequest {
                limit: 0,
                filter: vec![proto::list_image_request::Filter {
                    key: "tag".into(),
                    value: vec!["f1".into(), "f2".into()],
                }],
            })
            .await
            .unwrap()
            .into_inner();
        let mut tags = Vec::new();
        while let Some(m) = s.message().await.unwrap() {
            tags.push(m.tag);
        }
        tags.sort();
        assert_eq!(tags, vec!["f1", "f2"]);
        let e = c
            .list_image(proto::ListImageRequest {
                limit: 0,
                filter: vec![proto::list_image_request::Filter {
                    key: "colour".into(),
                    value: vec![],
                }],
            })
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), Code::InvalidArgument);
    });
    let before = (cd.images(), cd.snapshots(), cd.content());
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        let archive = docker_archive(cd.dir(), "bad");
        let size = std::fs::metadata(&archive).unwrap().len();
        // More data than announced.
        let e = deploy(&mut c, &archive, "bad", "1", Some(size / 2))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("more data"), "{}", e.message());
        // Less data than announced.
        let e = deploy(&mut c, &archive, "bad", "1", Some(size + 1))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        // Over the disk budget.
        let e = deploy(&mut c, &archive, "bad", "1", Some(1 << 60))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        // Content before the ImageTransfer.
        let e = gnoi::deploy_messages(
            &mut c,
            vec![proto::DeployRequest {
                request: Some(proto::deploy_request::Request::Content(vec![0; 10].into())),
            }],
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        // A broken archive.
        let broken = cd.dir().join("broken.tar");
        std::fs::write(&broken, vec![7u8; 4096]).unwrap();
        let e = deploy(&mut c, &broken, "bad", "1", None).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        // A plugin tarball under a name that is no identifier (tests/plugins.rs has the rest).
        let e = gnoi::deploy_messages(
            &mut c,
            vec![proto::DeployRequest {
                request: Some(proto::deploy_request::Request::ImageTransfer(
                    proto::ImageTransfer {
                        name: "P/Q".into(),
                        is_plugin: true,
                        ..Default::default()
                    },
                )),
            }],
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    });
    // Refused transfers leave nothing behind (the lease is gone, so nothing half-made stays).
    common::wait_until(WAIT, "refused deploys to leave no lease", || {
        cd.leases().is_empty()
    });
    assert_eq!((cd.images(), cd.snapshots(), cd.content()), before);
}

#[test]
fn containers_start_list_log_stop_restart_and_remove_and_cli_sees_them() {
    let cd = Containerd::start();
    let server = Server::start(&cd, &[]);
    let archive = docker_archive(cd.dir(), "1.0");
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        deploy(&mut c, &archive, "app", "1.0", None).await.unwrap();
        let mut r = start_request("app", "1.0", "web", SERVICE);
        r.environment.insert("MODE".into(), "prod".into());
        r.labels.insert("team".into(), "noc".into());
        r.limits = Some(proto::start_container_request::Limits {
            max_cpu: 0.5,
            soft_mem_bytes: 0,
            hard_mem_bytes: 64 << 20,
        });
        let started = c.start_container(r.clone()).await.unwrap().into_inner();
        let Some(proto::start_container_response::Response::StartOk(ok)) = started.response else {
            panic!("{started:?}")
        };
        assert_eq!(ok.instance_name, "web");
        let e = c.start_container(r.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        let e = c
            .start_container(start_request("nosuch", "1", "x", ""))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");

        let listed = containers(&mut c).await;
        let web = listed.iter().find(|l| l.name == "web").expect("web listed");
        assert_eq!(web.status(), Listed::Running);
        assert_eq!(web.image_name, "app:1.0");
        assert_eq!(web.labels.get("team").map(String::as_str), Some("noc"));
        assert!(
            !format!("{listed:?}").contains("prod"),
            "ListContainer never shows environment values: {listed:?}"
        );
        let hash = web.hash.as_ref().expect("image hash");
        assert_eq!(hash.hash.len(), 32, "a sha256 digest");
        let quota = std::fs::read_to_string(cd.cgroup_file("cpu", "web", "cpu.cfs_quota_us")).unwrap();
        assert_eq!(quota.trim(), "50000", "max_cpu 0.5 is half of a 100 ms period");

        // The CLI sees the gNOI instance.
        let list = assert_ok(&tpcm(&cd, &["list", "--json"]));
        assert!(list.contains("\"web\"") && list.contains("app:1.0"), "{list}");

        eventually(WAIT, "the first lines of output", || {
            let mut c = c.clone();
            async move { log_text(&mut c, "web").await.contains("tick 1\n") }
        })
        .await;
        let text = log_text(&mut c, "web").await;
        assert!(text.starts_with("version 1.0 mode=prod\n"), "{text}");
        // Follow: the lines already written, then new ones as they come; every message is a line.
        let mut follow = c
            .log(proto::LogRequest {
                instance_name: "web".into(),
                follow: true,
            })
            .await
            .unwrap()
            .into_inner();
        let already = text.lines().count();
        let mut seen = 0;
        let deadline = tokio::time::Instant::now() + WAIT;
        while seen <= already + 3 {
            let m = tokio::time::timeout_at(deadline, follow.message())
                .await
                .expect("followed log lines within the deadline")
                .unwrap()
                .expect("the follow stream stays open");
            assert!(
                m.msg.ends_with('\n') && m.msg.matches('\n').count() == 1,
                "{:?}",
                m.msg
            );
            seen += 1;
        }
        drop(follow);

        // In use: the image cannot go, a running container cannot be removed without force.
        let e = c
            .remove_image(proto::RemoveImageRequest {
                name: "app".into(),
                tag: "1.0".into(),
                force: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        let e = c
            .remove_container(proto::RemoveContainerRequest {
                name: "web".into(),
                force: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

        c.stop_container(proto::StopContainerRequest {
            instance_name: "web".into(),
            force: false,
            restart: false,
        })
        .await
        .unwrap();
        assert_eq!(status_of(&mut c, "web").await, Listed::Stopped);
        let running_only = c
            .list_container(proto::ListContainerRequest::default())
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap();
        assert!(running_only.is_none(), "a stopped container listed without `all`");
        // Only the name: the stopped instance starts again; a running one is refused (the proto).
        c.start_container(start_request("", "", "web", "")).await.unwrap();
        assert_eq!(status_of(&mut c, "web").await, Listed::Running);
        let e = c
            .start_container(start_request("", "", "web", ""))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        c.stop_container(proto::StopContainerRequest {
            instance_name: "web".into(),
            force: true,
            restart: true,
        })
        .await
        .unwrap();
        assert_eq!(status_of(&mut c, "web").await, Listed::Running);
        let e = c
            .stop_container(proto::StopContainerRequest {
                instance_name: "nosuch".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        // A name that is a path is refused before anything touches the store.
        let escape = format!("../../{}", cd.dir().join("escaped").display());
        for name in [escape.as_str(), "../x", "a b", "-lead"] {
            let e = c
                .stop_container(proto::StopContainerRequest {
                    instance_name: name.into(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e:?}");
            let e = c
                .start_container(start_request("", "", name, ""))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e:?}");
        }
        assert!(!cd.dir().join("escaped.lock").exists());
        assert!(!cd.store_dir().join("x.lock").exists());

        c.remove_container(proto::RemoveContainerRequest {
            name: "web".into(),
            force: true,
        })
        .await
        .unwrap();
        assert_eq!(status_of(&mut c, "web").await, Listed::NotFound);
        // The image was managed apart from the container: it is still there.
        assert_eq!(images(&mut c).await.len(), 1);
        c.remove_image(proto::RemoveImageRequest {
            name: "app".into(),
            tag: "1.0".into(),
            force: false,
        })
        .await
        .unwrap();
        assert!(images(&mut c).await.is_empty());
        let e = c
            .remove_image(proto::RemoveImageRequest {
                name: "app".into(),
                tag: "1.0".into(),
                force: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
    });
    assert!(cd.containers().is_empty(), "{:?}", cd.containers());

    // A CLI install shows in ListContainer.
    let archive = docker_archive(cd.dir(), "2.0");
    assert_ok(&tpcm(
        &cd,
        &[
            "install",
            "cli-app",
            archive.to_str().unwrap(),
            "--args",
            &format!("-- {SERVICE}"),
            "-y",
        ],
    ));
    rt().block_on(async {
        let mut c = server.client("dashboard").await.unwrap();
        assert_eq!(status_of(&mut c, "cli-app").await, Listed::Running);
    });
}

fn log_request(name: &str, follow: bool) -> proto::LogRequest {
    proto::LogRequest {
        instance_name: name.into(),
        follow,
    }
}

#[test]
fn a_followed_log_ends_with_its_instance_and_log_streams_are_bounded() {
    let cd = Containerd::start();
    let server = Server::start(&cd, &[]);
    let archive = docker_archive(cd.dir(), "1.0");
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        deploy(&mut c, &archive, "app", "1.0", None).await.unwrap();
        let cmd = "sh -c 'echo first; trap \"echo last; exit 0\" TERM; while true; do sleep 0.2; done'";
        c.start_container(start_request("app", "1.0", "short", cmd))
            .await
            .unwrap();
        eventually(WAIT, "the first line", || {
            let mut c = c.clone();
            async move { log_text(&mut c, "short").await == "first\n" }
        })
        .await;
        let mut follow = c.log(log_request("short", true)).await.unwrap().into_inner();
        assert_eq!(follow.message().await.unwrap().unwrap().msg, "first\n");
        c.stop_container(proto::StopContainerRequest {
            instance_name: "short".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        // The proto: the stream ends with the instance, after what its process wrote last.
        let rest = tokio::time::timeout(WAIT, drain(follow))
            .await
            .expect("the followed log ended with its instance");
        let rest: Vec<String> = rest.into_iter().map(|m| m.msg).collect();
        // The stop signal goes to the first process only, as docker sends it: the shell's
        // sleep is not killed under it (busybox's sh would report that as "Terminated").
        assert_eq!(rest, ["last\n"]);
        // An instance no longer running: its latest logs, then the end, follow or not.
        let stopped = c.log(log_request("short", true)).await.unwrap().into_inner();
        let all = tokio::time::timeout(WAIT, drain(stopped))
            .await
            .expect("a followed log of a stopped instance returned");
        let all: Vec<String> = all.into_iter().map(|m| m.msg).collect();
        assert_eq!(all.first().map(String::as_str), Some("first\n"), "{all:?}");
        assert_eq!(all.last().map(String::as_str), Some("last\n"), "{all:?}");

        // At most MAX_LOG_STREAMS streams at once, followed or not: one more is refused until
        // one of them closes.
        c.start_container(start_request("app", "1.0", "ticker", SERVICE))
            .await
            .unwrap();
        let mut open = Vec::new();
        for _ in 0..tpcm::containerz::MAX_LOG_STREAMS {
            open.push(c.log(log_request("ticker", true)).await.unwrap().into_inner());
        }
        let e = c.log(log_request("ticker", false)).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("close one"), "{}", e.message());
        drop(open.pop());
        eventually(WAIT, "a stream to be free again", || {
            let mut c = c.clone();
            async move { c.log(log_request("ticker", false)).await.is_ok() }
        })
        .await;
    });
}

#[test]
fn update_container_replaces_the_version_and_rolls_back_a_failing_one() {
    let cd = Containerd::start();
    let server = Server::start(&cd, &[]);
    let store = cd.store_dir();
    std::fs::create_dir_all(&store).unwrap();
    // A short health gate keeps the test quick; the rule is the same.
    std::fs::write(store.join("tpcm.toml"), "upgrade_grace_secs = 2\n").unwrap();
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        for v in ["1", "2", "3"] {
            deploy(&mut c, &docker_archive(cd.dir(), v), "app", v, None)
                .await
                .unwrap();
        }
        c.start_container(start_request("app", "1", "svc", SERVICE))
            .await
            .unwrap();

        // The top-level image wins over params; params replace the settings.
        let mut params = start_request("app", "ignored", "svc", STATEFUL);
        params.environment.insert("MODE".into(), "two".into());
        let done = c
            .update_container(proto::UpdateContainerRequest {
                instance_name: "svc".into(),
                image_name: "app".into(),
                image_tag: "2".into(),
                params: Some(params),
                r#async: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(matches!(
            done.response,
            Some(proto::update_container_response::Response::UpdateOk(_))
        ));
        let listed = containers(&mut c).await;
        assert_eq!(listed[0].image_name, "app:2");
        assert_eq!(listed[0].status(), Listed::Running);
        eventually(WAIT, "version 2 output", || {
            let mut c = c.clone();
            async move { log_text(&mut c, "svc").await.contains("version 2 mode=two") }
        })
        .await;

        // A version that exits at once fails the health gate: rolled back, version 2 runs on.
        let crash = start_request("app", "3", "svc", "sh -c 'echo crashing; exit 3'");
        let e = c
            .update_container(proto::UpdateContainerRequest {
                instance_name: "svc".into(),
                image_name: "app".into(),
                image_tag: "3".into(),
                params: Some(crash.clone()),
                r#async: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Aborted, "{e:?}");
        assert!(e.message().contains("rolled back"), "{}", e.message());
        // The old version came back on its own writable layer: it prints the ID it made.
        eventually(WAIT, "the restored version's output", || {
            let mut c = c.clone();
            async move { states(&log_text(&mut c, "svc").await).len() == 2 }
        })
        .await;
        let ids = states(&log_text(&mut c, "svc").await);
        assert_eq!(ids[0], ids[1], "the rollback did not keep the writable layer");
        let listed = containers(&mut c).await;
        assert_eq!(
            (listed[0].image_name.as_str(), listed[0].status()),
            ("app:2", Listed::Running)
        );

        // Async: the call returns at once; the outcome shows as a label.
        let done = c
            .update_container(proto::UpdateContainerRequest {
                instance_name: "svc".into(),
                image_name: "app".into(),
                image_tag: "3".into(),
                params: Some(crash),
                r#async: true,
            })
            .await
            .unwrap()
            .into_inner();
        let Some(proto::update_container_response::Response::UpdateOk(ok)) = done.response else {
            panic!("{done:?}")
        };
        assert!(ok.is_async);
        eventually(WAIT, "the async update's outcome", || {
            let mut c = c.clone();
            async move {
                containers(&mut c).await[0]
                    .labels
                    .get("io.tpcm.update")
                    .is_some_and(|l| l.starts_with("failed: "))
            }
        })
        .await;
        let listed = containers(&mut c).await;
        assert_eq!(
            (listed[0].image_name.as_str(), listed[0].status()),
            ("app:2", Listed::Running)
        );

        let e = c
            .update_container(proto::UpdateContainerRequest {
                instance_name: "svc".into(),
                image_name: "app".into(),
                image_tag: "9".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        // Every deployed version is kept for the next rollback.
        assert_eq!(images(&mut c).await.len(), 3);
    });
}

#[test]
fn volumes_bind_into_containers() {
    let cd = Containerd::start();
    let server = Server::start(&cd, &[]);
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        let created = c
            .create_volume(proto::CreateVolumeRequest {
                name: "shared".into(),
                driver: proto::Driver::DsLocal as i32,
                labels: [("tier".to_string(), "gold".to_string())].into(),
                options: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(created.name, "shared");
        let e = c
            .create_volume(proto::CreateVolumeRequest {
                name: "shared".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists);
        // DS_CUSTOM without a plugin to serve it (tests/plugins.rs starts one).
        let e = c
            .create_volume(proto::CreateVolumeRequest {
                name: "c".into(),
                driver: proto::Driver::DsCustom as i32,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(e.message().contains("custom"), "{}", e.message());
        let mut s = c
            .list_volume(proto::ListVolumeRequest::default())
            .await
            .unwrap()
            .into_inner();
        let v = s.message().await.unwrap().expect("one volume");
        assert_eq!((v.name.as_str(), v.driver.as_str()), ("shared", "local"));
        assert_eq!(v.labels.get("tier").map(String::as_str), Some("gold"));

        deploy(&mut c, &docker_archive(cd.dir(), "1"), "app", "1", None)
            .await
            .unwrap();
        let mut r = start_request(
            "app",
            "1",
            "writer",
            "sh -c 'echo from-container > /data/out; trap \"exit 0\" TERM; sleep 1000 & wait'",
        );
        r.volumes.push(proto::Volume {
            name: "shared".into(),
            mount_point: "/data".into(),
            read_only: false,
        });
        c.start_container(r).await.unwrap();
        let out = cd.store_dir().join("volumes/shared/data/out");
        common::wait_until(WAIT, "the container to write into the volume", || {
            std::fs::read_to_string(&out).is_ok_and(|t| t == "from-container\n")
        });
        let e = c
            .remove_volume(proto::RemoveVolumeRequest {
                name: "shared".into(),
                force: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        c.remove_container(proto::RemoveContainerRequest {
            name: "writer".into(),
            force: true,
        })
        .await
        .unwrap();
        c.remove_volume(proto::RemoveVolumeRequest {
            name: "shared".into(),
            force: false,
        })
        .await
        .unwrap();
        assert!(!out.exists());
    });
}

#[test]
fn restart_policies_are_honoured_and_a_server_restart_leaves_containers_running() {
    let cd = Containerd::start();
    let mut server = Server::start(&cd, &[]);
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        deploy(&mut c, &docker_archive(cd.dir(), "1"), "app", "1", None)
            .await
            .unwrap();
        // Fails at once, twice restarted, then left stopped: three runs in all.
        let mut r = start_request("app", "1", "flaky", "sh -c 'echo run; exit 1'");
        r.restart = Some(proto::start_container_request::Restart {
            policy: proto::start_container_request::restart::Policy::OnFailure as i32,
            attempts: 2,
        });
        c.start_container(r).await.unwrap();
        eventually(WAIT, "three runs of the flaky container", || {
            let mut c = c.clone();
            async move { log_text(&mut c, "flaky").await.matches("run\n").count() == 3 }
        })
        .await;
        // The supervisor says when it gives up; only then is "three runs" final.
        common::wait_until(WAIT, "the restart limit to be reached", || {
            server.log().contains("restart limit reached")
        });
        assert_eq!(log_text(&mut c, "flaky").await.matches("run\n").count(), 3);
        assert_eq!(status_of(&mut c, "flaky").await, Listed::Stopped);

        let mut r = start_request("app", "1", "steady", SERVICE);
        r.restart = Some(proto::start_container_request::Restart {
            policy: proto::start_container_request::restart::Policy::Always as i32,
            attempts: 0,
        });
        c.start_container(r).await.unwrap();
        assert_eq!(status_of(&mut c, "steady").await, Listed::Running);
        let mut r = start_request("app", "1", "calm", SERVICE);
        r.restart = Some(proto::start_container_request::Restart {
            policy: proto::start_container_request::restart::Policy::UnlessStopped as i32,
            attempts: 0,
        });
        c.start_container(r).await.unwrap();
    });
    let calm_before = cd.tasks().into_iter().find(|t| t.0 == "calm").map(|t| t.1);
    let pid_before = cd.tasks().into_iter().find(|t| t.0 == "steady").map(|t| t.1);
    server.kill();
    // The manager is gone; the container is not.
    assert!(
        cd.tasks().iter().any(|t| t.0 == "steady" && t.2 == "RUNNING"),
        "{:?}",
        cd.tasks()
    );
    let server = Server::start(&cd, &[]);
    rt().block_on(async {
        let mut c = server.client("dashboard").await.unwrap();
        assert_eq!(status_of(&mut c, "steady").await, Listed::Running);
    });
    let pid_after = cd.tasks().into_iter().find(|t| t.0 == "steady").map(|t| t.1);
    assert_eq!(
        pid_before, pid_after,
        "the container was restarted with the server"
    );
    // SIGTERM with a followed log open: the server ends the stream and exits; containers stay.
    let mut server = server;
    rt().block_on(async {
        let mut c = server.client("dashboard").await.unwrap();
        let mut follow = c
            .log(proto::LogRequest {
                instance_name: "steady".into(),
                follow: true,
            })
            .await
            .unwrap()
            .into_inner();
        follow.message().await.unwrap().expect("a first line");
        assert!(
            server.terminate(WAIT),
            "tpcm serve did not stop on SIGTERM:\n{}",
            server.log()
        );
    });
    assert!(
        cd.tasks().iter().any(|t| t.0 == "steady" && t.2 == "RUNNING"),
        "{:?}",
        cd.tasks()
    );
    // Kept alive to the end: it is the server whose supervisor must act.
    let _server = Server::start(&cd, &[]);
    // The restarted server supervises again: a kill of the always-restarted container is undone.
    let killed = cd.ctr(&["tasks", "kill", "-s", "KILL", "steady"]);
    assert!(killed.status.success(), "{}", common::describe(&killed));
    common::wait_until(WAIT, "the always policy to restart the container", || {
        cd.tasks()
            .iter()
            .any(|t| t.0 == "steady" && t.2 == "RUNNING" && Some(t.1) != pid_after)
    });
    // unless-stopped: a kill is undone too (it differs from always only across a runtime restart).
    let killed = cd.ctr(&["tasks", "kill", "-s", "KILL", "calm"]);
    assert!(killed.status.success(), "{}", common::describe(&killed));
    common::wait_until(WAIT, "the unless-stopped policy to restart the container", || {
        cd.tasks()
            .iter()
            .any(|t| t.0 == "calm" && t.2 == "RUNNING" && Some(t.1) != calm_before)
    });
}

#[test]
fn the_janitor_removes_only_what_nothing_owns() {
    let cd = Containerd::start();
    let server = Server::start(&cd, &["--janitor-interval", "1"]);
    std::fs::create_dir_all(cd.store_dir()).unwrap();
    std::fs::write(cd.store_dir().join("tpcm.toml"), "upgrade_grace_secs = 1\n").unwrap();
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        // Each image is used right after its Deploy: an image unused for two sweeps (here 1 s
        // apart) goes, and a slow machine could otherwise lose one before its start.
        deploy(&mut c, &docker_archive(cd.dir(), "kept"), "app", "kept", None)
            .await
            .unwrap();
        c.start_container(start_request("app", "kept", "kept", SERVICE))
            .await
            .unwrap();
        deploy(
            &mut c,
            &docker_archive(cd.dir(), "stopped"),
            "app",
            "stopped",
            None,
        )
        .await
        .unwrap();
        c.start_container(start_request("app", "stopped", "paused", SERVICE))
            .await
            .unwrap();
        // An update leaves the old image behind for a rollback: the janitor must keep it.
        update_to(&mut c, cd.dir(), "kept", "kept2").await;
        deploy(&mut c, &docker_archive(cd.dir(), "unused"), "app", "unused", None)
            .await
            .unwrap();
        c.stop_container(proto::StopContainerRequest {
            instance_name: "paused".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    });
    // A container nobody owns, made by hand and never started.
    let made = cd.ctr(&["containers", "create", "docker.io/library/app:unused", "stray"]);
    assert!(made.status.success(), "{}", common::describe(&made));
    common::wait_until(
        WAIT,
        "the janitor to remove the stray container and the unused image",
        || {
            !cd.containers().contains(&"stray".to_string())
                && !cd.images().iter().any(|i| i.ends_with("app:unused"))
        },
    );
    assert!(server.log().contains("janitor removed"), "{}", server.log());
    let left = cd.containers();
    assert!(
        left.contains(&"kept".to_string()) && left.contains(&"paused".to_string()),
        "{left:?}"
    );
    let images = cd.images();
    assert_eq!(images.len(), 3, "{images:?}");
    assert!(
        images.iter().any(|i| i.ends_with("app:kept")),
        "the rollback target went: {images:?}"
    );
    // The next update makes `kept2` the rollback target; `kept` is then unused and goes.
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        update_to(&mut c, cd.dir(), "kept", "kept3").await;
    });
    common::wait_until(WAIT, "the janitor to remove the former rollback target", || {
        !cd.images().iter().any(|i| i.ends_with("app:kept"))
    });
    let images = cd.images();
    for kept in ["app:kept2", "app:kept3", "app:stopped"] {
        assert!(
            images.iter().any(|i| i.ends_with(kept)),
            "{kept} went: {images:?}"
        );
    }
}

/// Whether a Deploy's answers end with ImageTransferSuccess.
fn transfer_succeeded(answers: &[proto::DeployResponse]) -> bool {
    matches!(
        answers.last().and_then(|a| a.response.as_ref()),
        Some(proto::deploy_response::Response::ImageTransferSuccess(_))
    )
}

/// Deploys `app:<tag>` and updates instance `name` to it (1 s health gate), checking it worked.
async fn update_to(c: &mut ContainerzClient<Channel>, dir: &Path, name: &str, tag: &str) {
    deploy(c, &docker_archive(dir, tag), "app", tag, None)
        .await
        .unwrap();
    c.update_container(proto::UpdateContainerRequest {
        instance_name: name.into(),
        image_name: "app".into(),
        image_tag: tag.into(),
        params: None,
        r#async: false,
    })
    .await
    .unwrap();
}

/// Serves `body` at every path over HTTP/1.1 on 127.0.0.1 until the test ends; returns the port.
/// With `basic_auth` (the `Authorization` header's value after `Basic `), a request without it
/// is answered 401.
fn serve_http(body: Vec<u8>, basic_auth: Option<&'static str>) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let mut authorized = basic_auth.is_none();
            // The request line and headers end at the first empty line.
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if let Some(expected) = basic_auth
                    && line
                        .trim_end()
                        .eq_ignore_ascii_case(&format!("authorization: Basic {expected}"))
                {
                    authorized = true;
                }
                line.clear();
            }
            let answer = if authorized {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                stream
                    .write_all(head.as_bytes())
                    .and_then(|()| stream.write_all(&body))
            } else {
                stream
                    .write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            };
            let _ = answer;
        }
    });
    port
}

#[test]
fn a_remote_download_stops_when_its_deploy_client_goes_away() {
    use proto::gnoi::common::{RemoteDownload, remote_download::Protocol};
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let cd = Containerd::start();
    let server = Server::start(&cd, &[]);
    let before = (cd.images(), cd.snapshots(), cd.content());
    let body = std::fs::read(docker_archive(cd.dir(), "abandoned")).unwrap();
    // An HTTP server that sends the first 32 KiB, then holds the rest until released.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let first_sent = std::sync::Arc::new(AtomicBool::new(false));
    let (release, released) = std::sync::mpsc::channel::<()>();
    let sent = first_sent.clone();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let (first, rest) = body.split_at(32 << 10);
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(first).unwrap();
        sent.store(true, Ordering::SeqCst);
        let _ = released.recv();
        let _ = stream.write_all(rest);
    });
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(proto::DeployRequest {
            request: Some(proto::deploy_request::Request::ImageTransfer(
                proto::ImageTransfer {
                    name: "abandoned".into(),
                    tag: "1".into(),
                    remote_download: Some(RemoteDownload {
                        path: format!("127.0.0.1:{port}/app.tar"),
                        protocol: Protocol::Http as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
        })
        .await
        .unwrap();
        let answers = c
            .deploy(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap();
        eventually(WAIT, "the download to start", || {
            let sent = first_sent.load(Ordering::SeqCst);
            async move { sent }
        })
        .await;
        // The client gives up: both directions of its call go away.
        drop(answers);
        drop(tx);
    });
    release.send(()).unwrap();
    common::wait_until(WAIT, "the abandoned download to stop", || {
        server.log().contains("the Deploy client went away")
    });
    common::wait_until(WAIT, "the abandoned import to leave no lease", || {
        cd.leases().is_empty()
    });
    assert_eq!(
        (cd.images(), cd.snapshots(), cd.content()),
        before,
        "{}",
        server.log()
    );
}

#[test]
fn deploy_with_remote_download_fetches_over_http_and_refuses_what_it_cannot_use() {
    use proto::gnoi::common::{RemoteDownload, remote_download::Protocol};
    let cd = Containerd::start();
    let server = Server::start(&cd, &[]);
    let archive = docker_archive(cd.dir(), "web");
    let port = serve_http(std::fs::read(&archive).unwrap(), None);
    let transfer = |remote: RemoteDownload| {
        vec![proto::DeployRequest {
            request: Some(proto::deploy_request::Request::ImageTransfer(
                proto::ImageTransfer {
                    name: "fetched".into(),
                    tag: "1".into(),
                    remote_download: Some(remote),
                    ..Default::default()
                },
            )),
        }]
    };
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        let answers = gnoi::deploy_messages(
            &mut c,
            transfer(RemoteDownload {
                path: format!("127.0.0.1:{port}/app.tar"),
                protocol: Protocol::Http as i32,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
        assert!(transfer_succeeded(&answers), "{answers:?}");
        assert!(
            images(&mut c)
                .await
                .iter()
                .any(|i| i.image_name == "fetched" && i.tag == "1")
        );
        // Nothing listens here: UNAVAILABLE, and nothing is imported.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = gnoi::deploy_messages(
            &mut c,
            transfer(RemoteDownload {
                path: format!("http://127.0.0.1:{dead}/app.tar"),
                protocol: Protocol::Http as i32,
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        let e = gnoi::deploy_messages(
            &mut c,
            transfer(RemoteDownload {
                path: "127.0.0.1:/x.tar".into(),
                protocol: Protocol::Sftp as i32,
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "SFTP without credentials: {e:?}");
        let e = gnoi::deploy_messages(
            &mut c,
            transfer(RemoteDownload {
                path: format!("127.0.0.1:{port}/app.tar"),
                protocol: Protocol::Http as i32,
                source_vrf: "tpcm-no-vrf".into(),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "an unknown source VRF: {e:?}");
        let e = gnoi::deploy_messages(
            &mut c,
            transfer(RemoteDownload {
                path: format!("127.0.0.1:{port}/app.tar"),
                protocol: Protocol::Http as i32,
                source_address: "203.0.113.77".into(),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "a foreign source_address: {e:?}");
        use proto::gnoi::types::{Credentials, HashType, credentials::Password};
        let with = |protocol: Protocol, password: Password| RemoteDownload {
            path: format!("127.0.0.1:{port}/app.tar"),
            protocol: protocol as i32,
            credentials: Some(Credentials {
                username: "ops".into(),
                password: Some(password),
            }),
            ..Default::default()
        };
        // Credentials for HTTP are sent as basic authentication ("ops:pw" in base64).
        let guarded = serve_http(std::fs::read(&archive).unwrap(), Some("b3BzOnB3"));
        let to_guarded = |remote: RemoteDownload| RemoteDownload {
            path: format!("127.0.0.1:{guarded}/app.tar"),
            ..remote
        };
        let e = gnoi::deploy_messages(
            &mut c,
            transfer(to_guarded(with(
                Protocol::Http,
                Password::Cleartext("wrong".into()),
            ))),
        )
        .await
        .unwrap_err();
        assert!(e.message().contains("401"), "a wrong password: {e:?}");
        let answers = gnoi::deploy_messages(
            &mut c,
            transfer(to_guarded(with(Protocol::Http, Password::Cleartext("pw".into())))),
        )
        .await
        .unwrap();
        assert!(transfer_succeeded(&answers), "{answers:?}");
        let hashed = Password::Hashed(HashType {
            method: 1,
            hash: b"00".to_vec(),
        });
        // A download larger than the disk can take: refused before its bytes are taken.
        let huge = {
            use std::io::{BufRead, BufReader, Write};
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            std::thread::spawn(move || {
                let (mut stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 1u64 << 60);
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&[0u8; 64 << 10]);
            });
            port
        };
        let e = gnoi::deploy_messages(
            &mut c,
            transfer(RemoteDownload {
                path: format!("127.0.0.1:{huge}/huge.tar"),
                protocol: Protocol::Http as i32,
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        let e = gnoi::deploy_messages(&mut c, transfer(with(Protocol::Sftp, hashed)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "hashed password: {e:?}");
        assert!(e.message().contains("cleartext"), "{}", e.message());
    });
    assert_eq!(cd.images().len(), 1, "{:?}", cd.images());
}

#[test]
fn published_ports_reach_the_container_through_the_cni_bridge() {
    let cd = Containerd::start();
    let server = Server::start(&cd, &[]);
    let external = common::free_port();
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        deploy(&mut c, &docker_archive(cd.dir(), "1"), "app", "1", None).await.unwrap();
        let web = "sh -c 'mkdir -p /www; echo hello-from-$(hostname) > /www/index.html; exec httpd -f -p 8080 -h /www'";
        let mut r = start_request("app", "1", "web", web);
        r.ports.push(proto::start_container_request::Port {
            internal: 8080,
            external: external as u32,
        });
        c.start_container(r.clone()).await.unwrap();
        common::wait_until(WAIT, "the published port to answer", || {
            common::http_get(external).is_some_and(|a| a.contains("hello-from-web"))
        });

        // The same host port for another instance: UNAVAILABLE, and nothing is made.
        let mut again = r.clone();
        again.instance_name = "web2".into();
        let e = c.start_container(again).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert!(e.message().contains("web"), "{}", e.message());
        // A port something on the host listens on: UNAVAILABLE.
        let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let mut busy = r.clone();
        busy.instance_name = "web3".into();
        busy.ports[0].external = taken.local_addr().unwrap().port() as u32;
        let e = c.start_container(busy).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert_eq!(containers(&mut c).await.len(), 1);
        assert_eq!(cd.containers(), vec!["web".to_string()], "a refused start left a container");
        for refused in ["web2", "web3"] {
            let netns = PathBuf::from(format!("/run/netns/tpcm-{}-{refused}", cd.namespace()));
            assert!(!netns.exists(), "a refused start left {}", netns.display());
        }
        // Ports on the host network are refused.
        let mut host = r.clone();
        host.instance_name = "web4".into();
        host.network = "host".into();
        let e = c.start_container(host).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        // Equal ones are the container's own port (as featureprofiles sends them), but one a host
        // service holds is refused all the same: UNAVAILABLE, with nothing made.
        let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let held_port = held.local_addr().unwrap().port() as u32;
        let mut host_held = r.clone();
        host_held.instance_name = "web5".into();
        host_held.network = "host".into();
        host_held.ports = vec![proto::start_container_request::Port {
            internal: held_port,
            external: held_port,
        }];
        let e = c.start_container(host_held).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert_eq!(cd.containers(), vec!["web".to_string()], "a refused start left a container");
        drop(held);

        // Stopped, its port taken by a host service: starting it by name is UNAVAILABLE and it
        // stays stopped; once the port is free again it starts and answers.
        c.stop_container(proto::StopContainerRequest {
            instance_name: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let squatter = std::net::TcpListener::bind(("0.0.0.0", external)).unwrap();
        let by_name = proto::StartContainerRequest {
            instance_name: "web".into(),
            ..Default::default()
        };
        let e = c.start_container(by_name.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert!(e.message().contains(&external.to_string()), "{}", e.message());
        assert_eq!(status_of(&mut c, "web").await, Listed::Stopped);
        drop(squatter);
        c.start_container(by_name).await.unwrap();
        common::wait_until(WAIT, "the published port to answer after a start by name", || {
            common::http_get(external).is_some_and(|a| a.contains("hello-from-web"))
        });

        c.remove_container(proto::RemoveContainerRequest {
            name: "web".into(),
            force: true,
        })
        .await
        .unwrap();
    });
    let netns = PathBuf::from(format!("/run/netns/tpcm-{}-web", cd.namespace()));
    assert!(!netns.exists(), "{} was left behind", netns.display());
    // The forwarding rules went with the container.
    let nat = std::process::Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&nat.stdout);
    assert!(
        !rules.contains(&format!("--dport {external} ")),
        "DNAT rules for {external} are left:\n{rules}"
    );
}

/// Every message of a listing stream.
async fn drain<T>(mut s: tonic::Streaming<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        out.push(m);
    }
    out
}

/// The instance names ListContainer (`all`) gives for these filters and limit.
async fn listed(c: &mut ContainerzClient<Channel>, limit: i32, filter: &[(&str, &str)]) -> Vec<String> {
    let filter = filter
        .iter()
        .map(|(k, v)| proto::list_container_request::Filter {
            key: k.to_string(),
            value: vec![v.to_string()],
        })
        .collect();
    let s = c
        .list_container(proto::ListContainerRequest {
            all: true,
            limit,
            filter,
        })
        .await
        .unwrap()
        .into_inner();
    let mut names: Vec<_> = drain(s).await.into_iter().map(|l| l.name).collect();
    names.sort();
    names
}

/// The volume names ListVolume gives for these filters.
async fn volumes(c: &mut ContainerzClient<Channel>, filter: &[(&str, &str)]) -> Vec<String> {
    let filter = filter
        .iter()
        .map(|(k, v)| proto::list_volume_request::Filter {
            key: k.to_string(),
            value: vec![v.to_string()],
        })
        .collect();
    let s = c
        .list_volume(proto::ListVolumeRequest { filter })
        .await
        .unwrap()
        .into_inner();
    let mut names: Vec<_> = drain(s).await.into_iter().map(|v| v.name).collect();
    names.sort();
    names
}

#[test]
fn listings_filter_and_limit_forced_removals_and_unknown_names_answer_as_documented() {
    let cd = Containerd::start();
    let server = Server::start(&cd, &[]);
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        for v in ["1", "2"] {
            deploy(&mut c, &docker_archive(cd.dir(), v), "app", v, None)
                .await
                .unwrap();
        }

        // ListImage: limit, and the name and id filters.
        let all = images(&mut c).await;
        assert_eq!(all.len(), 2, "{all:?}");
        let image_list = |limit, key: &str, value: &str| proto::ListImageRequest {
            limit,
            filter: vec![proto::list_image_request::Filter {
                key: key.into(),
                value: vec![value.into()],
            }],
        };
        let got = drain(
            c.list_image(image_list(1, "name", "app"))
                .await
                .unwrap()
                .into_inner(),
        )
        .await;
        assert_eq!(got.len(), 1, "limit 1: {got:?}");
        let got = drain(
            c.list_image(image_list(0, "name", "docker.io/library/app"))
                .await
                .unwrap()
                .into_inner(),
        )
        .await;
        assert_eq!(got.len(), 2, "full name: {got:?}");
        let got = drain(
            c.list_image(image_list(0, "id", &all[1].id))
                .await
                .unwrap()
                .into_inner(),
        )
        .await;
        assert_eq!(
            got.iter().map(|i| i.tag.as_str()).collect::<Vec<_>>(),
            [all[1].tag.as_str()]
        );

        // Labels in tpcm's own namespace are refused, and nothing is made.
        let mut bad = start_request("app", "1", "bad", SERVICE);
        bad.labels.insert("io.tpcm.tpc".into(), "other".into());
        let e = c.start_container(bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("io.tpcm."), "{}", e.message());
        assert!(cd.containers().is_empty(), "{:?}", cd.containers());

        for (name, tag, tier) in [("one", "1", "gold"), ("two", "2", "silver")] {
            let mut r = start_request("app", tag, name, SERVICE);
            r.labels.insert("tier".into(), tier.into());
            c.start_container(r).await.unwrap();
        }
        c.stop_container(proto::StopContainerRequest {
            instance_name: "two".into(),
            ..Default::default()
        })
        .await
        .unwrap();

        // ListContainer: limit and every filter key.
        assert_eq!(listed(&mut c, 1, &[]).await.len(), 1);
        assert_eq!(listed(&mut c, 0, &[("name", "one")]).await, ["one"]);
        assert_eq!(listed(&mut c, 0, &[("image", "app:2")]).await, ["two"]);
        assert_eq!(
            listed(&mut c, 0, &[("image", "docker.io/library/app:1")]).await,
            ["one"]
        );
        assert_eq!(listed(&mut c, 0, &[("image", "app")]).await, ["one", "two"]);
        assert_eq!(listed(&mut c, 0, &[("status", "stopped")]).await, ["two"]);
        assert_eq!(listed(&mut c, 0, &[("status", "RUNNING")]).await, ["one"]);
        assert_eq!(listed(&mut c, 0, &[("label", "tier=gold")]).await, ["one"]);
        assert_eq!(listed(&mut c, 0, &[("label", "tier")]).await, ["one", "two"]);
        assert_eq!(
            listed(&mut c, 0, &[("label", "tier"), ("status", "running")]).await,
            ["one"],
            "filters combine"
        );
        let e = c
            .list_container(proto::ListContainerRequest {
                all: true,
                limit: 0,
                filter: vec![proto::list_container_request::Filter {
                    key: "colour".into(),
                    value: vec!["red".into()],
                }],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let one = containers(&mut c)
            .await
            .into_iter()
            .find(|l| l.name == "one")
            .unwrap();
        assert_eq!(
            one.labels.get("io.tpcm.image").map(String::as_str),
            Some("docker.io/library/app:1")
        );

        // Unknown instances: NOT_FOUND from UpdateContainer, Log and RemoveContainer.
        let e = c
            .update_container(proto::UpdateContainerRequest {
                instance_name: "ghost".into(),
                image_name: "app".into(),
                image_tag: "2".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let e = match c
            .log(proto::LogRequest {
                instance_name: "ghost".into(),
                follow: false,
            })
            .await
        {
            Err(e) => e,
            Ok(s) => s.into_inner().message().await.unwrap_err(),
        };
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let e = c
            .remove_container(proto::RemoveContainerRequest {
                name: "ghost".into(),
                force: true,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");

        // RemoveImage with force: the image goes, the instance on it keeps running.
        c.remove_image(proto::RemoveImageRequest {
            name: "app".into(),
            tag: "1".into(),
            force: true,
        })
        .await
        .unwrap();
        assert_eq!(images(&mut c).await.len(), 1);
        assert_eq!(status_of(&mut c, "one").await, Listed::Running);

        // ListVolume filters; RemoveVolume with force takes a volume in use.
        for (name, tier) in [("va", "gold"), ("vb", "silver")] {
            c.create_volume(proto::CreateVolumeRequest {
                name: name.into(),
                driver: proto::Driver::DsLocal as i32,
                labels: [("tier".to_string(), tier.to_string())].into(),
                options: None,
            })
            .await
            .unwrap();
        }
        assert_eq!(volumes(&mut c, &[("name", "va")]).await, ["va"]);
        assert_eq!(volumes(&mut c, &[("label", "tier=silver")]).await, ["vb"]);
        assert_eq!(volumes(&mut c, &[("label", "tier")]).await, ["va", "vb"]);
        assert_eq!(volumes(&mut c, &[("driver", "local")]).await, ["va", "vb"]);
        let e = c
            .list_volume(proto::ListVolumeRequest {
                filter: vec![proto::list_volume_request::Filter {
                    key: "size".into(),
                    value: vec!["1".into()],
                }],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let mut r = start_request("app", "2", "binder", SERVICE);
        r.volumes.push(proto::Volume {
            name: "va".into(),
            mount_point: "/data".into(),
            read_only: false,
        });
        c.start_container(r).await.unwrap();
        c.remove_volume(proto::RemoveVolumeRequest {
            name: "va".into(),
            force: true,
        })
        .await
        .unwrap();
        assert_eq!(volumes(&mut c, &[]).await, ["vb"]);
        assert!(!cd.store_dir().join("volumes/va").exists());
    });
    // Every granted write call is logged with the identity that made it.
    let log = server.log();
    for rpc in ["Deploy", "StartContainer", "RemoveImage", "RemoveVolume"] {
        assert!(
            log.lines()
                .any(|l| l.contains("containerz write call") && l.contains("ops-robot") && l.contains(rpc)),
            "no write-call line for {rpc}:\n{log}"
        );
    }
}

#[test]
fn run_as_devices_network_none_and_volume_mountpoints_take_effect() {
    let cd = Containerd::start();
    let server = Server::start(&cd, &[]);
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        deploy(&mut c, &docker_archive(cd.dir(), "1"), "app", "1", None)
            .await
            .unwrap();
        let mut r = start_request(
            "app",
            "1",
            "who",
            "sh -c 'echo uid=$(id -u):$(id -g); echo hi > /dev/xnull && echo device-ok; \
             echo ifaces $(grep -c : /proc/net/dev); trap \"exit 0\" TERM; sleep 1000 & wait'",
        );
        r.run_as = Some(proto::start_container_request::RunAs {
            user: "1234".into(),
            group: "99".into(),
        });
        r.devices.push(proto::Device {
            src_path: "/dev/null".into(),
            dst_path: "/dev/xnull".into(),
            permissions: vec![
                proto::device::Permission::Read as i32,
                proto::device::Permission::Write as i32,
            ],
        });
        r.network = "none".into();
        c.start_container(r).await.unwrap();
        eventually(WAIT, "the container's report", || {
            let mut c = c.clone();
            async move { log_text(&mut c, "who").await.contains("ifaces") }
        })
        .await;
        let log = log_text(&mut c, "who").await;
        assert!(log.contains("uid=1234:99"), "{log}");
        assert!(log.contains("device-ok"), "{log}");
        // Network `none`: its own namespace with loopback only.
        assert!(log.contains("ifaces 1"), "{log}");

        // A volume on an existing host directory: the container writes there, and removing the
        // volume leaves the directory and what is in it.
        let host_dir = cd.dir().join("operator-data");
        std::fs::create_dir_all(&host_dir).unwrap();
        let mount = |mountpoint: String| proto::CreateVolumeRequest {
            name: "ext".into(),
            driver: proto::Driver::DsLocal as i32,
            options: Some(proto::create_volume_request::Options::LocalMountOptions(
                proto::LocalDriverOptions {
                    r#type: proto::local_driver_options::Type::None as i32,
                    options: vec![],
                    mountpoint,
                },
            )),
            ..Default::default()
        };
        let e = c.create_volume(mount("relative/dir".into())).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        c.create_volume(mount(host_dir.display().to_string()))
            .await
            .unwrap();
        let mut w = start_request(
            "app",
            "1",
            "writer",
            "sh -c 'echo kept > /data/note; trap \"exit 0\" TERM; sleep 1000 & wait'",
        );
        w.volumes.push(proto::Volume {
            name: "ext".into(),
            mount_point: "/data".into(),
            read_only: false,
        });
        c.start_container(w).await.unwrap();
        let note = host_dir.join("note");
        common::wait_until(WAIT, "the container to write into the host directory", || {
            std::fs::read_to_string(&note).is_ok_and(|t| t == "kept\n")
        });
        c.remove_container(proto::RemoveContainerRequest {
            name: "writer".into(),
            force: true,
        })
        .await
        .unwrap();
        c.remove_volume(proto::RemoveVolumeRequest {
            name: "ext".into(),
            force: false,
        })
        .await
        .unwrap();
        assert_eq!(std::fs::read_to_string(&note).unwrap(), "kept\n");

        // A custom driver's options need DS_CUSTOM.
        let e = c
            .create_volume(proto::CreateVolumeRequest {
                name: "custom".into(),
                options: Some(proto::create_volume_request::Options::CustomOptions(
                    proto::CustomOptions::default(),
                )),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    });
}

#[test]
fn deploy_with_remote_download_fetches_over_sftp_and_scp_from_a_known_host_only() {
    use proto::gnoi::common::{RemoteDownload, remote_download::Protocol};
    use proto::gnoi::types::{Credentials, credentials::Password};
    let cd = Containerd::start();
    let ssh = sshd::Sshd::start(None);
    let remote = ssh.publish(&docker_archive(cd.dir(), "ssh"), "app.tar");
    // The device knows the server's host key (tpcm serve does not accept new ones by default).
    let known = cd.store_dir().join("known_hosts");
    std::fs::create_dir_all(cd.store_dir()).unwrap();
    std::fs::write(
        &known,
        format!("[127.0.0.1]:{} {}", ssh.port, ssh.host_public_key()),
    )
    .unwrap();
    let server = Server::start(&cd, &[]);
    let transfer = |tag: &str, protocol: Protocol| {
        vec![proto::DeployRequest {
            request: Some(proto::deploy_request::Request::ImageTransfer(
                proto::ImageTransfer {
                    name: "fetched".into(),
                    tag: tag.into(),
                    remote_download: Some(RemoteDownload {
                        path: format!("{}:{}", ssh.server(), remote.display()),
                        protocol: protocol as i32,
                        credentials: Some(Credentials {
                            username: sshd::USER.into(),
                            password: Some(Password::Cleartext(sshd::PASSWORD.into())),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
        }]
    };
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        for (tag, protocol) in [("sftp", Protocol::Sftp), ("scp", Protocol::Scp)] {
            let answers = gnoi::deploy_messages(&mut c, transfer(tag, protocol))
                .await
                .unwrap_or_else(|e| panic!("{tag}: {e:?}"));
            assert!(transfer_succeeded(&answers), "{tag}: {answers:?}");
        }
        let listed: Vec<_> = images(&mut c)
            .await
            .into_iter()
            .filter(|i| i.image_name == "fetched")
            .map(|i| i.tag)
            .collect();
        assert_eq!(listed.len(), 2, "{listed:?}");

        // The host key changes: refused, and nothing more is imported.
        let other = cd.dir().join("other_host_key");
        sshd::keygen(&other);
        let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
        std::fs::write(&known, format!("[127.0.0.1]:{} {other_pub}", ssh.port)).unwrap();
        let e = gnoi::deploy_messages(&mut c, transfer("changed", Protocol::Sftp))
            .await
            .unwrap_err();
        assert!(e.message().contains("CHANGED"), "{e:?}");
        assert_eq!(images(&mut c).await.len(), 2);
    });
}

#[test]
fn location_is_kept_and_reported_as_the_proto_says() {
    use proto::start_container_request::Location;
    const INTENDED: &str = "net.openconfig.containerz.location.intended";
    const ACTUAL: &str = "net.openconfig.containerz.location.actual";
    const REASON: &str = "net.openconfig.containerz.location.reason";
    let cd = Containerd::start();
    let server = Server::start(&cd, &[]);
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        deploy(&mut c, &docker_archive(cd.dir(), "1"), "app", "1", None)
            .await
            .unwrap();
        let mut backup = start_request("app", "1", "on-backup", SERVICE);
        backup.location = Location::LBackup as i32;
        c.start_container(backup).await.unwrap();
        c.start_container(start_request("app", "1", "unset", SERVICE))
            .await
            .unwrap();
        // A label of that name that contradicts the field is refused; one that agrees is fine.
        let mut contradicting = start_request("app", "1", "contradicting", SERVICE);
        contradicting.location = Location::LAll as i32;
        contradicting.labels.insert(INTENDED.into(), "L_PRIMARY".into());
        let e = c.start_container(contradicting).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(INTENDED), "{}", e.message());
        let mut agreeing = start_request("app", "1", "agreeing", SERVICE);
        agreeing.location = Location::LAll as i32;
        agreeing.labels.insert(INTENDED.into(), "L_ALL".into());
        c.start_container(agreeing).await.unwrap();

        let listed = containers(&mut c).await;
        let labels = |name: &str| {
            let x = listed.iter().find(|x| x.name == name).expect(name);
            [INTENDED, ACTUAL, REASON].map(|k| x.labels.get(k).cloned().unwrap_or_default())
        };
        // One supervisor card: everything runs on the primary, and says why when it was meant
        // for elsewhere; an unset location is the primary (as the reference server).
        let [intended, actual, reason] = labels("on-backup");
        assert_eq!((intended.as_str(), actual.as_str()), ("L_BACKUP", "L_PRIMARY"));
        assert!(reason.contains("single supervisor"), "{reason}");
        assert_eq!(
            labels("unset"),
            ["L_PRIMARY".to_string(), "L_PRIMARY".into(), String::new()]
        );
        assert_eq!(labels("agreeing")[0], "L_ALL");

        // The location is the instance's for life: an update keeps it, and cannot change it.
        let mut params = start_request("app", "1", "on-backup", SERVICE);
        params.location = Location::LPrimary as i32;
        let e = c
            .update_container(proto::UpdateContainerRequest {
                instance_name: "on-backup".into(),
                image_name: "app".into(),
                image_tag: "1".into(),
                params: Some(params),
                r#async: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let mut params = start_request("app", "1", "on-backup", SERVICE);
        params.environment.insert("MODE".into(), "two".into());
        c.update_container(proto::UpdateContainerRequest {
            instance_name: "on-backup".into(),
            image_name: "app".into(),
            image_tag: "1".into(),
            params: Some(params),
            r#async: false,
        })
        .await
        .unwrap();
        let listed = containers(&mut c).await;
        let x = listed.iter().find(|x| x.name == "on-backup").unwrap();
        assert_eq!(x.labels.get(INTENDED).map(String::as_str), Some("L_BACKUP"));
    });
}

#[test]
fn serve_runs_from_the_serve_table_of_tpcm_toml_alone_as_its_unit_does() {
    let cd = Containerd::start();
    let pki = gnoi::Pki::new(&cd.dir().join("pki"), &["ops-robot", "dashboard"]);
    let authz = pki.path("authz.toml");
    std::fs::write(&authz, gnoi::AUTHZ).unwrap();
    std::fs::create_dir_all(cd.store_dir()).unwrap();
    std::fs::write(
        cd.store_dir().join("tpcm.toml"),
        format!(
            "[serve]\nlisten = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\nclient_ca = {:?}\n\
             authz = {:?}\ncontent_root = {:?}\nmax_connections_per_address = 1\n",
            pki.path("server.pem"),
            pki.path("server.key"),
            pki.path("ca.pem"),
            authz,
            cd.containerd_root(),
        ),
    )
    .unwrap();
    let server = Server::start_from_config(&cd, &pki.dir);
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        assert!(containers(&mut c).await.is_empty());
        // The file's limit is in force: a second connection from this address is refused.
        assert!(
            server.client("dashboard").await.is_err(),
            "max_connections_per_address = 1 not applied"
        );
        drop(c);
        eventually(WAIT, "the connection's place to be free again", || {
            let server = &server;
            async move { server.client("dashboard").await.is_ok() }
        })
        .await;
    });
}

#[test]
fn serve_names_the_flag_of_each_file_it_cannot_read() {
    let cd = Containerd::start();
    let pki = gnoi::Pki::new(&cd.dir().join("pki"), &[]);
    let authz = pki.dir.join("authz.toml");
    std::fs::write(&authz, "").unwrap();
    let missing = cd.dir().join("no-such.pem");
    let files = [
        ("--tls-cert", pki.path("server.pem")),
        ("--tls-key", pki.path("server.key")),
        ("--client-ca", pki.path("ca.pem")),
        ("--authz", authz.clone()),
    ];
    for (flag, _) in &files {
        let mut cmd = common::tpcm_cmd(&cd);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        for (f, path) in &files {
            cmd.arg(f).arg(if f == flag { &missing } else { path });
        }
        let err = common::assert_fails(&common::run_with_timeout(&mut cmd, common::CMD_TIMEOUT));
        assert!(
            err.contains(&format!("({flag} or [serve] ")) && err.contains(missing.to_str().unwrap()),
            "{flag}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{flag}: {err}");
    }
}

#[test]
fn list_container_reports_health_restarts_and_last_exit_as_labels() {
    let cd = Containerd::start();
    let archive = docker_archive(cd.dir(), "h1");
    // Installed from the CLI with a health check; `tpcm serve` runs the checks here, where
    // systemd does not run the units.
    assert_ok(&tpcm(
        &cd,
        &[
            "install",
            "app",
            archive.to_str().unwrap(),
            "--args",
            &format!(
                "--health-cmd 'test -f /tpc/ok' --health-interval 200ms --health-retries 1 -- {SERVICE}"
            ),
            "-y",
        ],
    ));
    let ok = cd.data_dir().join("app/ok");
    std::fs::write(&ok, "").unwrap();
    let server = Server::start(&cd, &[]);
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        let label = |c: Vec<proto::ListContainerResponse>, key: &str| {
            c.into_iter()
                .find(|c| c.name == "app")
                .and_then(|c| c.labels.get(key).cloned())
        };
        eventually(WAIT, "io.tpcm.health=healthy", || {
            let mut c = c.clone();
            async move { label(containers(&mut c).await, "io.tpcm.health").as_deref() == Some("healthy") }
        })
        .await;
        assert_eq!(
            label(containers(&mut c).await, "io.tpcm.restart-count").as_deref(),
            Some("0")
        );
        std::fs::remove_file(&ok).unwrap();
        eventually(WAIT, "io.tpcm.health=unhealthy", || {
            let mut c = c.clone();
            async move { label(containers(&mut c).await, "io.tpcm.health").as_deref() == Some("unhealthy") }
        })
        .await;
        // An exit the server's supervisor sees is recorded: the last exit's code shows.
        cd.ctr_ok(&["tasks", "kill", "-s", "KILL", "app"]);
        eventually(WAIT, "io.tpcm.last-exit=137", || {
            let mut c = c.clone();
            async move { label(containers(&mut c).await, "io.tpcm.last-exit").as_deref() == Some("137") }
        })
        .await;
        assert_eq!(
            label(containers(&mut c).await, "io.tpcm.health"),
            None,
            "not running"
        );
    });
}
