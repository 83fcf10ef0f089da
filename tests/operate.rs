//! The operator's commands against a real containerd: exec (with and without a terminal, under
//! script(1)), inspect, stats, top, events, update, health checks, and the repair of a
//! container deleted behind tpcm's back.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;

use common::{Containerd, assert_fails, assert_ok, tpcm, tpcm_cmd, tpcm_stdin, wait_until};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);
/// A main process that ends at once on SIGTERM (exit 0), so stops take no grace period.
const SLEEPER: &str = "-- /bin/sh -c 'trap \"exit 0\" TERM; sleep 1000 & wait'";

fn archive(cd: &Containerd) -> PathBuf {
    let path = cd.dir().join("busybox.tar");
    if !path.exists() {
        builder::write_archive(
            &builder::busybox_image(&["tpcm-fixture/busybox:1.0"]),
            builder::ArchiveFormat::DockerV12,
            false,
            &path,
        )
        .expect("build fixture");
    }
    path
}

fn install(cd: &Containerd, name: &str, args: &str) {
    let archive = archive(cd);
    assert_ok(&tpcm(
        cd,
        &["install", name, archive.to_str().unwrap(), "--args", args, "-y"],
    ));
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_str(&assert_ok(out)).expect("JSON output")
}

fn listed(cd: &Containerd, name: &str) -> Value {
    json(&tpcm(cd, &["list", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn pid(cd: &Containerd, name: &str) -> u64 {
    listed(cd, name)["status"]["pid"].as_u64().expect("running")
}

fn cgroup(cd: &Containerd, controller: &str, name: &str, file: &str) -> String {
    let p = cd.cgroup_file(controller, name, file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// `tpcm unit-run <name>`, the unit's main process, started as systemd would (it runs the
/// health checks while it waits on the container); the caller kills it.
fn unit_run(cd: &Containerd, name: &str) -> std::process::Child {
    tpcm_cmd(cd)
        .args(["unit-run", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Every event of `name` recorded so far (`events --since 0 --until now`).
fn events(cd: &Containerd, name: &str) -> Vec<Value> {
    let now = format!(
        "{:.3}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            + 1.0
    );
    assert_ok(&tpcm(cd, &["events", "--since", "0", "--until", &now, "--json"]))
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("one JSON event per line"))
        .filter(|e| e["tpc"] == name)
        .collect()
}

fn actions(cd: &Containerd, name: &str) -> Vec<String> {
    events(cd, name)
        .iter()
        .map(|e| match e["action"].as_str().unwrap() {
            "health_status" => format!("health_status: {}", e["attributes"]["health"].as_str().unwrap()),
            a => a.to_string(),
        })
        .collect()
}

/// `tpcm <args>` inside a pseudo-terminal made by script(1) (of `cols` × `rows`), with `input`
/// typed into it; returns (exit code, what the terminal showed).
fn in_terminal(cd: &Containerd, args: &str, input: &str) -> (i32, String) {
    let env: String = [
        "TPCM_CONTAINERD",
        "TPCM_NAMESPACE",
        "TPCM_ROOT",
        "TPCM_DATA_ROOT",
        "TPCM_SYSTEMD_DIR",
    ]
    .iter()
    .map(|k| {
        let v = tpcm_cmd(cd)
            .get_envs()
            .find(|(n, _)| n.to_str() == Some(k))
            .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
            .unwrap();
        format!("{k}='{v}' ")
    })
    .collect();
    let line = format!(
        "stty cols 100 rows 40; {env}{} {args}",
        env!("CARGO_BIN_EXE_tpcm")
    );
    let out = common::run_with_input(
        Command::new("script").args(["-qec", &line, "/dev/null"]),
        input.as_bytes(),
        Duration::from_secs(60),
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The processes of TPC `name`'s container (`ctr tasks ps`).
fn container_pids(cd: &Containerd, name: &str) -> Vec<String> {
    assert_ok(&cd.ctr(&["tasks", "ps", name]))
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn signals_sent_to_exec_reach_the_command_and_leave_nothing_behind() {
    let cd = Containerd::start();
    install(&cd, "app", SLEEPER);
    // The main shell and its sleep.
    wait_until(DEADLINE, "the TPC's two processes", || {
        container_pids(&cd, "app").len() == 2
    });
    let before = container_pids(&cd, "app");
    let cases = [
        // A command that traps the signal ends its own way; one that does not dies of it.
        (libc::SIGTERM, "trap 'echo got-term; exit 7' TERM", 7, "got-term"),
        (libc::SIGINT, "trap 'echo got-int; exit 9' INT", 9, "got-int"),
        (libc::SIGHUP, ":", 128 + libc::SIGHUP, ""),
    ];
    for (signal, trap, code, said) in cases {
        // The exec's pipes go under a directory of this case's own.
        let tmp = tempfile::tempdir().unwrap();
        let script = format!("{trap}; echo ready; while :; do sleep 0.1; done");
        let mut child = tpcm_cmd(&cd)
            .env("TMPDIR", tmp.path())
            .args(["exec", "app", "--", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The output, line by line, read on a thread so a broken exec fails the test in time.
        let (tx, rx) = std::sync::mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        assert_eq!(rx.recv_timeout(DEADLINE).as_deref(), Ok("ready"));
        assert!(container_pids(&cd, "app").len() > before.len());
        // SAFETY: kill(2) with the pid of a child we have not reaped.
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let status = common::wait_child(&mut child, DEADLINE);
        // Until the reader reaches the end of the output (or the deadline).
        let rest: Vec<String> = std::iter::from_fn(|| rx.recv_timeout(DEADLINE).ok()).collect();
        let rest = rest.join("\n");
        assert_eq!(status.code(), Some(code), "signal {signal}: {rest}");
        assert_eq!(rest.trim(), said);
        wait_until(DEADLINE, "the exec'd processes to be gone", || {
            container_pids(&cd, "app") == before
        });
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert!(left.is_empty(), "signal {signal}: pipes left: {left:?}");
    }
    assert_eq!(listed(&cd, "app")["status"]["state"], "running");
}

#[test]
fn exec_runs_commands_with_and_without_a_terminal_and_passes_their_exit_codes_on() {
    let cd = Containerd::start();
    install(&cd, "app", SLEEPER);

    // Without a terminal: stdout and stderr apart, the exit code passed through.
    let out = tpcm(
        &cd,
        &["exec", "app", "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", common::describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    // -i forwards stdin to its end.
    let out = tpcm_stdin(
        &cd,
        &["exec", "-i", "app", "--", "sh", "-c", "cat; echo done"],
        b"line1\nline2\n",
    );
    assert_eq!(assert_ok(&out), "line1\nline2\ndone\n");
    // Without -i the command's stdin is empty.
    let out = tpcm_stdin(&cd, &["exec", "app", "--", "cat"], b"ignored\n");
    assert_eq!(assert_ok(&out), "");

    // -e, -w and -u as docker exec's.
    let out = tpcm(
        &cd,
        &[
            "exec",
            "-e",
            "GREETING=hi",
            "-w",
            "/tmp",
            "-u",
            "1000:2000",
            "app",
            "--",
            "sh",
            "-c",
            "echo $GREETING $(pwd) $(id -u):$(id -g)",
        ],
    );
    assert_eq!(assert_ok(&out), "hi /tmp 1000:2000\n");
    let out = tpcm(&cd, &["exec", "-u", "root", "app", "--", "id", "-u"]);
    assert_eq!(assert_ok(&out), "0\n");
    let err = assert_fails(&tpcm(&cd, &["exec", "-u", "nosuch", "app", "--", "true"]));
    assert!(err.contains("nosuch"), "{err}");

    // docker's 127 for a command that is not there, 126 for one that cannot run.
    let out = tpcm(&cd, &["exec", "app", "--", "nosuch-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", common::describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = tpcm(&cd, &["exec", "app", "--", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{}", common::describe(&out));

    // With a terminal (script(1) gives tpcm one): the command gets a pseudo-terminal of the
    // caller's size, keys typed reach it, and its exit code is passed on.
    let (code, shown) = in_terminal(
        &cd,
        "exec -it app -- sh -c 'busybox tty; busybox stty size; exit 5'",
        "",
    );
    assert_eq!(code, 5, "{shown}");
    assert!(shown.contains("/dev/pts/"), "the command has a terminal: {shown}");
    assert!(shown.contains("40 100"), "of the caller's size: {shown}");
    let (code, shown) = in_terminal(&cd, "exec -it app -- sh", "echo typed-$((6*7))\nexit 7\n");
    assert_eq!(code, 7, "{shown}");
    assert!(shown.contains("typed-42"), "{shown}");
    // -t without a terminal on stdin is docker's refusal.
    let err = assert_fails(&tpcm(&cd, &["exec", "-it", "app", "--", "true"]));
    assert!(err.contains("not a TTY"), "{err}");
    // Without a terminal, -t alone still gives the command one.
    let out = tpcm(&cd, &["exec", "-t", "app", "--", "busybox", "tty"]);
    assert!(
        assert_ok(&out).contains("/dev/pts/"),
        "{}",
        common::describe(&out)
    );

    // A stopped TPC is refused with one line.
    assert_ok(&tpcm(&cd, &["stop", "app"]));
    let err = assert_fails(&tpcm(&cd, &["exec", "app", "--", "true"]));
    assert!(err.contains("not running"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn inspect_top_and_stats_show_the_tpcs_settings_processes_and_usage() {
    let cd = Containerd::start();
    // A busy loop capped at half a CPU.
    install(&cd, "busy", "--cpus 0.5 -- /bin/sh -c 'while :; do :; done'");
    // 48 MiB written to its /dev/shm (memory charged to its cgroup), under a 256 MiB limit.
    install(
        &cd,
        "mem",
        "-e SECRET=hunter2 -m 256m --shm-size 100m --restart on-failure:2 -v /tmp:/host-tmp:ro \
         -- /bin/sh -c 'busybox dd if=/dev/zero of=/dev/shm/fill bs=1M count=48 2>/dev/null; touch /tmp/filled; trap \"exit 0\" TERM; sleep 1000 & wait'",
    );

    let i = json(&tpcm(&cd, &["inspect", "mem", "--json"]));
    assert_eq!(i["name"], "mem");
    assert_eq!(i["image"]["reference"], "docker.io/tpcm-fixture/busybox:1.0");
    assert!(i["image"]["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(i["state"]["state"], "running");
    assert_eq!(i["pid"].as_u64(), Some(pid(&cd, "mem")));
    assert!(i["started_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(i["restart_policy"], "on-failure:2");
    assert_eq!(i["restart_count"], 0);
    assert_eq!(i["settings"]["memory"], 256 << 20);
    assert_eq!(i["settings"]["env"], serde_json::json!(["SECRET=*****"]));
    assert_eq!(i["args"], Value::Null, "--args may hold secrets");
    let mounts: Vec<&str> = i["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(mounts, ["/tpc", "/tpc-shared", "/host-tmp"]);
    assert_eq!(i["network"], "host");
    let shown = json(&tpcm(&cd, &["inspect", "mem", "--json", "--show-env"]));
    assert_eq!(shown["settings"]["env"], serde_json::json!(["SECRET=hunter2"]));
    let text = assert_ok(&tpcm(&cd, &["inspect", "mem"]));
    assert!(text.contains("Restart policy:  on-failure:2"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert_fails(&tpcm(&cd, &["inspect", "nosuch"]));

    // The TPC filled /dev/shm.
    wait_until(DEADLINE, "the TPC to fill /dev/shm", || {
        Command::new("ctr")
            .args(["-a", cd.socket().to_str().unwrap(), "-n", cd.namespace()])
            .args([
                "tasks",
                "exec",
                "--exec-id",
                "probe",
                "mem",
                "test",
                "-f",
                "/tmp/filled",
            ])
            .status()
            .is_ok_and(|s| s.success())
    });
    // top: the main process and its child, by host pid (the child is forked after the file
    // is made, so it may take a moment to show).
    let sleeping = |procs: &Value| {
        procs
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["command"].as_str().unwrap().starts_with("sleep 1000"))
    };
    wait_until(DEADLINE, "top to show the child", || {
        sleeping(&json(&tpcm(&cd, &["top", "mem", "--json"])))
    });
    let procs = json(&tpcm(&cd, &["top", "mem", "--json"]));
    assert!(sleeping(&procs), "{procs:?}");
    assert!(
        procs
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pid"].as_u64() == Some(pid(&cd, "mem"))),
        "{procs:?}"
    );
    assert!(assert_ok(&tpcm(&cd, &["top", "mem"])).contains("sleep 1000"));

    // stats: CPU near the cap, memory near what was written.
    let stats = json(&tpcm(&cd, &["stats", "--no-stream", "--json"]));
    let stats = stats.as_array().unwrap();
    assert_eq!(stats.len(), 2, "every running TPC: {stats:?}");
    let of = |n: &str| stats.iter().find(|s| s["name"] == n).unwrap().clone();
    let busy = of("busy");
    let cpu = busy["cpu_percent"].as_f64().unwrap();
    assert!(
        (30.0..=60.0).contains(&cpu),
        "a busy loop capped at 0.5 CPU uses {cpu} %"
    );
    assert_eq!(
        busy["net_rx"],
        Value::Null,
        "host network: no counters of its own"
    );
    let mem = of("mem");
    let used = mem["memory_usage"].as_u64().unwrap();
    assert!(
        (48 << 20..80 << 20).contains(&used),
        "48 MiB written to /dev/shm, {used} bytes used"
    );
    assert_eq!(mem["memory_limit"], 256 << 20);
    assert!(mem["pids"].as_u64().unwrap() >= 2);
    assert!(mem["cgroup_version"].as_u64().unwrap() >= 1);
    let one = json(&tpcm(&cd, &["stats", "busy", "--no-stream", "--json"]));
    assert_eq!(one.as_array().unwrap().len(), 1);
    let table = assert_ok(&tpcm(&cd, &["stats", "--no-stream"]));
    assert!(
        table.starts_with("NAME") && table.contains("busy") && table.contains("mem"),
        "{table}"
    );
    assert_fails(&tpcm(&cd, &["stats", "nosuch", "--no-stream"]));

    // A bridged TPC has network counters of its own: a 1 MiB page it served shows as sent.
    let port = common::free_port();
    install(
        &cd,
        "web",
        &format!(
            "--network bridge -p {port}:8080 -- /bin/sh -c 'mkdir -p /www; \
             busybox dd if=/dev/zero of=/www/index.html bs=1k count=1024 2>/dev/null; \
             exec busybox httpd -f -p 8080 -h /www'"
        ),
    );
    wait_until(DEADLINE, "the page to be served", || {
        common::http_get(port).is_some_and(|page| page.len() > 1 << 20)
    });
    // inspect shows its published port and network.
    let i = json(&tpcm(&cd, &["inspect", "web", "--json"]));
    assert_eq!(i["network"], "bridge", "{i}");
    assert_eq!(i["ports"][0]["host"], port, "{i}");
    assert_eq!(i["ports"][0]["container"], 8080, "{i}");
    let web = json(&tpcm(&cd, &["stats", "web", "--no-stream", "--json"]));
    let (rx, tx) = (
        web[0]["net_rx"].as_u64().unwrap(),
        web[0]["net_tx"].as_u64().unwrap(),
    );
    assert!(tx > 1 << 20 && rx > 0, "received {rx}, sent {tx}");

    // Without --no-stream a reading follows every interval, each over its own interval.
    let mut stream = tpcm_cmd(&cd)
        .args(["stats", "busy", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(stream.stdout.take().unwrap()).lines();
    let readings: Vec<Value> = (0..3)
        .map(|_| serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap())
        .collect();
    let _ = stream.kill();
    let _ = stream.wait();
    for r in &readings {
        let r = r.as_array().unwrap();
        assert_eq!(r.len(), 1, "{r:?}");
        let cpu = r[0]["cpu_percent"].as_f64().unwrap();
        assert!((30.0..=60.0).contains(&cpu), "{readings:?}");
    }
}

#[test]
fn update_changes_the_running_tasks_cgroup_and_survives_restart_and_boot() {
    let cd = Containerd::start();
    install(&cd, "app", SLEEPER);
    let before = pid(&cd, "app");
    let out = tpcm(
        &cd,
        &[
            "update",
            "app",
            "--cpus",
            "0.5",
            "--memory",
            "128m",
            "--memory-reservation",
            "64m",
            "--pids-limit",
            "50",
            "--restart",
            "always",
        ],
    );
    assert!(assert_ok(&out).contains("[ SUCCESS ]"));
    let limits = |cd: &Containerd| {
        (
            cgroup(cd, "cpu", "app", "cpu.cfs_quota_us"),
            cgroup(cd, "memory", "app", "memory.limit_in_bytes"),
            cgroup(cd, "memory", "app", "memory.soft_limit_in_bytes"),
            cgroup(cd, "pids", "app", "pids.max"),
        )
    };
    let wanted = (
        "50000".to_string(),
        (128u64 << 20).to_string(),
        (64u64 << 20).to_string(),
        "50".to_string(),
    );
    assert_eq!(limits(&cd), wanted);
    assert_eq!(pid(&cd, "app"), before, "the same container, not re-created");
    let unit = std::fs::read_to_string(cd.units_dir().join("tpc-app.service")).unwrap();
    assert!(unit.contains("Restart=always"), "{unit}");
    let i = json(&tpcm(&cd, &["inspect", "app", "--json"]));
    assert_eq!(
        (i["cpus"].as_f64(), i["restart_policy"].as_str()),
        (Some(0.5), Some("always"))
    );
    assert!(actions(&cd, "app").contains(&"update".to_string()));

    // Refused values change nothing.
    for bad in [
        vec!["--memory", "1k"],
        vec!["--memory-reservation", "512m"],
        vec!["--cpus", "0"],
        vec!["--restart", "sometimes"],
        vec![],
    ] {
        let mut args = vec!["update", "app"];
        args.extend(&bad);
        let err = assert_fails(&tpcm(&cd, &args));
        assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
        assert_eq!(limits(&cd), wanted, "{bad:?}");
    }
    // A memory limit below what the container uses (48 MiB in its /dev/shm, which cannot be
    // reclaimed without swap) is the kernel's refusal: one line, and nothing changes, not even
    // the CPU cap asked for with it.
    assert_ok(&tpcm(
        &cd,
        &[
            "exec",
            "app",
            "--",
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/dev/shm/fill",
            "bs=1M",
            "count=48",
        ],
    ));
    let err = assert_fails(&tpcm(
        &cd,
        &[
            "update",
            "app",
            "--memory",
            "16m",
            "--memory-reservation",
            "8m",
            "--cpus",
            "0.25",
        ],
    ));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("unable to set memory limit") && !err.contains("code:"),
        "runc's reason alone: {err}"
    );
    assert_eq!(limits(&cd), wanted);
    let i = json(&tpcm(&cd, &["inspect", "app", "--json"]));
    assert_eq!(
        (i["cpus"].as_f64(), i["settings"]["memory"].as_u64()),
        (Some(0.5), Some(128 << 20))
    );
    assert_ok(&tpcm(&cd, &["exec", "app", "--", "rm", "/dev/shm/fill"]));

    // A restart and a boot (after the task is gone, as after a reboot) keep them.
    assert_ok(&tpcm(&cd, &["restart", "app"]));
    assert_ne!(pid(&cd, "app"), before);
    assert_eq!(limits(&cd), wanted);
    cd.ctr_ok(&["tasks", "kill", "-s", "KILL", "app"]);
    wait_until(DEADLINE, "the task to die", || {
        listed(&cd, "app")["status"]["state"] == "exited"
    });
    cd.ctr_ok(&["tasks", "delete", "app"]);
    assert_ok(&tpcm(&cd, &["boot"]));
    assert_eq!(listed(&cd, "app")["status"]["state"], "running");
    assert_eq!(limits(&cd), wanted);

    // Removing the memory limit works on the running task too.
    assert_ok(&tpcm(
        &cd,
        &["update", "app", "--memory", "0", "--memory-reservation", "0"],
    ));
    let unlimited: u64 = cgroup(&cd, "memory", "app", "memory.limit_in_bytes")
        .parse()
        .unwrap();
    assert!(unlimited > 1 << 50, "{unlimited}");
}

#[test]
fn failures_in_the_health_start_period_do_not_count() {
    let cd = Containerd::start();
    // Each probe leaves a line in the TPC's data directory, then fails.
    let failing =
        "--health-cmd 'echo probe >> /tpc/probes; false' --health-interval 200ms --health-retries 1";
    install(&cd, "counted", &format!("{failing} {SLEEPER}"));
    install(
        &cd,
        "patient",
        &format!("{failing} --health-start-period 10m {SLEEPER}"),
    );
    let mut units: Vec<_> = ["counted", "patient"]
        .iter()
        .map(|name| unit_run(&cd, name))
        .collect();
    let health = |name: &str| listed(&cd, name)["health"].as_str().map(String::from);
    wait_until(DEADLINE, "the counted failures to make it unhealthy", || {
        health("counted").as_deref() == Some("unhealthy")
    });
    // The same failing probes, run as often, leave the other one starting (docker's rule).
    let probes = cd.data_dir().join("patient/probes");
    wait_until(DEADLINE, "three failed probes in the start period", || {
        std::fs::read_to_string(&probes).is_ok_and(|t| t.lines().count() >= 3)
    });
    assert_eq!(health("patient").as_deref(), Some("starting"));
    for unit in &mut units {
        let _ = unit.kill();
        let _ = unit.wait();
    }
}

#[test]
fn tcp_and_http_probes_run_continuously_and_follow_the_service() {
    let cd = Containerd::start();
    let mut units = Vec::new();
    for (name, probe) in [("tcp", "--health-tcp"), ("http", "--health-http")] {
        // A host-network TPC whose web server runs beside its main process, so an exec can stop
        // it and start it again while the TPC runs.
        let port = common::free_port();
        let serve =
            format!("busybox httpd -f -p {port} -h /www </dev/null >/dev/null 2>&1 & echo $! >/httpd.pid");
        let target = if name == "tcp" {
            port.to_string()
        } else {
            format!("http://127.0.0.1:{port}/")
        };
        install(
            &cd,
            name,
            &format!(
                "--network host {probe} {target} --health-interval 200ms --health-retries 2 \
                 --health-timeout 2s -- /bin/sh -c 'mkdir -p /www; echo up > /www/index.html; \
                 {serve}; trap \"exit 0\" TERM; sleep 1000 & wait'"
            ),
        );
        // unit-run runs the probes while it waits on the container (standing in for systemd).
        units.push(unit_run(&cd, name));
        let health = |cd: &Containerd| listed(cd, name)["health"].as_str().map(String::from);
        wait_until(DEADLINE, &format!("{name} healthy"), || {
            health(&cd).as_deref() == Some("healthy")
        });
        assert_ok(&tpcm(
            &cd,
            &["exec", name, "--", "sh", "-c", "kill $(cat /httpd.pid)"],
        ));
        wait_until(DEADLINE, &format!("{name} unhealthy"), || {
            health(&cd).as_deref() == Some("unhealthy")
        });
        let i = json(&tpcm(&cd, &["inspect", name, "--json"]));
        let last = i["health"]["log"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["ok"], false, "{i}");
        assert!(
            last["output"].as_str().unwrap().contains(&port.to_string()),
            "the probe's failure names its target: {last}"
        );
        assert_ok(&tpcm(&cd, &["exec", name, "--", "sh", "-c", &serve]));
        wait_until(DEADLINE, &format!("{name} healthy again"), || {
            health(&cd).as_deref() == Some("healthy")
        });
    }
    for mut unit in units {
        let _ = unit.kill();
        let _ = unit.wait();
    }
}

/// `tpcm-fixture/checked:<tag>`: busybox whose config declares `healthcheck` (docker's
/// `Healthcheck` object, as `docker build` writes a Dockerfile's `HEALTHCHECK`).
fn archive_with_healthcheck(cd: &Containerd, tag: &str, healthcheck: Value) -> PathBuf {
    let path = cd.dir().join(format!("checked-{tag}.tar"));
    let spec = builder::ImageSpec {
        healthcheck: Some(healthcheck),
        ..builder::busybox_image(&[&format!("tpcm-fixture/checked:{tag}")])
    };
    builder::write_archive(&spec, builder::ArchiveFormat::DockerV12, false, &path).expect("build fixture");
    path
}

#[test]
fn an_images_healthcheck_runs_unless_the_settings_replace_or_disable_it() {
    let cd = Containerd::start();
    // HEALTHCHECK --interval=200ms --retries=1 CMD ["test", "-f", "/tpc/ok"] (the exec form).
    let checked = archive_with_healthcheck(
        &cd,
        "1",
        serde_json::json!({"Test": ["CMD", "test", "-f", "/tpc/ok"], "Interval": 200_000_000, "Retries": 1}),
    );
    let install_checked = |name: &str, args: &str| {
        assert_ok(&tpcm(
            &cd,
            &["install", name, checked.to_str().unwrap(), "--args", args, "-y"],
        ));
    };
    install_checked("imaged", SLEEPER);
    install_checked("off", &format!("--no-healthcheck {SLEEPER}"));
    install_checked(
        "own",
        &format!("--health-cmd 'true' --health-interval 250ms {SLEEPER}"),
    );
    install_checked("timed", &format!("--health-interval 300ms {SLEEPER}"));
    let inspected = |name: &str| json(&tpcm(&cd, &["inspect", name, "--json"]))["health"].clone();
    let imaged = inspected("imaged");
    assert_eq!(imaged["from"], "image", "{imaged}");
    assert_eq!(
        imaged["check"]["exec"],
        serde_json::json!(["test", "-f", "/tpc/ok"])
    );
    assert_eq!(
        (
            imaged["timing"]["interval_ms"].as_u64(),
            imaged["timing"]["retries"].as_u64()
        ),
        (Some(200), Some(1))
    );
    assert_eq!(inspected("off"), Value::Null, "--no-healthcheck runs none");
    assert_eq!(listed(&cd, "off")["health"], Value::Null);
    let own = inspected("own");
    assert_eq!(
        (own["from"].as_str(), own["check"]["cmd"].as_str()),
        (Some("settings"), Some("true"))
    );
    // A timing flag alone applies to the image's check.
    let timed = inspected("timed");
    assert_eq!(timed["from"], "image", "{timed}");
    assert_eq!(timed["timing"]["interval_ms"], 300);

    // The image's check runs and follows the service.
    let mut unit = unit_run(&cd, "imaged");
    let health = |cd: &Containerd| listed(cd, "imaged")["health"].as_str().map(String::from);
    wait_until(DEADLINE, "unhealthy without /tpc/ok", || {
        health(&cd).as_deref() == Some("unhealthy")
    });
    std::fs::write(cd.data_dir().join("imaged/ok"), "").unwrap();
    wait_until(DEADLINE, "healthy with /tpc/ok", || {
        health(&cd).as_deref() == Some("healthy")
    });
    let _ = unit.kill();
    let _ = unit.wait();
    let text = assert_ok(&tpcm(&cd, &["inspect", "imaged"]));
    assert!(
        text.contains("`test -f /tpc/ok` from the image's HEALTHCHECK"),
        "{text}"
    );

    // An upgrade onto an image whose own check fails is rolled back, saying whose check it was.
    let failing = archive_with_healthcheck(
        &cd,
        "2",
        serde_json::json!({"Test": ["CMD-SHELL", "exit 1"], "Interval": 200_000_000, "Timeout": 1_000_000_000}),
    );
    let out = tpcm(
        &cd,
        &[
            "upgrade",
            "imaged",
            failing.to_str().unwrap(),
            "--grace",
            "1",
            "-y",
        ],
    );
    let err = assert_fails(&out);
    assert!(
        err.contains("failed its health check") && err.contains("rolled back"),
        "{err}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("passes its image's health check"),
        "{}",
        common::describe(&out)
    );
    assert_eq!(listed(&cd, "imaged")["image"], "docker.io/tpcm-fixture/checked:1");
}

#[test]
fn health_checks_run_continuously_and_show_in_list_inspect_and_events() {
    let cd = Containerd::start();
    install(
        &cd,
        "app",
        &format!(
            "--health-cmd 'test -f /tpc/ok' --health-interval 200ms --health-retries 2 --health-timeout 5s {SLEEPER}"
        ),
    );
    let ok = cd.data_dir().join("app/ok");
    std::fs::write(&ok, "").unwrap();
    let health = |cd: &Containerd| listed(cd, "app")["health"].as_str().map(String::from);
    assert_eq!(
        health(&cd).as_deref(),
        Some("starting"),
        "nobody ran the check yet"
    );
    // The unit's main process runs the checks while it waits on the container (the test stands
    // in for systemd here).
    let mut unit = unit_run(&cd, "app");
    wait_until(DEADLINE, "healthy", || health(&cd).as_deref() == Some("healthy"));
    std::fs::remove_file(&ok).unwrap();
    wait_until(DEADLINE, "unhealthy", || {
        health(&cd).as_deref() == Some("unhealthy")
    });
    let i = json(&tpcm(&cd, &["inspect", "app", "--json"]));
    assert_eq!(i["health"]["status"], "unhealthy");
    assert!(i["health"]["failing_streak"].as_u64().unwrap() >= 2);
    assert_eq!(
        i["health"]["log"].as_array().unwrap().last().unwrap()["ok"],
        false
    );
    std::fs::write(&ok, "").unwrap();
    wait_until(DEADLINE, "healthy again", || {
        health(&cd).as_deref() == Some("healthy")
    });
    let table = assert_ok(&tpcm(&cd, &["list"]));
    assert!(table.contains(" healthy "), "{table}");
    let seen: Vec<String> = actions(&cd, "app")
        .into_iter()
        .filter(|a| a.starts_with("health_status"))
        .collect();
    assert_eq!(
        seen,
        [
            "health_status: healthy",
            "health_status: unhealthy",
            "health_status: healthy"
        ]
    );

    // The main process is killed: unit-run records it and exits with it; systemd's
    // Restart= runs it again, which restarts the container: one restart counted.
    cd.ctr_ok(&["tasks", "kill", "-s", "KILL", "app"]);
    let status = unit.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(137),
        "unit-run exits with the container's code"
    );
    let listed_exit = listed(&cd, "app");
    assert_eq!(listed_exit["last_exit"]["code"], 137);
    let i = json(&tpcm(&cd, &["inspect", "app", "--json"]));
    assert_eq!(i["last_exit"]["code"], 137, "{i}");
    assert!(i["last_exit"]["at"].as_str().unwrap().contains('T'), "{i}");
    assert_eq!(
        listed_exit["health"],
        Value::Null,
        "no health while it does not run"
    );
    let mut unit = unit_run(&cd, "app");
    wait_until(DEADLINE, "the restart", || {
        let t = listed(&cd, "app");
        t["status"]["state"] == "running" && t["restarts"] == 1
    });
    let a = actions(&cd, "app");
    let die = a.iter().position(|x| x == "die").expect("die recorded");
    assert_eq!(a[die + 1], "restart", "{a:?}");
    let e = events(&cd, "app");
    assert_eq!(
        e.iter().find(|e| e["action"] == "die").unwrap()["attributes"]["exitCode"],
        "137"
    );
    // An operator's start sets the count back to 0, as docker's.
    assert_ok(&tpcm(&cd, &["stop", "app"]));
    let _ = unit.wait();
    assert_ok(&tpcm(&cd, &["start", "app"]));
    assert_eq!(listed(&cd, "app")["restarts"], 0);
}

#[test]
fn events_follow_shows_operations_and_exits_as_they_happen() {
    let cd = Containerd::start();
    install(
        &cd,
        "app",
        "-- /bin/sh -c 'trap \"exit 3\" TERM; sleep 1000 & wait'",
    );
    let mut follow = tpcm_cmd(&cd)
        .args(["events", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    // Wait until it follows: an operation made now shows.
    let mut got = Vec::new();
    let mut limit = 100;
    wait_until(DEADLINE, "events to follow an update", || {
        limit += 1;
        let _ = tpcm(&cd, &["update", "app", "--pids-limit", &limit.to_string()]);
        got.extend(rx.try_iter());
        got.iter().any(|e| e["action"] == "update")
    });
    // An exit containerd reports (not through tpcm) shows with its code.
    cd.ctr_ok(&["tasks", "kill", "app"]);
    wait_until(DEADLINE, "the die event", || {
        got.extend(rx.try_iter());
        got.iter()
            .any(|e| e["action"] == "die" && e["attributes"]["exitCode"] == "3")
    });
    assert_ok(&tpcm(&cd, &["start", "app"]));
    wait_until(DEADLINE, "the start event", || {
        got.extend(rx.try_iter());
        got.iter().any(|e| e["action"] == "start")
    });
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        got.iter()
            .all(|e| e["tpc"] == "app" && e["time"].as_str().unwrap().ends_with('Z'))
    );
    // History: the install came before.
    assert_eq!(actions(&cd, "app")[0], "install");
    let err = assert_fails(&tpcm(&cd, &["events", "--since", "yesterday"]));
    assert!(err.contains("--since"), "{err}");
}

#[test]
fn a_container_deleted_behind_tpcms_back_is_missing_and_start_makes_it_again() {
    let cd = Containerd::start();
    install(&cd, "app", SLEEPER);
    let out = tpcm(&cd, &["exec", "app", "--", "sh", "-c", "echo kept > /marker"]);
    assert_ok(&out);

    // Deleted with its writable layer left behind: made again on it.
    assert_ok(&tpcm(&cd, &["stop", "app"]));
    cd.ctr_ok(&["containers", "delete", "--keep-snapshot", "app"]);
    assert_eq!(listed(&cd, "app")["status"]["state"], "missing");
    assert!(assert_ok(&tpcm(&cd, &["list"])).contains(" missing "));
    let out = assert_ok(&tpcm(&cd, &["start", "app"]));
    assert!(
        out.contains("was missing") && out.contains("old writable layer"),
        "{out}"
    );
    assert_eq!(listed(&cd, "app")["status"]["state"], "running");
    assert_eq!(
        assert_ok(&tpcm(&cd, &["exec", "app", "--", "cat", "/marker"])),
        "kept\n"
    );
    assert!(actions(&cd, "app").contains(&"repair".to_string()));

    // A TPC made by a tpcm from before layer leases has none: its next start gives it one, so
    // its layer outlives a deletion behind tpcm's back too (a synchronous collection runs).
    cd.ctr_ok(&["leases", "delete", "tpcm-layer-app"]);
    assert_ok(&tpcm(&cd, &["stop", "app"]));
    assert_ok(&tpcm(&cd, &["start", "app"]));
    assert_ok(&tpcm(&cd, &["stop", "app"]));
    cd.ctr_ok(&["containers", "delete", "--keep-snapshot", "app"]);
    cd.ctr_ok(&["leases", "create", "--id", "collect-now"]);
    cd.ctr_ok(&["leases", "delete", "--sync", "collect-now"]);
    let out = assert_ok(&tpcm(&cd, &["start", "app"]));
    assert!(out.contains("old writable layer"), "{out}");
    assert_eq!(
        assert_ok(&tpcm(&cd, &["exec", "app", "--", "cat", "/marker"])),
        "kept\n"
    );

    // Deleted with its layer: made again from the pinned image alone.
    assert_ok(&tpcm(&cd, &["stop", "app"]));
    cd.ctr_ok(&["containers", "delete", "app"]);
    assert_eq!(listed(&cd, "app")["status"]["state"], "missing");
    let out = assert_ok(&tpcm(&cd, &["start", "app"]));
    assert!(out.contains("fresh writable layer"), "{out}");
    let out = tpcm(&cd, &["exec", "app", "--", "cat", "/marker"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::describe(&out));
    let e = events(&cd, "app");
    let layers: Vec<&str> = e
        .iter()
        .filter(|e| e["action"] == "repair")
        .map(|e| e["attributes"]["layer"].as_str().unwrap())
        .collect();
    assert_eq!(layers, ["kept", "kept", "fresh"]);

    // A missing TPC uninstalls cleanly: the layer left behind goes with its lease.
    assert_ok(&tpcm(&cd, &["stop", "app"]));
    cd.ctr_ok(&["containers", "delete", "--keep-snapshot", "app"]);
    assert_eq!(listed(&cd, "app")["status"]["state"], "missing");
    assert_ok(&tpcm(&cd, &["uninstall", "app", "-y"]));
    wait_until(DEADLINE, "nothing left of the TPC", || {
        cd.snapshots().is_empty() && cd.leases().is_empty()
    });
    cd.assert_empty("after uninstalling a missing TPC");
}
