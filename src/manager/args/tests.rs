//! The `--args` parser, flag by flag.

use super::*;
use crate::tpc_spec::{DeviceMapping, LINUX_CAPABILITIES, PortMapping, Seccomp, VolumeMount, parse_size};
use std::io::Write;

/// tpcm's environment as the tests see it.
fn env_lookup(key: &str) -> Option<OsString> {
    match key {
        "TPCM_T_SET" => Some("from-env".into()),
        "TPCM_T_SPACE" => Some("a b".into()),
        _ => None,
    }
}

fn parse(args: &str) -> Result<ContainerSettings, ArgsError> {
    parse_args_with(
        args,
        &Outside {
            environment: Some(&env_lookup),
            files: true,
        },
    )
}

fn ok(args: &str) -> ContainerSettings {
    parse(args).unwrap_or_else(|e| panic!("{args:?} was refused: {e}"))
}

fn err(args: &str) -> String {
    match parse(args) {
        Ok(a) => panic!("{args:?} was accepted: {a:?}"),
        Err(e) => {
            let s = e.to_string();
            assert!(!s.contains('\n'), "multi-line error for {args:?}: {s}");
            assert!(s.starts_with("--args: "), "{s}");
            s
        }
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn env_file(content: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(content).unwrap();
    f.flush().unwrap();
    f
}

#[test]
fn empty_and_blank_give_the_default() {
    assert_eq!(ok(""), ContainerSettings::default());
    assert_eq!(ok("   \t\n "), ContainerSettings::default());
    assert_eq!(ok("# only a comment"), ContainerSettings::default());
    let d = ContainerSettings::default();
    assert_eq!(d.network, Network::Host);
    assert_eq!(d.restart, RestartPolicy::No);
    assert!(!d.privileged);
}

#[test]
fn public_parse_args_reads_the_process_environment() {
    // PATH is set in any test environment; a bare -e takes it from there.
    let path = std::env::var("PATH").unwrap();
    let a = parse_args("-e PATH").unwrap();
    assert_eq!(a.env, vec![format!("PATH={path}")]);
    assert_eq!(parse_args("").unwrap(), ContainerSettings::default());
}

#[test]
fn env_every_form() {
    let a = ok("-e A=1 --env B=2 --env=C=3 -eD=4 -e=E=5 -e 'F=x y' -e G=");
    assert_eq!(
        a.env,
        strings(&["A=1", "B=2", "C=3", "D=4", "E=5", "F=x y", "G="])
    );
    // A value may hold '=' and start with '-'.
    assert_eq!(ok("-e A=b=c -e -x=1").env, strings(&["A=b=c", "-x=1"]));
}

#[test]
fn bare_env_key_comes_from_tpcm_environment_or_is_left_out() {
    let a = ok("-e TPCM_T_SET -e TPCM_T_UNSET -e TPCM_T_SPACE");
    assert_eq!(a.env, strings(&["TPCM_T_SET=from-env", "TPCM_T_SPACE=a b"]));
}

#[test]
fn env_key_given_twice_keeps_position_and_last_value() {
    let a = ok("-e A=1 -e B=2 -e A=3");
    assert_eq!(a.env, strings(&["A=3", "B=2"]));
}

#[test]
fn env_without_name_is_refused() {
    assert_eq!(err("-e =x"), r#"--args: --env: "=x" has no variable name"#);
    assert_eq!(err("-e ''"), "--args: --env: empty variable name");
}

#[test]
fn env_file_entries_then_env_flags() {
    let f = env_file(
        b"\xEF\xBB\xBF# comment\n\
          A=1\r\n\
          \n\
          \t  B= spaced value \n\
          \x20  # indented comment\n\
          C=\"quoted\"\n\
          TPCM_T_SET\n\
          TPCM_T_UNSET\n\
          TPCM_T_SPACE  \n\
          D=\n\
          E=a=b",
    );
    let p = f.path().display();
    let a = ok(&format!("-e Z=9 --env-file {p} -e A=override"));
    assert_eq!(
        a.env,
        strings(&[
            "A=override",
            "B= spaced value ",
            "C=\"quoted\"",
            "TPCM_T_SET=from-env",
            "TPCM_T_SPACE=a b",
            "D=",
            "E=a=b",
            "Z=9",
        ])
    );
}

#[test]
fn several_env_files_in_order() {
    let f1 = env_file(b"A=1\nB=1\n");
    let f2 = env_file(b"B=2\nC=2\n");
    let a = ok(&format!(
        "--env-file={} --env-file {}",
        f1.path().display(),
        f2.path().display()
    ));
    assert_eq!(a.env, strings(&["A=1", "B=2", "C=2"]));
}

#[test]
fn env_file_errors_name_the_file_and_line() {
    let f = env_file(b"A=1\nB C=2\n");
    let p = f.path().display().to_string();
    assert_eq!(
        err(&format!("--env-file {p}")),
        format!(
            "--args: --env-file: {p}: line 2: the variable name contains whitespace (is this an env file?)"
        )
    );
    let f = env_file(b"A=1\n=2\n");
    let p = f.path().display().to_string();
    assert_eq!(
        err(&format!("--env-file {p}")),
        format!("--args: --env-file: {p}: line 2: no variable name")
    );
    let f = env_file(b"A=\xff\n");
    let p = f.path().display().to_string();
    assert_eq!(
        err(&format!("--env-file {p}")),
        format!("--args: --env-file: {p}: line 1: not UTF-8")
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.env").display().to_string();
    let e = err(&format!("--env-file {missing}"));
    assert!(e.starts_with(&format!("--args: --env-file: {missing}: ")), "{e}");
    assert_eq!(err("--env-file ''"), "--args: --env-file: empty path");
}

#[test]
fn env_file_size_is_bounded() {
    let f = env_file(&vec![b'#'; MAX_ENV_FILE as usize + 1]);
    let e = err(&format!("--env-file {}", f.path().display()));
    assert!(e.ends_with("larger than 1048576 bytes"), "{e}");
}

#[test]
fn volumes() {
    let a = ok(
        "-v /srv/data:/data -v=/etc/x:/etc/x:ro --volume /a/./b/../c/:/mnt//c/:rw \
                --volume='/my dir:/in dir'",
    );
    assert_eq!(
        a.volumes,
        vec![
            VolumeMount {
                host: "/srv/data".into(),
                container: "/data".into(),
                read_only: false
            },
            VolumeMount {
                host: "/etc/x".into(),
                container: "/etc/x".into(),
                read_only: true
            },
            VolumeMount {
                host: "/a/c".into(),
                container: "/mnt/c".into(),
                read_only: false
            },
            VolumeMount {
                host: "/my dir".into(),
                container: "/in dir".into(),
                read_only: false
            },
        ]
    );
}

#[test]
fn bad_volumes_are_refused() {
    assert_eq!(
        err("-v data:/data"),
        r#"--args: --volume: host path "data" is not absolute (named volumes are not supported)"#
    );
    assert_eq!(
        err("-v /data"),
        r#"--args: --volume: "/data": give host:container (anonymous volumes are not supported)"#
    );
    assert_eq!(
        err("-v /a:data"),
        r#"--args: --volume: container path "data" is not absolute"#
    );
    assert_eq!(
        err("-v /a:/b:z"),
        r#"--args: --volume: "z" is not a supported mount option (use ro or rw)"#
    );
    assert_eq!(
        err("-v /a:/b:ro:x"),
        r#"--args: --volume: "/a:/b:ro:x" is not host:container[:ro|rw]"#
    );
    assert_eq!(
        err("-v /a:/"),
        "--args: --volume: cannot mount over the container's /"
    );
    assert_eq!(
        err("-v /a:/x/.."),
        "--args: --volume: cannot mount over the container's /"
    );
    assert_eq!(
        err("-v /a:/data -v /b:/data/"),
        "--args: --volume: /data is mounted twice in the container"
    );
    assert!(err("-v :/data").contains("host path \"\" is not absolute"));
}

#[test]
fn cpus() {
    assert_eq!(ok("--cpus 1.5").cpus, Some(1.5));
    assert_eq!(ok("--cpus=0.25").cpus, Some(0.25));
    assert_eq!(ok("--cpus 1024").cpus, Some(1024.0));
    assert_eq!(
        ok("--cpus 1 --cpus 2").cpus,
        Some(2.0),
        "last one wins, as docker"
    );
    assert_eq!(err("--cpus 0"), r#"--args: --cpus: "0" must be greater than 0"#);
    assert_eq!(err("--cpus -1"), r#"--args: --cpus: "-1" must be greater than 0"#);
    assert_eq!(err("--cpus 1025"), r#"--args: --cpus: "1025" is more than 1024"#);
    assert_eq!(
        err("--cpus 0.001"),
        r#"--args: --cpus: "0.001" is less than the minimum, 0.01"#
    );
    assert_eq!(ok("--cpus 0.01").cpus, Some(0.01));
    for bad in ["abc", "inf", "NaN", "''", "1,5"] {
        assert!(
            err(&format!("--cpus {bad}")).contains("is not a number of CPUs"),
            "{bad}"
        );
    }
}

#[test]
fn sizes() {
    let k = 1024u64;
    for (s, n) in [
        ("0", 0),
        ("1", 1),
        ("1024", 1024),
        ("1b", 1),
        ("1B", 1),
        ("1k", k),
        ("1K", k),
        ("1kb", k),
        ("1KiB", k),
        ("1ki", k),
        ("512m", 512 * k * k),
        ("512M", 512 * k * k),
        ("64MiB", 64 * k * k),
        ("1g", k * k * k),
        ("1.5g", 3 * k * k * k / 2),
        ("1.5G", 3 * k * k * k / 2),
        ("0.5k", 512),
        ("1.7", 1),
        ("2 g", 2 * k * k * k),
        ("1t", k.pow(4)),
        ("1p", k.pow(5)),
        ("18446744073709551615", u64::MAX),
    ] {
        assert_eq!(parse_size(s), Ok(n), "{s}");
    }
    for s in [
        "", "g", "12q", "1.g", ".5g", "-1", "1x", "1gb2", "1.5.5g", "1  g", " 1g", "1g ", "1bb", "1ib",
        "1e3", "+1",
    ] {
        assert_eq!(
            parse_size(s),
            Err(format!("{s:?} is not a size (use e.g. 512m or 1g)")),
            "{s}"
        );
    }
    for s in [
        "18446744073709551616",
        "16384p",
        "16384.5p",
        "99999999999999999999999g",
    ] {
        assert_eq!(parse_size(s), Err(format!("{s:?} is too large")), "{s}");
    }
}

#[test]
fn memory() {
    let a = ok("-m 512m --memory-reservation=256m");
    assert_eq!(a.memory, Some(512 << 20));
    assert_eq!(a.memory_reservation, Some(256 << 20));
    assert_eq!(ok("--memory=1.5g").memory, Some(3 << 29));
    assert_eq!(ok("-m1g").memory, Some(1 << 30));
    assert_eq!(
        ok("-m 1g --memory-reservation 1g").memory_reservation,
        Some(1 << 30)
    );
    assert_eq!(ok("--memory-reservation 1g").memory_reservation, Some(1 << 30));
    assert_eq!(ok("-m 0").memory, None, "0 means no limit, as docker");
    assert_eq!(ok("-m 6m").memory, Some(6 << 20));
    assert_eq!(
        err("--memory 12q"),
        r#"--args: --memory: "12q" is not a size (use e.g. 512m or 1g)"#
    );
    assert_eq!(
        err("-m 5m"),
        r#"--args: --memory: "5m" is less than the minimum, 6m"#
    );
    assert_eq!(
        err("--memory-reservation 1k"),
        r#"--args: --memory-reservation: "1k" is less than the minimum, 6m"#
    );
    assert_eq!(
        err("-m 512m --memory-reservation 1g"),
        r#"--args: --memory-reservation: 1GiB is more than the memory limit, 512MiB"#
    );
}

#[test]
fn capabilities_are_normalized_and_checked() {
    let a = ok(
        "--cap-add net_admin --cap-add=CAP_SYS_TIME --cap-add Net_Admin --cap-drop all \
                --cap-drop=mknod",
    );
    assert_eq!(a.cap_add, strings(&["CAP_NET_ADMIN", "CAP_SYS_TIME"]));
    assert_eq!(a.cap_drop, strings(&["ALL", "CAP_MKNOD"]));
    assert_eq!(ok("--cap-add ALL").cap_add, strings(&["ALL"]));
    assert_eq!(
        ok("--cap-add checkpoint_restore").cap_add,
        strings(&["CAP_CHECKPOINT_RESTORE"])
    );
    assert_eq!(
        err("--cap-add NET_FLY"),
        r#"--args: --cap-add: unknown capability "NET_FLY""#
    );
    assert_eq!(
        err("--cap-drop CAP_ALL"),
        r#"--args: --cap-drop: unknown capability "CAP_ALL""#
    );
    assert_eq!(err("--cap-add ''"), r#"--args: --cap-add: unknown capability """#);
}

#[test]
fn capability_list_is_complete_and_unique() {
    assert_eq!(LINUX_CAPABILITIES.len(), 41);
    let mut sorted = LINUX_CAPABILITIES.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 41);
    assert!(LINUX_CAPABILITIES.iter().all(|c| c.starts_with("CAP_")));
}

#[test]
fn privileged() {
    assert!(ok("--privileged").privileged);
    assert!(ok("--privileged=true").privileged);
    assert!(ok("--privileged=1").privileged);
    assert!(!ok("--privileged=false").privileged);
    assert!(!ok("").privileged);
    // A bare --privileged never takes the next word as its value.
    let a = ok("--privileged sh -c true");
    assert!(a.privileged);
    assert_eq!(a.command, strings(&["sh", "-c", "true"]));
    assert_eq!(
        err("--privileged=maybe"),
        r#"--args: --privileged: "maybe" is not true or false"#
    );
}

#[test]
fn user() {
    assert_eq!(ok("-u 1000").user.as_deref(), Some("1000"));
    assert_eq!(ok("--user=1000:1000").user.as_deref(), Some("1000:1000"));
    assert_eq!(ok("-uapp:staff").user.as_deref(), Some("app:staff"));
    assert_eq!(ok("-u ''").user, None);
    for bad in [":g", "u:", "a:b:c", "'a b'"] {
        assert!(err(&format!("-u {bad}")).contains("is not user[:group]"), "{bad}");
    }
}

#[test]
fn workdir() {
    assert_eq!(ok("-w /app").workdir.as_deref(), Some("/app"));
    assert_eq!(ok("--workdir=/a b").workdir.as_deref(), Some("/a"));
    assert_eq!(ok("--workdir '/a b'").workdir.as_deref(), Some("/a b"));
    assert_eq!(ok("-w ''").workdir, None);
    assert_eq!(
        err("-w app"),
        r#"--args: --workdir: "app" is not an absolute path"#
    );
}

#[test]
fn entrypoint_is_one_executable_and_empty_resets() {
    assert_eq!(
        ok("--entrypoint /bin/app").entrypoint,
        Some(strings(&["/bin/app"]))
    );
    assert_eq!(
        ok("--entrypoint '/bin/sh -c'").entrypoint,
        Some(strings(&["/bin/sh -c"])),
        "docker does not split the entrypoint"
    );
    assert_eq!(ok("--entrypoint ''").entrypoint, Some(vec![]));
    assert_eq!(ok("--entrypoint=").entrypoint, Some(vec![]));
    assert_eq!(ok("").entrypoint, None);
    let a = ok("--entrypoint /bin/sh -- -c 'echo hi'");
    assert_eq!(a.entrypoint, Some(strings(&["/bin/sh"])));
    assert_eq!(a.command, strings(&["-c", "echo hi"]));
}

#[test]
fn hostnames() {
    let a = ok("--network none --hostname tpc-1");
    assert_eq!(a.hostname.as_deref(), Some("tpc-1"));
    assert_eq!(a.network, Network::None);
    assert_eq!(ok("-h a.b.c --net=none").hostname.as_deref(), Some("a.b.c"));
    assert_eq!(ok("--hostname ''").hostname, None);
    // As docker: the container has its own UTS namespace on the host network too.
    assert_eq!(ok("--hostname tpc").hostname.as_deref(), Some("tpc"));
    assert_eq!(
        err("--hostname tpc --uts host"),
        "--args: --uts: host conflicts with --hostname"
    );
    for bad in ["-a", "a-", "a..b", "a_b", "'a b'", &"a".repeat(65)] {
        assert!(
            err(&format!("--network none --hostname {bad}")).contains("is not a valid host name"),
            "{bad}"
        );
    }
    assert!(
        ok(&format!("--network none -h {}", "a".repeat(64)))
            .hostname
            .is_some()
    );
}

#[test]
fn published_ports_need_the_bridge_and_are_checked() {
    let a = ok("--network bridge -p 8080:80 -p 0.0.0.0:5353:53/udp");
    assert_eq!(a.network, Network::Bridge);
    let p = |host, container, protocol: &str| PortMapping {
        host,
        container,
        protocol: protocol.into(),
    };
    assert_eq!(a.ports, vec![p(8080, 80, "tcp"), p(5353, 53, "udp")]);
    assert!(err("--network bridge -p 80").contains("is not host:container"));
    assert!(err("--network bridge -p 0:80").contains("is not host:container"));
    assert!(err("--network bridge -p 80:80/sctp").contains("not tcp or udp"));
    assert!(err("--network bridge -p 10.0.0.1:80:80").contains("not supported"));
    assert!(err("--network bridge -p 80:80 -p 80:81").contains("given twice"));
    assert_eq!(ok("--network bridge -p 80:80 -p 80:80/udp").ports.len(), 2);
    assert_eq!(
        ok("--network bridge --hostname web").hostname.as_deref(),
        Some("web")
    );
}

#[test]
fn network() {
    assert_eq!(ok("--network host").network, Network::Host);
    assert_eq!(ok("--network=none").network, Network::None);
    assert_eq!(ok("--net none").network, Network::None);
    assert_eq!(
        err("--network bridgeX"),
        r#"--args: --network: "bridgeX" is not supported (use host, none or bridge)"#
    );
    assert!(err("--network container:x").contains("is not supported"));
    assert!(err("--network ''").contains("is not supported"));
}

#[test]
fn devices() {
    let a = ok(
        "--device /dev/net/tun --device=/dev/sda:/dev/xvda --device /dev/ttyS0:rw \
                --device /dev/a:/dev/b:r --device /dev/c:",
    );
    let d = |h: &str, c: &str, p: &str| DeviceMapping {
        host: h.into(),
        container: c.into(),
        permissions: p.into(),
    };
    assert_eq!(
        a.devices,
        vec![
            d("/dev/net/tun", "/dev/net/tun", "rwm"),
            d("/dev/sda", "/dev/xvda", "rwm"),
            d("/dev/ttyS0", "/dev/ttyS0", "rw"),
            d("/dev/a", "/dev/b", "r"),
            d("/dev/c", "/dev/c", "rwm"),
        ]
    );
    assert_eq!(
        ok("--device /dev/a::mw").devices,
        vec![d("/dev/a", "/dev/a", "mw")]
    );
    assert_eq!(
        err("--device /dev/a:/dev/b:rwx"),
        r#"--args: --device: "rwx" is not a set of device permissions (a subset of rwm)"#
    );
    assert_eq!(
        err("--device /dev/a:/dev/b:rr"),
        r#"--args: --device: "rr" is not a set of device permissions (a subset of rwm)"#
    );
    assert_eq!(
        err("--device /dev/a:/dev/b:"),
        r#"--args: --device: "" is not a set of device permissions (a subset of rwm)"#
    );
    assert_eq!(
        err("--device /dev/a:rwx"),
        r#"--args: --device: "rwx" is neither an absolute container path nor permissions (a subset of rwm)"#
    );
    assert_eq!(
        err("--device sda"),
        r#"--args: --device: host path "sda" is not absolute"#
    );
    assert_eq!(
        err("--device /a:/b:r:x"),
        r#"--args: --device: "/a:/b:r:x" is not host[:container[:permissions]]"#
    );
}

#[test]
fn labels() {
    let a = ok("-l a=1 --label b --label=c=x=y -l 'd=with space' -lE=2 -l a=3 -l ' f=lead'");
    let want: BTreeMap<String, String> = [
        ("E", "2"),
        ("a", "3"),
        ("b", ""),
        ("c", "x=y"),
        ("d", "with space"),
        ("f", "lead"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(a.labels, want);
    assert_eq!(err("-l =v"), r#"--args: --label: "=v" has no key"#);
    assert_eq!(err("-l ''"), r#"--args: --label: "" has no key"#);
    assert_eq!(
        err("-l 'a b=c'"),
        r#"--args: --label: key "a b" contains whitespace or a control character"#
    );
}

#[test]
fn health_checks() {
    assert_eq!(ok("").health, None);
    assert_eq!(
        ok("--health-cmd 'test -f /tmp/ok'").health,
        Some(HealthCheck::Cmd("test -f /tmp/ok".into()))
    );
    assert_eq!(ok("--health-tcp 8080").health, Some(HealthCheck::Tcp(8080)));
    assert_eq!(
        ok("--health-http http://127.0.0.1:8080/health").health,
        Some(HealthCheck::Http("http://127.0.0.1:8080/health".into()))
    );
    assert!(err("--health-tcp 0").contains("--health-tcp"));
    assert!(err("--health-http ftp://x").contains("not an http:// URL"));
    assert!(err("--health-cmd ''").contains("needs a command"));
    assert!(err("--health-cmd true --health-tcp 80").contains("give one of"));
}

#[test]
fn restart_policies() {
    for (s, p) in [
        ("no", RestartPolicy::No),
        ("''", RestartPolicy::No),
        ("always", RestartPolicy::Always),
        ("unless-stopped", RestartPolicy::UnlessStopped),
        ("on-failure", RestartPolicy::OnFailure { max_retries: None }),
        ("on-failure:0", RestartPolicy::OnFailure { max_retries: None }),
        ("on-failure:3", RestartPolicy::OnFailure { max_retries: Some(3) }),
    ] {
        assert_eq!(ok(&format!("--restart {s}")).restart, p, "{s}");
    }
    assert_eq!(ok("--restart=always").restart, RestartPolicy::Always);
    assert_eq!(
        err("--restart sometimes"),
        r#"--args: --restart: "sometimes" is not a restart policy (use no, always, unless-stopped or on-failure[:N])"#
    );
    assert_eq!(
        err("--restart always:3"),
        r#"--args: --restart: "always:3": only on-failure takes a retry count (use no, always, unless-stopped or on-failure[:N])"#
    );
    for bad in ["on-failure:-1", "on-failure:x", "on-failure:"] {
        assert!(
            err(&format!("--restart {bad}")).contains("is not a retry count"),
            "{bad}"
        );
    }
}

#[test]
fn restart_policy_display_round_trips() {
    for p in [
        RestartPolicy::No,
        RestartPolicy::Always,
        RestartPolicy::UnlessStopped,
        RestartPolicy::OnFailure { max_retries: None },
        RestartPolicy::OnFailure { max_retries: Some(5) },
    ] {
        assert_eq!(p.to_string().parse::<RestartPolicy>(), Ok(p));
    }
    assert_eq!(
        RestartPolicy::OnFailure { max_retries: Some(5) }.to_string(),
        "on-failure:5"
    );
    assert_eq!(Network::None.to_string(), "none");
}

#[test]
fn command_after_first_word() {
    let a = ok("-e A=1 sh -c 'echo hi; sleep 1' -e B=2 --privileged");
    assert_eq!(a.env, strings(&["A=1"]));
    assert!(!a.privileged, "flags after the command belong to the command");
    assert_eq!(
        a.command,
        strings(&["sh", "-c", "echo hi; sleep 1", "-e", "B=2", "--privileged"])
    );
    // '--' after the command is the command's.
    assert_eq!(ok("app -- x").command, strings(&["app", "--", "x"]));
}

#[test]
fn command_after_double_dash() {
    let a = ok("-m 1g -- -weird --flag");
    assert_eq!(a.memory, Some(1 << 30));
    assert_eq!(a.command, strings(&["-weird", "--flag"]));
    assert_eq!(ok("--").command, Vec::<String>::new());
    assert_eq!(ok("-- ''").command, strings(&[""]));
}

#[test]
fn quoting_follows_the_shell_without_expansion() {
    let a = ok(r#"-e "A=hello world" -e 'B=$HOME' -e C=a\ b -l k="it's" echo "a  b" '*'"#);
    assert_eq!(a.env, strings(&["A=hello world", "B=$HOME", "C=a b"]));
    assert_eq!(a.labels["k"], "it's");
    assert_eq!(a.command, strings(&["echo", "a  b", "*"]));
    // '#' starts a comment only at the start of a word.
    let a = ok("-l color=#fff # a comment -e X=1");
    assert_eq!(a.labels["color"], "#fff");
    assert!(a.env.is_empty());
}

#[test]
fn unbalanced_quotes() {
    assert_eq!(err("-e 'A=1"), "--args: unbalanced quotes");
    assert_eq!(err("-e \"A=1"), "--args: unbalanced quotes");
}

#[test]
fn nul_is_refused() {
    assert_eq!(err("-e A=\0"), "--args: contains a NUL character");
}

#[test]
fn unknown_flags_are_named() {
    assert_eq!(err("--foo"), "--args: unknown flag --foo");
    assert_eq!(err("--foo=bar"), "--args: unknown flag --foo");
    assert_eq!(err("-e A=1 --foo bar"), "--args: unknown flag --foo");
    assert_eq!(err("-x"), "--args: unknown flag -x");
    assert_eq!(err("--help"), "--args: unknown flag --help");
    assert_eq!(
        err("-d"),
        "--args: unknown flag -d (every TPC runs detached, under its systemd unit)"
    );
    assert_eq!(
        err("-it"),
        "--args: unknown flag -i (a TPC runs without a terminal or standard input)"
    );
    assert_eq!(
        err("-P"),
        "--args: unknown flag -P (publish each port with -p host:container (and --network bridge))"
    );
    assert!(err("-p 80:8080").contains("both numbers must be equal"));
    assert_eq!(
        ok("-p 80:80").ports.len(),
        1,
        "the container's own port on the host network"
    );
    assert!(err("--network none -p 80:80").contains("--network none has no ports"));
    assert_eq!(
        err("--name x"),
        "--args: unknown flag --name (the TPC's name is the argument of tpcm install)"
    );
    assert_eq!(
        err("--memroy 1g"),
        "--args: unknown flag --memroy (did you mean --memory?)"
    );
    // A docker flag tpcm does not have is named as docker's, not guessed at.
    assert_eq!(
        err("--ipc host"),
        "--args: unknown flag --ipc (docker's --ipc is not supported by tpcm; docs/args.md lists what is)"
    );
    assert_eq!(
        err("--volumes-from x"),
        "--args: unknown flag --volumes-from (docker's --volumes-from is not supported by tpcm; docs/args.md lists what is)"
    );
    // No far-fetched suggestion.
    assert_eq!(
        err("--initx"),
        "--args: unknown flag --initx (did you mean --init?)"
    );
    assert_eq!(err("--quux"), "--args: unknown flag --quux");
}

#[test]
fn security_options() {
    let a =
        ok("--security-opt seccomp=unconfined --security-opt no-new-privileges --security-opt apparmor=tpc");
    assert_eq!(a.security.seccomp, Seccomp::Unconfined);
    assert!(a.security.no_new_privileges);
    assert_eq!(a.security.apparmor.as_deref(), Some("tpc"));
    assert!(
        !ok("--security-opt no-new-privileges=false")
            .security
            .no_new_privileges
    );
    assert!(
        ok("--security-opt no-new-privileges:true")
            .security
            .no_new_privileges
    );
    assert_eq!(
        ok("--security-opt seccomp=builtin").security.seccomp,
        Seccomp::Default
    );
    let profile = env_file(
        br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
    );
    let a = ok(&format!("--security-opt seccomp={}", profile.path().display()));
    let Seccomp::Custom(json) = a.security.seccomp else {
        panic!()
    };
    assert!(json.contains("mkdir"), "{json}");
    let bad = env_file(b"{not json");
    assert!(
        err(&format!("--security-opt seccomp={}", bad.path().display())).contains("not a seccomp profile")
    );
    assert!(err("--security-opt seccomp=/nonexistent.json").contains("No such file"));
    assert!(err("--security-opt label=disable").contains("SELinux"));
    assert!(err("--security-opt wat").contains("is not supported"));
}

#[test]
fn limits_and_filesystems() {
    let a = ok(
        "--pids-limit 64 --ulimit nofile=1024:4096 --ulimit nproc=-1 --ulimit nofile=2048 --read-only \
         --tmpfs /run --tmpfs /tmp:size=64m,exec --shm-size 128m --oom-score-adj 500 --init",
    );
    assert_eq!(a.pids_limit, Some(64));
    assert_eq!(
        a.ulimits,
        vec![
            crate::tpc_spec::Ulimit {
                name: "nproc".into(),
                soft: u64::MAX,
                hard: u64::MAX
            },
            crate::tpc_spec::Ulimit {
                name: "nofile".into(),
                soft: 2048,
                hard: 2048
            },
        ]
    );
    assert!(a.read_only && a.init);
    assert_eq!(a.tmpfs.get("/run"), Some(&vec![]));
    assert_eq!(a.tmpfs.get("/tmp"), Some(&strings(&["size=64m", "exec"])));
    assert_eq!(a.shm_size, Some(128 << 20));
    assert_eq!(a.oom_score_adj, 500);
    assert_eq!(ok("--pids-limit 0").pids_limit, None, "0 is no limit, as docker");
    assert!(!ok("--read-only=false").read_only);
    assert!(err("--ulimit as=1").contains("not a limit docker knows"));
    assert!(err("--ulimit nofile=10:5").contains("above the hard one"));
    assert!(err("--tmpfs tmp").contains("absolute"));
    assert!(err("--tmpfs /t:bogus=1").contains("not a tmpfs option"));
    assert!(err("--tmpfs /tpc").contains("tpcm's own mount"));
    assert!(err("--oom-score-adj 1001").contains("-1000..=1000"));
    assert!(err("--oom-score-adj x").contains("whole number"));
}

#[test]
fn names_addresses_and_signals() {
    let a = ok(
        "--network none --sysctl net.ipv4.ip_forward=1 --sysctl kernel.shmmax=1000 --add-host db:10.0.0.5 \
         --add-host v6=[fd00::1] --dns 9.9.9.9 --dns-search lab --dns-opt ndots:2 --stop-signal TERM \
         --stop-timeout 30 --uts host",
    );
    assert_eq!(
        a.sysctls.get("net.ipv4.ip_forward").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        a.extra_hosts,
        vec![
            ("db".to_string(), "10.0.0.5".to_string()),
            ("v6".to_string(), "fd00::1".to_string())
        ]
    );
    assert_eq!(a.dns.servers, strings(&["9.9.9.9"]));
    assert_eq!(a.dns.search, strings(&["lab"]));
    assert_eq!(a.dns.options, strings(&["ndots:2"]));
    assert_eq!(a.stop_signal.as_deref(), Some("SIGTERM"));
    assert_eq!(ok("--stop-signal 9").stop_signal.as_deref(), Some("SIGKILL"));
    assert_eq!(a.stop_timeout, Some(30));
    assert!(a.uts_host);
    assert!(err("--sysctl net.ipv4.ip_forward=1").contains("own network"));
    assert!(err("--sysctl kernel.hostname=x").contains("not a namespaced sysctl"));
    assert!(err("--add-host db:not-an-ip").contains("not an IP address"));
    assert!(err("--add-host db:host-gateway").contains("host-gateway"));
    assert!(err("--dns nope").contains("not an IP address"));
    assert!(err("--stop-signal SIGNOPE").contains("not a signal"));
    assert!(err("--uts private").contains("use host"));
}

#[test]
fn health_timing() {
    let a = ok(
        "--health-cmd true --health-interval 5s --health-timeout 1m30s --health-retries 5 --health-start-period 500ms",
    );
    assert_eq!(
        a.health_timing,
        HealthTiming {
            interval_ms: 5_000,
            timeout_ms: 90_000,
            retries: 5,
            start_period_ms: 500
        }
    );
    assert_eq!(ok("--health-cmd true").health_timing, HealthTiming::default());
    assert!(err("--health-interval soon").contains("not a duration"));
    assert!(err("--no-healthcheck --health-cmd true").contains("conflicts"));
    assert_eq!(ok("--no-healthcheck").health, None);
}

#[test]
fn missing_values_name_the_flag() {
    assert_eq!(err("-m"), "--args: --memory needs a value");
    assert_eq!(err("-e"), "--args: --env needs a value");
    assert_eq!(err("--cpus"), "--args: --cpus needs a value");
    assert_eq!(err("-e A=1 --volume"), "--args: --volume needs a value");
    assert_eq!(err("--restart"), "--args: --restart needs a value");
}

#[test]
fn single_value_flags_take_the_last_and_lists_accumulate() {
    let a = ok(
        "-u a -u b -w /x -w /y --restart always --restart no -e A=1 -e B=2 \
                --cap-add NET_ADMIN --cap-add SYS_TIME --device /dev/a --device /dev/b",
    );
    assert_eq!(a.user.as_deref(), Some("b"));
    assert_eq!(a.workdir.as_deref(), Some("/y"));
    assert_eq!(a.restart, RestartPolicy::No);
    assert_eq!(a.env.len(), 2);
    assert_eq!(a.cap_add.len(), 2);
    assert_eq!(a.devices.len(), 2);
}

#[test]
fn a_realistic_combination() {
    let f = env_file(b"LOG_LEVEL=info\n");
    let a = ok(&format!(
        "--env-file {} -e MODE=prod -v /host/tpc/shared/cfg:/etc/app:ro --cpus 0.5 -m 256m \
         --memory-reservation 128m --cap-add NET_ADMIN --cap-drop MKNOD -u 1000:1000 -w /app \
         --entrypoint /usr/bin/app --network none --hostname app1 --device /dev/net/tun \
         -l vendor=acme --restart on-failure:5 serve --port 8080",
        f.path().display()
    ));
    let want = ContainerSettings {
        env: strings(&["LOG_LEVEL=info", "MODE=prod"]),
        volumes: vec![VolumeMount {
            host: "/host/tpc/shared/cfg".into(),
            container: "/etc/app".into(),
            read_only: true,
        }],
        cpus: Some(0.5),
        memory: Some(256 << 20),
        memory_reservation: Some(128 << 20),
        cap_add: strings(&["CAP_NET_ADMIN"]),
        cap_drop: strings(&["CAP_MKNOD"]),
        privileged: false,
        user: Some("1000:1000".into()),
        workdir: Some("/app".into()),
        entrypoint: Some(strings(&["/usr/bin/app"])),
        hostname: Some("app1".into()),
        network: Network::None,
        ports: vec![],
        devices: vec![DeviceMapping {
            host: "/dev/net/tun".into(),
            container: "/dev/net/tun".into(),
            permissions: "rwm".into(),
        }],
        labels: [("vendor".to_string(), "acme".to_string())].into(),
        restart: RestartPolicy::OnFailure { max_retries: Some(5) },
        health: None,
        command: strings(&["serve", "--port", "8080"]),
        ..ContainerSettings::default()
    };
    assert_eq!(a, want);
}

#[test]
fn serde_round_trip_and_defaults() {
    let a = ok(
        "-e A=1 -v /a:/b:ro --cpus 2 -m 1g --network none --restart on-failure:2 \
                --device /dev/x:r -l k=v cmd",
    );
    let json = serde_json::to_string(&a).unwrap();
    assert!(json.contains(r#""network":"none""#), "{json}");
    assert!(json.contains(r#""restart":"on-failure:2""#), "{json}");
    let back: ContainerSettings = serde_json::from_str(&json).unwrap();
    assert_eq!(back, a);
    // A record missing fields (written by an older tpcm) still reads.
    let old: ContainerSettings = serde_json::from_str(r#"{"env":["A=1"]}"#).unwrap();
    assert_eq!(old.env, strings(&["A=1"]));
    assert_eq!(old.restart, RestartPolicy::No);
    assert!(serde_json::from_str::<ContainerSettings>(r#"{"restart":"sometimes"}"#).is_err());
    assert!(serde_json::from_str::<ContainerSettings>(r#"{"network":"bridge0"}"#).is_err());
}
