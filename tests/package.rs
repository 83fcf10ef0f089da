//! The Debian package: built by `scripts/package.sh` (cargo zigbuild against glibc 2.28, cargo
//! deb), or taken from `TPCM_DEB` when `scripts/test.sh` built it earlier in the same run. Its
//! contents (binary size and glibc ceiling, units, completions and man pages that match the CLI,
//! the default tpcm.toml, docs), and its maintainer scripts run by a real dpkg: installed into a
//! scratch root (`dpkg --root`), upgraded with an operator's choices kept, removed and purged; and
//! installed on a root where systemd runs (an overlay of this machine's own root, with a
//! recording `systemctl`), where the scripts talk to systemd but never start tpcm-serve.

mod common;

use clap::CommandFactory;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The most a stripped binary may weigh (the issue's bound: 20 MB).
const MAX_BINARY_BYTES: u64 = 20_000_000;
/// The newest glibc the binary may need: bullseye's SONiC has 2.31, the target is 2.28.
const GLIBC_CEILING: (u32, u32) = (2, 28);

fn run(cmd: &mut Command) -> Output {
    let out = common::run_with_timeout(cmd, std::time::Duration::from_secs(300));
    assert!(out.status.success(), "{cmd:?}: {}", common::describe(&out));
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The .deb under test: `TPCM_DEB`, else built now (once per test binary).
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        if let Some(p) = std::env::var_os("TPCM_DEB") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "TPCM_DEB={} is not a file", p.display());
            return p;
        }
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/package.sh"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run scripts/package.sh");
        assert!(out.status.success(), "scripts/package.sh failed");
        PathBuf::from(stdout(&out).lines().last().expect("the .deb's path").trim())
    })
}

/// The package's files, unpacked once (`dpkg-deb -x`).
fn unpacked() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("tpcm-deb-")
            .tempdir()
            .unwrap()
            .keep();
        run(Command::new("dpkg-deb").arg("-x").arg(deb()).arg(&dir));
        dir
    })
}

fn field(name: &str) -> String {
    stdout(&run(Command::new("dpkg-deb").arg("-f").arg(deb()).arg(name)))
        .trim()
        .to_string()
}

fn gunzip(path: &Path) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text
}

/// The visible subcommands of the CLI as clap defines it, nested ones as `image import`.
fn visible_commands() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_string());
            out.push(path.clone());
            walk(sub, &path, out);
        }
    }
    let mut out = Vec::new();
    walk(&tpcm::cli::Cli::command(), &[], &mut out);
    out
}

/// `GLIBC_x.y` versions the binary's dynamic symbols need.
fn glibc_versions(binary: &Path) -> Vec<(u32, u32)> {
    let text = stdout(&run(Command::new("objdump").arg("-T").arg(binary)));
    let mut versions: Vec<(u32, u32)> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

#[test]
fn the_package_is_named_and_described_for_dpkg() {
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        deb().file_name().unwrap().to_string_lossy(),
        format!("tpcm_{version}_amd64.deb")
    );
    assert_eq!(field("Package"), "tpcm");
    assert_eq!(field("Version"), version);
    assert_eq!(field("Architecture"), "amd64");
    let depends = field("Depends");
    assert!(depends.contains("init-system-helpers"), "{depends}");
    // The libc6 dependency is what the binary really needs, and no more than bullseye has.
    let needed = *glibc_versions(&unpacked().join("usr/bin/tpcm")).last().unwrap();
    let declared = depends
        .split(',')
        .find_map(|d| d.trim().strip_prefix("libc6 (>= ")?.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no libc6 (>= x.y) in {depends}"));
    let (major, minor) = declared.split_once('.').unwrap();
    let declared = (major.parse::<u32>().unwrap(), minor.parse::<u32>().unwrap());
    assert!(
        declared >= needed,
        "Depends libc6 (>= {declared:?}) but the binary needs {needed:?}"
    );
    assert!(declared <= GLIBC_CEILING, "{depends}");
}

#[test]
fn the_binary_is_stripped_small_and_runs_on_glibc_2_28() {
    let binary = unpacked().join("usr/bin/tpcm");
    let size = std::fs::metadata(&binary).unwrap().len();
    eprintln!("packaged binary: {size} bytes");
    assert!(size <= MAX_BINARY_BYTES, "{size} bytes > {MAX_BINARY_BYTES}");
    let sections = stdout(&run(Command::new("readelf").arg("-S").arg(&binary)));
    assert!(!sections.contains(".symtab"), "not stripped: {sections}");
    let versions = glibc_versions(&binary);
    let newest = *versions.last().expect("GLIBC_ symbol versions");
    eprintln!("newest GLIBC symbol version: {}.{}", newest.0, newest.1);
    assert!(
        newest <= GLIBC_CEILING,
        "the binary needs GLIBC_{}.{} (all: {versions:?})",
        newest.0,
        newest.1
    );
    let interp = stdout(&run(Command::new("readelf").arg("-l").arg(&binary)));
    assert!(interp.contains("/lib64/ld-linux-x86-64.so.2"), "{interp}");
}

#[test]
fn the_package_holds_units_completions_man_pages_config_and_docs() {
    let root = unpacked();
    let boot = std::fs::read_to_string(root.join("lib/systemd/system/tpcm.service")).unwrap();
    assert_eq!(
        boot,
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/tpcm.service")).unwrap()
    );
    let serve = std::fs::read_to_string(root.join("lib/systemd/system/tpcm-serve.service")).unwrap();
    assert!(serve.contains("ExecStart=/usr/bin/tpcm serve\n"), "{serve}");

    let bash = std::fs::read_to_string(root.join("usr/share/bash-completion/completions/tpcm")).unwrap();
    let zsh = std::fs::read_to_string(root.join("usr/share/zsh/vendor-completions/_tpcm")).unwrap();
    let fish = std::fs::read_to_string(root.join("usr/share/fish/vendor_completions.d/tpcm.fish")).unwrap();
    assert!(bash.contains("complete -F _tpcm"), "{bash}");
    assert!(zsh.starts_with("#compdef tpcm"), "{zsh}");
    assert!(fish.contains("complete -c tpcm"), "{fish}");
    // Every command and option of the CLI, and no hidden one, is offered by every shell.
    for path in visible_commands() {
        let name = path.last().unwrap();
        for (shell, text) in [("bash", &bash), ("zsh", &zsh), ("fish", &fish)] {
            assert!(text.contains(name.as_str()), "{shell} completion lacks {path:?}");
        }
    }
    for flag in ["--args", "--skip_data", "--tls-cert", "--containerd"] {
        assert!(bash.contains(flag), "bash completion lacks {flag}");
    }

    let man = root.join("usr/share/man/man1");
    let top = gunzip(&man.join("tpcm.1.gz"));
    assert!(top.contains(".TH tpcm 1"), "{top}");
    assert!(top.contains("install"), "{top}");
    for path in visible_commands() {
        let page = man.join(format!("tpcm-{}.1.gz", path.join("-")));
        let text = gunzip(&page);
        assert!(
            text.contains(".SH NAME") && text.contains(".SH SYNOPSIS") && text.len() > 200,
            "{}: {text}",
            page.display()
        );
    }
    let install = gunzip(&man.join("tpcm-install.1.gz"));
    assert!(install.contains("\\-\\-args"), "{install}");
    assert!(!man.join("tpcm-completions.1.gz").exists());

    let config = std::fs::read_to_string(root.join("usr/share/tpcm/tpcm.toml")).unwrap();
    assert_eq!(
        config,
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/tpcm.toml")).unwrap()
    );
    for doc in [
        "README.md",
        "cli.md",
        "operations.md",
        "packaging.md",
        "containerz.md",
    ] {
        assert!(root.join("usr/share/doc/tpcm").join(doc).is_file(), "{doc}");
    }
    assert!(root.join("usr/share/doc/tpcm/copyright").is_file());
}

/// The hidden generators, run on the test build: a completion script per shell, man pages into
/// a directory, and a missing directory refused in one line with nothing written.
#[test]
fn completions_and_man_pages_are_generated_and_a_missing_directory_is_refused() {
    let tpcm = env!("CARGO_BIN_EXE_tpcm");
    let fish = stdout(&run(Command::new(tpcm).args(["completions", "fish"])));
    assert!(fish.contains("complete -c tpcm"), "{fish}");
    let dir = tempfile::tempdir().unwrap();
    run(Command::new(tpcm).arg("man").arg(dir.path()));
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    let mut expected: Vec<String> = visible_commands()
        .iter()
        .map(|p| format!("tpcm-{}.1", p.join("-")))
        .collect();
    expected.push("tpcm.1".to_string());
    expected.sort();
    assert_eq!(pages, expected);

    let missing = dir.path().join("missing");
    let out = Command::new(tpcm).arg("man").arg(&missing).output().unwrap();
    let err = common::assert_fails(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not a directory"), "{err}");
    assert!(!missing.exists());
    let out = Command::new(tpcm).args(["completions", "tcsh"]).output().unwrap();
    common::assert_fails(&out);
    assert!(
        !stdout(&Command::new(tpcm).arg("--help").output().unwrap()).contains("completions"),
        "the generators are hidden"
    );
}

/// The shipped tpcm.toml sets nothing as shipped, and every commented-out key in it, uncommented,
/// is a key tpcm knows with a value it accepts; the defaults it states are the code's.
#[test]
fn the_default_config_is_all_comments_and_each_key_is_real() {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/tpcm.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tpcm.toml"), &shipped).unwrap();
    assert_eq!(
        tpcm::config::FileConfig::load(dir.path()).unwrap(),
        tpcm::config::FileConfig::default()
    );
    fn setting(l: &str) -> Option<&str> {
        let l = l.strip_prefix("# ")?;
        let is_key = l
            .split_once(" = ")
            .is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        (is_key || (l.starts_with('[') && l.ends_with(']'))).then_some(l)
    }
    let uncommented: String = shipped
        .lines()
        .filter_map(setting)
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(uncommented.lines().count() >= 30, "{uncommented}");
    std::fs::write(dir.path().join("tpcm.toml"), &uncommented).unwrap();
    let all = tpcm::config::FileConfig::load(dir.path()).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert_eq!(
        all.default_cpu_share,
        Some(tpcm::manager::container::DEFAULT_CPU_SHARE)
    );
    assert_eq!(
        all.tpcm_binary.as_deref(),
        Some(Path::new(tpcm::config::DEFAULT_BINARY))
    );
    let serve = all.serve.unwrap();
    assert_eq!(
        serve.listen.as_deref(),
        Some(tpcm::containerz::serve::DEFAULT_LISTEN)
    );
    assert_eq!(
        serve.max_connections,
        Some(tpcm::containerz::serve::DEFAULT_MAX_CONNECTIONS)
    );
    assert_eq!(
        serve.janitor_interval_secs,
        Some(tpcm::containerz::serve::DEFAULT_JANITOR_INTERVAL.as_secs())
    );
    assert!(all.client.is_some());
}

/// A scratch root dpkg can install into: its database knows the packages tpcm depends on, at
/// bullseye's versions (so the Depends line is checked against them, not forced).
fn scratch_root() -> tempfile::TempDir {
    let root = tempfile::Builder::new().prefix("tpcm-root-").tempdir().unwrap();
    let admin = root.path().join("var/lib/dpkg");
    for d in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(d)).unwrap();
    }
    let stub = |name: &str, version: &str| {
        format!(
            "Package: {name}\nStatus: install ok installed\nPriority: required\nSection: libs\n\
             Maintainer: test\nArchitecture: amd64\nVersion: {version}\nDescription: stub\n\n"
        )
    };
    std::fs::write(
        admin.join("status"),
        stub("libc6", "2.31-13+deb11u11") + &stub("init-system-helpers", "1.60"),
    )
    .unwrap();
    std::fs::write(admin.join("available"), "").unwrap();
    root
}

/// `dpkg --root <root> <args>`: maintainer scripts run here, not chrooted, with `DPKG_ROOT` set.
fn dpkg(root: &Path, args: &[&std::ffi::OsStr]) -> Output {
    let out = common::run_with_timeout(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .arg("--force-script-chrootless")
            .arg("--log=/dev/null")
            .args(args)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ),
        std::time::Duration::from_secs(120),
    );
    assert!(out.status.success(), "dpkg {args:?}: {}", common::describe(&out));
    out
}

fn installed_version(root: &Path) -> Option<String> {
    let out = Command::new("dpkg-query")
        .arg(format!("--admindir={}", root.join("var/lib/dpkg").display()))
        .args(["-W", "-f", "${Status} ${Version}", "tpcm"])
        .output()
        .unwrap();
    let text = stdout(&out);
    text.strip_prefix("install ok installed ").map(str::to_string)
}

/// The .deb with another version (what an upgrade installs): unpacked, its control's Version
/// changed, packed again.
fn repacked(version: &str, dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    run(Command::new("dpkg-deb").arg("-R").arg(deb()).arg(&tree));
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("Version: ") {
                format!("Version: {version}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&control, text).unwrap();
    let out = dir.join(format!("tpcm_{version}_amd64.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "-b"])
        .arg(&tree)
        .arg(&out));
    std::fs::remove_dir_all(&tree).unwrap();
    out
}

fn enabled(root: &Path, unit: &str) -> bool {
    root.join("etc/systemd/system/multi-user.target.wants")
        .join(unit)
        .symlink_metadata()
        .is_ok()
}

fn systemctl_root(root: &Path, args: &[&str]) {
    run(Command::new("systemctl")
        .arg(format!("--root={}", root.display()))
        .args(args));
}

/// `systemd-analyze verify` of an installed unit, its ExecStart pointed at the installed binary
/// (verify checks that the program exists, and /usr/bin/tpcm is not this host's).
fn verify_installed_unit(root: &Path, unit: &str) {
    let text = std::fs::read_to_string(root.join("lib/systemd/system").join(unit)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let installed_binary = root.join("usr/bin/tpcm");
    for name in ["tpcm.service", "tpcm-serve.service"] {
        let t = std::fs::read_to_string(root.join("lib/systemd/system").join(name)).unwrap();
        std::fs::write(
            dir.path().join(name),
            t.replace("/usr/bin/tpcm", installed_binary.to_str().unwrap()),
        )
        .unwrap();
    }
    assert!(text.contains("ExecStart=/usr/bin/tpcm "), "{text}");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join(unit))
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !complaints.contains(unit),
        "systemd-analyze verify {unit}: {}",
        common::describe(&out)
    );
}

#[test]
fn dpkg_installs_upgrades_removes_and_purges_it_in_a_scratch_root() {
    common::require_root();
    let version = env!("CARGO_PKG_VERSION");
    let work = tempfile::tempdir().unwrap();
    let r = scratch_root();
    let root = r.path();

    let out = dpkg(root, &["-i".as_ref(), deb().as_os_str()]);
    assert_eq!(installed_version(root).as_deref(), Some(version));
    let binary = root.join("usr/bin/tpcm");
    let v = run(Command::new(&binary).arg("--version"));
    assert_eq!(stdout(&v).trim(), format!("tpcm {version}"));
    let help = stdout(&run(Command::new(&binary).arg("--help")));
    for cmd in [
        "install",
        "upgrade",
        "uninstall",
        "list",
        "image",
        "serve",
        "boot",
    ] {
        assert!(help.contains(&format!("  {cmd} ")), "--help lacks {cmd}: {help}");
    }
    verify_installed_unit(root, "tpcm.service");
    verify_installed_unit(root, "tpcm-serve.service");
    // systemd does not run for this root: the boot unit is installed, not enabled, and the
    // operator is told; nothing is recorded for it, so a later installation under systemd
    // enables it. The server is not enabled either.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("systemd is not running: tpcm.service is not enabled"),
        "{said}"
    );
    assert!(root.join("lib/systemd/system/tpcm.service").is_file());
    assert!(!enabled(root, "tpcm.service"));
    assert!(
        !root
            .join("var/lib/systemd/deb-systemd-helper-enabled/tpcm.service.dsh-also")
            .exists()
    );
    assert!(!enabled(root, "tpcm-serve.service"));
    // The default settings file, where tpcm reads it.
    let config = root.join("host/tpcm/tpcm.toml");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        std::fs::read_to_string(root.join("usr/share/tpcm/tpcm.toml")).unwrap()
    );

    // The operator's choices: server on, a setting; and a TPC installed.
    systemctl_root(root, &["enable", "tpcm-serve.service"]);
    let edited = "default_cpu_share = 0.5\n";
    std::fs::write(&config, edited).unwrap();
    std::fs::create_dir_all(root.join("host/tpcm/tpcs")).unwrap();
    std::fs::write(root.join("host/tpcm/tpcs/app.json"), "{}").unwrap();

    // An upgrade keeps them.
    let newer = repacked(&format!("{version}+1"), work.path());
    dpkg(root, &["-i".as_ref(), newer.as_os_str()]);
    assert_eq!(installed_version(root), Some(format!("{version}+1")));
    assert!(
        !enabled(root, "tpcm.service"),
        "an upgrade without systemd enabled the boot unit"
    );
    assert!(
        enabled(root, "tpcm-serve.service"),
        "the upgrade disabled the server"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);

    // Remove: the program and units go, the settings and the TPCs' store stay, and the
    // operator is told the TPCs are still there.
    let out = dpkg(root, &["-r".as_ref(), "tpcm".as_ref()]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("TPCs stay installed: app"), "{said}");
    assert_eq!(installed_version(root), None);
    assert!(!binary.exists());
    assert!(!root.join("lib/systemd/system/tpcm.service").exists());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);

    // Purge: deb-systemd-helper's records and symlinks go; settings the operator wrote stay.
    let out = dpkg(root, &["-P".as_ref(), "tpcm".as_ref()]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("keeping") && said.contains("tpcm.toml"), "{said}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert!(root.join("host/tpcm/tpcs/app.json").exists());
    for unit in ["tpcm.service", "tpcm-serve.service"] {
        assert!(!enabled(root, unit), "{unit} still enabled after purge");
        assert!(
            root.join("etc/systemd/system")
                .join(unit)
                .symlink_metadata()
                .is_err(),
            "{unit} still masked after purge"
        );
    }
    let state = root.join("var/lib/systemd/deb-systemd-helper-enabled");
    let left: Vec<_> = walk(&state)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("tpcm"))
        .collect();
    assert!(left.is_empty(), "deb-systemd-helper state left: {left:?}");
}

#[test]
fn a_purge_removes_the_default_config_it_made_and_nothing_of_the_store() {
    common::require_root();
    let r = scratch_root();
    let root = r.path();
    dpkg(root, &["-i".as_ref(), deb().as_os_str()]);
    let config = root.join("host/tpcm/tpcm.toml");
    assert!(config.is_file());
    std::fs::create_dir_all(root.join("host/tpc/app")).unwrap();
    dpkg(root, &["-P".as_ref(), "tpcm".as_ref()]);
    assert!(!config.exists(), "the untouched default survived the purge");
    assert!(root.join("host/tpc/app").is_dir());
    assert!(!enabled(root, "tpcm.service"));
}

#[test]
fn an_existing_config_is_left_alone_by_the_first_install() {
    common::require_root();
    let r = scratch_root();
    let root = r.path();
    std::fs::create_dir_all(root.join("host/tpcm")).unwrap();
    // Kept from the previous SONiC image, say.
    std::fs::write(root.join("host/tpcm/tpcm.toml"), "upgrade_grace_secs = 30\n").unwrap();
    dpkg(root, &["-i".as_ref(), deb().as_os_str()]);
    assert_eq!(
        std::fs::read_to_string(root.join("host/tpcm/tpcm.toml")).unwrap(),
        "upgrade_grace_secs = 30\n"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

/// Runs `script` (sh) chrooted into an overlay of this machine's root in a private mount
/// namespace: its dpkg database and tools are this machine's, every write lands in a tmpfs and
/// vanishes with the namespace, `/run/systemd/system` exists (systemd "runs"), `systemctl` is a
/// stand-in that records its arguments in /tmp/calls, and no `policy-rc.d` forbids starting
/// services (a container's root has one; a switch does not). `files` are copied into its /tmp.
/// Returns the script's output.
fn in_overlay_with_systemd(files: &[&Path], script: &str) -> String {
    let scratch = tempfile::Builder::new().prefix("tpcm-ovl-").tempdir().unwrap();
    let t = scratch.path().display();
    let mut setup = format!(
        "set -eu\n\
         mount -t tmpfs tmpfs {t}\n\
         mkdir {t}/upper {t}/work {t}/root\n\
         mount -t overlay overlay -o lowerdir=/,upperdir={t}/upper,workdir={t}/work {t}/root\n\
         mount --rbind /dev {t}/root/dev\n\
         mount -t proc proc {t}/root/proc\n\
         mount -t tmpfs tmpfs {t}/root/run\n\
         mount -t tmpfs tmpfs {t}/root/tmp\n\
         mkdir -p {t}/root/run/systemd/system\n\
         printf '#!/bin/sh\\necho \"systemctl $*\" >>/tmp/calls\\n' >{t}/root/usr/bin/systemctl\n\
         touch {t}/root/tmp/calls\n\
         rm -f {t}/root/usr/sbin/policy-rc.d\n"
    );
    for f in files {
        setup.push_str(&format!("cp {} {t}/root/tmp/\n", f.display()));
    }
    setup.push_str(&format!("exec chroot {t}/root /bin/sh -eu -c \"$1\"\n"));
    let out = common::run_with_timeout(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &setup,
                "sh",
                script,
            ])
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env_remove("DPKG_ROOT"),
        std::time::Duration::from_secs(300),
    );
    assert!(out.status.success(), "{}", common::describe(&out));
    stdout(&out)
}

#[test]
fn where_systemd_runs_the_scripts_reload_it_restart_a_running_server_and_start_nothing() {
    common::require_root();
    let version = env!("CARGO_PKG_VERSION");
    let work = tempfile::tempdir().unwrap();
    let newer = repacked(&format!("{version}+1"), work.path());
    let deb_name = deb().file_name().unwrap().to_string_lossy().into_owned();
    let newer_name = newer.file_name().unwrap().to_string_lossy().into_owned();
    let wants = "/etc/systemd/system/multi-user.target.wants";
    let script = format!(
        "dpkg --log=/dev/null -i /tmp/{deb_name} >/dev/null\n\
         echo '--- installed'; cat /tmp/calls; : >/tmp/calls\n\
         ls {wants} | grep tpcm || true\n\
         ln -s /lib/systemd/system/tpcm-serve.service {wants}/tpcm-serve.service\n\
         rm -f {wants}/tpcm.service\n\
         dpkg --log=/dev/null -i /tmp/{newer_name} >/dev/null\n\
         echo '--- upgraded'; cat /tmp/calls; : >/tmp/calls\n\
         ls {wants} | grep tpcm || true\n\
         dpkg --log=/dev/null -r tpcm >/dev/null 2>&1\n\
         echo '--- removed'; cat /tmp/calls\n"
    );
    let out = in_overlay_with_systemd(&[deb(), &newer], &script);
    let section = |name: &str| -> Vec<String> {
        out.split("--- ")
            .find_map(|s| s.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    let installed = section("installed");
    assert!(
        installed.contains(&"systemctl --system daemon-reload".to_string()),
        "{out}"
    );
    // deb-systemd-helper enables through `systemctl preset` where systemd runs (bookworm's), or
    // makes the symlink itself (bullseye's).
    let enables = |section: &[String], unit: &str| {
        section.iter().any(|l| {
            l == unit
                || (l.starts_with("systemctl")
                    && (l.contains(" preset ") || l.contains(" enable "))
                    && l.ends_with(&format!(" {unit}")))
        })
    };
    assert!(
        enables(&installed, "tpcm.service"),
        "boot unit not enabled: {out}"
    );
    assert!(
        !enables(&installed, "tpcm-serve.service"),
        "server enabled: {out}"
    );
    let upgraded = section("upgraded");
    // The operator disabled the boot unit (its link removed) and enabled the server: the
    // upgrade keeps both choices.
    assert!(
        !enables(&upgraded, "tpcm.service"),
        "the upgrade re-enabled the boot unit: {out}"
    );
    assert!(upgraded.contains(&"tpcm-serve.service".to_string()), "{out}");
    assert!(
        upgraded
            .iter()
            .any(|l| l.contains("try-restart") && l.contains("tpcm-serve.service")),
        "{out}"
    );
    let removed = section("removed");
    assert!(
        removed
            .iter()
            .any(|l| l.contains("stop") && l.contains("tpcm-serve.service")),
        "{out}"
    );
    // Nothing ever starts a unit (try-restart only restarts one that runs).
    for line in out.lines().filter(|l| l.starts_with("systemctl")) {
        let verb = line
            .split_whitespace()
            .find(|w| !w.starts_with('-') && *w != "systemctl");
        assert!(
            !matches!(verb, Some("start" | "restart" | "reload-or-restart")) && !line.contains("--now"),
            "{line}\n{out}"
        );
    }
}
