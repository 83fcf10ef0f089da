//! Installing and importing over sftp and scp from a real OpenSSH server on 127.0.0.1 (password
//! and key authentication, host-key checks), into a private containerd per test. tpcm runs with
//! HOME in the test's temp dir, so the machine's own keys and known_hosts play no part.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;
#[path = "support/sshd.rs"]
mod sshd;

use common::{Containerd, assert_fails, assert_ok, tpcm_env};
use sshd::{PASSWORD, Sshd, USER};
use std::path::PathBuf;

fn fixture(cd: &Containerd) -> PathBuf {
    let path = cd.dir().join("busybox.tar.gz");
    builder::write_archive(
        &builder::busybox_image(&["tpcm-fixture/busybox:1.0"]),
        builder::ArchiveFormat::OciLayout,
        true,
        &path,
    )
    .unwrap();
    path
}

fn home(cd: &Containerd) -> String {
    let home = cd.dir().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    home.to_str().unwrap().to_string()
}

/// Runs tpcm with HOME isolated.
fn tpcm(cd: &Containerd, args: &[&str]) -> std::process::Output {
    let home = home(cd);
    tpcm_env(cd, args, &[("HOME", home.as_str())])
}

/// The command failed with exactly one error line (besides notes such as an accepted host key),
/// which is returned.
#[track_caller]
fn one_error(out: &std::process::Output) -> String {
    let stderr = assert_fails(out);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("tpcm: error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        stderr.trim_end().ends_with(errors[0]),
        "the error comes last: {stderr}"
    );
    errors[0].to_string()
}

#[test]
fn sftp_install_with_a_password_records_the_accepted_host_key() {
    let cd = Containerd::start();
    let server = Sshd::start(None);
    let remote = server.publish(&fixture(&cd), "busybox.tar.gz");
    let command = "-- /bin/sh -c 'trap \"exit 0\" TERM; sleep 1000 & wait'";
    let out = tpcm(
        &cd,
        &[
            "install",
            "app",
            "--protocol",
            "sftp",
            "--server",
            &server.server(),
            "--username",
            USER,
            "--password",
            PASSWORD,
            remote.to_str().unwrap(),
            "--args",
            command,
            "-y",
        ],
    );
    let stdout = assert_ok(&out);
    assert!(stdout.contains("[ SUCCESS ]"), "{stdout}");
    // -y accepted the unknown key, said so, and recorded it in the store's known_hosts.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SHA256:"), "{stderr}");
    let known = std::fs::read_to_string(cd.store_dir().join("known_hosts")).unwrap();
    assert!(known.contains(&format!("[127.0.0.1]:{}", server.port)), "{known}");
    let host_key = server.host_public_key();
    let key_b64 = host_key.split_whitespace().nth(1).unwrap();
    assert!(known.contains(key_b64), "{known}");
    let tasks = cd.tasks();
    assert!(
        tasks
            .iter()
            .any(|(id, _, status)| id == "app" && status == "RUNNING"),
        "{tasks:?}"
    );

    // The recorded key is trusted next time without -y (no terminal: nothing could be asked).
    // Upgrade over scp from the same server (a different image: two layers).
    let v2 = cd.dir().join("v2.tar");
    builder::write_archive(
        &builder::busybox_two_layer(&["tpcm-fixture/busybox:2.0"]),
        builder::ArchiveFormat::DockerV12,
        false,
        &v2,
    )
    .unwrap();
    let remote2 = server.publish(&v2, "v2.tar");
    let out = tpcm(
        &cd,
        &[
            "upgrade",
            "app",
            "--protocol",
            "scp",
            "--server",
            &server.server(),
            "--username",
            USER,
            "--password",
            PASSWORD,
            remote2.to_str().unwrap(),
            "--grace",
            "1",
            "-y",
        ],
    );
    let stdout = assert_ok(&out);
    assert!(
        stdout.contains("upgraded") && stdout.contains("busybox:2.0"),
        "{stdout}"
    );
    assert!(
        !cd.images().contains(&builder::FIXTURE_REF.to_string()),
        "old image kept"
    );

    let again = tpcm(
        &cd,
        &[
            "image",
            "import",
            "--protocol",
            "sftp",
            "--server",
            &server.server(),
            "--username",
            USER,
            "--password",
            PASSWORD,
            remote.to_str().unwrap(),
            "--tag",
            "again:1",
        ],
    );
    assert_ok(&again);
    assert!(cd.images().contains(&"docker.io/library/again:1".to_string()));
}

#[test]
fn scp_import_with_a_key() {
    let cd = Containerd::start();
    let key = cd.dir().join("client_key");
    sshd::keygen(&key);
    let server = Sshd::start(Some(&key.with_extension("pub")));
    let remote = server.publish(&fixture(&cd), "busybox.tar.gz");
    let out = tpcm(
        &cd,
        &[
            "image",
            "import",
            "--protocol",
            "scp",
            "--server",
            &server.server(),
            "--username",
            USER,
            "--identity",
            key.to_str().unwrap(),
            remote.to_str().unwrap(),
            "-y",
        ],
    );
    let stdout = assert_ok(&out);
    assert!(
        stdout.contains("Imported docker.io/tpcm-fixture/busybox:1.0"),
        "{stdout}"
    );
    // What scp delivered is what was published: the importer checked every digest, and the
    // content store holds the archive's layer.
    assert!(cd.images().contains(&builder::FIXTURE_REF.to_string()));

    // Without --identity and --password, the user's default key is tried (here over sftp).
    let home = home(&cd);
    std::fs::copy(&key, PathBuf::from(&home).join(".ssh/id_ed25519")).unwrap();
    let out = tpcm(
        &cd,
        &[
            "image",
            "import",
            "--protocol",
            "sftp",
            "--server",
            &server.server(),
            "--username",
            USER,
            remote.to_str().unwrap(),
            "--tag",
            "by-default-key:1",
        ],
    );
    assert_ok(&out);
    assert!(
        cd.images()
            .contains(&"docker.io/library/by-default-key:1".to_string())
    );
}

#[test]
fn refusals_change_nothing() {
    let cd = Containerd::start();
    let server = Sshd::start(None);
    let remote = server.publish(&fixture(&cd), "busybox.tar.gz");
    let remote = remote.to_str().unwrap();
    let srv = server.server();
    let base = |protocol: &'static str, password: &'static str, path: &str| -> Vec<String> {
        [
            "install",
            "app",
            "--protocol",
            protocol,
            "--server",
            &srv,
            "--username",
            USER,
            "--password",
            password,
            path,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tpcm(&cd, &args)
    };

    // Unknown host key, no -y, no terminal: refused, fingerprint shown, nothing recorded.
    let out = run(vec![
        "image".into(),
        "import".into(),
        "--protocol".into(),
        "sftp".into(),
        "--server".into(),
        srv.clone(),
        "--username".into(),
        USER.into(),
        "--password".into(),
        PASSWORD.into(),
        remote.into(),
    ]);
    let err = assert_fails(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("unknown") && err.contains("SHA256:") && err.contains("-y"),
        "{err}"
    );
    assert!(!cd.store_dir().join("known_hosts").exists());

    // Wrong password, for both protocols.
    for protocol in ["sftp", "scp"] {
        let mut args = base(protocol, "wrong-password", remote);
        args.push("-y".into());
        let err = one_error(&run(args));
        assert!(err.contains("wrong password"), "{protocol}: {err}");
    }

    // A missing remote file, for both protocols.
    for protocol in ["sftp", "scp"] {
        let mut args = base(protocol, PASSWORD, "/nonexistent/busybox.tar");
        args.push("-y".into());
        let err = one_error(&run(args));
        assert!(err.contains("/nonexistent/busybox.tar"), "{protocol}: {err}");
        assert!(err.to_lowercase().contains("no such file"), "{protocol}: {err}");
    }

    // A changed host key is refused even with -y.
    let other = cd.dir().join("other_host_key");
    sshd::keygen(&other);
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let known = cd.store_dir().join("known_hosts");
    std::fs::create_dir_all(cd.store_dir()).unwrap();
    std::fs::write(&known, format!("[127.0.0.1]:{} {}", server.port, other_pub)).unwrap();
    let mut args = base("sftp", PASSWORD, remote);
    args.push("-y".into());
    let err = one_error(&run(args));
    assert!(err.contains("CHANGED"), "{err}");

    cd.assert_empty("after the refusals");
    assert!(!cd.store_dir().join("tpcs/app.json").exists());
}

#[test]
fn a_password_is_asked_on_a_terminal_and_refused_without_one() {
    let cd = Containerd::start();
    let server = Sshd::start(None);
    let remote = server.publish(&fixture(&cd), "busybox.tar.gz");
    let import = format!(
        "{} image import --protocol sftp --server {} --username {USER} {} -y",
        env!("CARGO_BIN_EXE_tpcm"),
        server.server(),
        remote.display()
    );
    // No terminal: refused, saying how to give it.
    let args: Vec<&str> = import.split(' ').skip(1).collect();
    let err = assert_fails(&tpcm(&cd, &args));
    assert!(err.contains("--password"), "{err}");
    cd.assert_empty("no password and no terminal");

    // On a terminal (script(1) gives one), the password typed in is used.
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qefc", &import, "/dev/null"])
        .env("HOME", home(&cd))
        .env("TPCM_CONTAINERD", cd.socket())
        .env("TPCM_NAMESPACE", cd.namespace())
        .env("TPCM_ROOT", cd.store_dir())
        .env("TPCM_DATA_ROOT", cd.data_dir())
        .env("TPCM_SYSTEMD_DIR", cd.units_dir());
    let out = common::run_with_input(&mut cmd, format!("{PASSWORD}\n").as_bytes(), common::CMD_TIMEOUT);
    let screen = assert_ok(&out);
    assert!(screen.contains("password:"), "no prompt in {screen:?}");
    assert!(
        cd.images().contains(&builder::FIXTURE_REF.to_string()),
        "{screen}"
    );
}
