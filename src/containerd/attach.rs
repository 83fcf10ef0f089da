//! `tpcm exec`: a process run inside a running container with its streams attached to the
//! caller's, as `docker exec` runs one. containerd's `Exec` takes the process's stdio as paths
//! of named pipes (FIFOs) that the shim opens; tpcm makes them in a private temporary
//! directory and copies between them and the caller's streams on threads of their own. With a
//! terminal the shim gives the process a pseudo-terminal and copies its output to the stdout
//! pipe; its size follows the caller's (`ResizePty`).

use super::exec::PROCESS_TYPE_URL;
use super::{Containerd, Error};
use crate::runtime::{ExecExit, ExecRequest, ExecStdio, WindowSize};
use containerd_client::services::v1::{
    CloseIoRequest, ExecProcessRequest, ResizePtyRequest, StartRequest, WaitRequest,
};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long the copies of the output may take to drain once the process was deleted (the shim
/// has closed its ends by then; this only bounds a stuck pipe).
const DRAIN: Duration = Duration::from_secs(5);

static ATTACHED: AtomicU64 = AtomicU64::new(0);

/// The three pipes of one exec, in a directory removed with it.
struct Pipes {
    /// Held so the directory (and the pipes in it) goes when the exec ends.
    _dir: tempfile::TempDir,
    stdin: Option<PathBuf>,
    stdout: PathBuf,
    stderr: Option<PathBuf>,
}

impl Pipes {
    fn make(stdin: bool, stderr: bool) -> std::io::Result<Pipes> {
        let dir = tempfile::Builder::new().prefix("tpcm-exec-").tempdir()?;
        let fifo = |name: &str| -> std::io::Result<PathBuf> {
            let path = dir.path().join(name);
            nix::unistd::mkfifo(
                &path,
                nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
            )?;
            Ok(path)
        };
        Ok(Pipes {
            stdin: stdin.then(|| fifo("stdin")).transpose()?,
            stdout: fifo("stdout")?,
            stderr: stderr.then(|| fifo("stderr")).transpose()?,
            _dir: dir,
        })
    }

    /// Wakes every copy thread still blocked opening its pipe (the shim never opened the other
    /// end: the process did not start): opening the other end without blocking and closing it
    /// ends their open with an immediate end of file (or a broken pipe for stdin).
    fn release(&self) {
        for out in [Some(&self.stdout), self.stderr.as_ref()].into_iter().flatten() {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(out);
        }
        if let Some(input) = &self.stdin {
            let _ = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(input);
        }
    }
}

/// Copies what the process writes to `path` into `out`, chunk by chunk as it comes.
fn copy_out(path: PathBuf, mut out: Box<dyn Write + Send>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut pipe) = std::fs::File::open(&path) else {
            return;
        };
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    })
}

/// Copies `input` into the process's stdin pipe; tells `done` when `input` ended.
fn copy_in(
    path: PathBuf,
    mut input: Box<dyn Read + Send>,
    done: tokio::sync::oneshot::Sender<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if let Ok(mut pipe) = std::fs::OpenOptions::new().write(true).open(&path) {
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if pipe.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        let _ = done.send(());
    })
}

/// How a failed start reads: docker's 127 for a command that is not there, 126 for one that
/// cannot run (runc's messages, passed on by containerd).
fn start_failure(message: &str) -> ExecExit {
    let m = message.to_ascii_lowercase();
    if m.contains("chdir") || m.contains("cwd") {
        ExecExit::CannotRun(message.to_string())
    } else if m.contains("executable file not found") || m.contains("no such file or directory") {
        ExecExit::NotFound(message.to_string())
    } else {
        ExecExit::CannotRun(message.to_string())
    }
}

/// The environment `base` with `over` applied (a key given again replaces its value).
fn merged_env(base: &[String], over: &[String]) -> Vec<String> {
    let key = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_string();
    let mut out: Vec<String> = base
        .iter()
        .filter(|kv| !over.iter().any(|o| key(o) == key(kv)))
        .cloned()
        .collect();
    out.extend(over.iter().cloned());
    out
}

impl Containerd {
    /// Runs `request` in running container `id` with its streams attached to `stdio`.
    pub(crate) async fn exec_attached(
        &self,
        id: &str,
        request: &ExecRequest,
        stdio: ExecStdio,
    ) -> Result<ExecExit, Error> {
        let unexpected = |detail: String| Error::Unexpected {
            op: format!("exec in {id}"),
            detail,
        };
        let pid = match self.task_state(id).await? {
            crate::runtime::ContainerState::Running { pid } => pid,
            _ => {
                return Err(Error::Rpc {
                    op: format!("exec in {id}"),
                    status: Box::new(tonic::Status::failed_precondition(format!(
                        "TPC {id} is not running"
                    ))),
                });
            }
        };
        let mut process = self.container_process(id).await?;
        process.set_args(Some(request.argv.clone()));
        process.set_terminal(Some(request.tty));
        if let (true, Some(size)) = (request.tty, request.size) {
            let b = oci_spec::runtime::BoxBuilder::default()
                .width(size.cols as u64)
                .height(size.rows as u64)
                .build()
                .map_err(|e| unexpected(e.to_string()))?;
            process.set_console_size(Some(b));
        }
        let env = merged_env(&process.env().clone().unwrap_or_default(), &request.env);
        process.set_env(Some(env));
        if let Some(dir) = &request.workdir {
            process.set_cwd(dir.into());
        }
        if let Some(user) = &request.user {
            // Names are looked up in the running container's own files, as docker exec does.
            let root = PathBuf::from(format!("/proc/{pid}/root"));
            let user = user.clone();
            let resolved = tokio::task::spawn_blocking(move || {
                let passwd = super::users::read_account_file(&root, "passwd")?;
                let group = super::users::read_account_file(&root, "group")?;
                super::users::resolve_user(&user, &passwd, &group)
            })
            .await
            .map_err(|e| unexpected(e.to_string()))?
            .map_err(|e| Error::Rpc {
                op: format!("exec in {id}"),
                status: Box::new(tonic::Status::invalid_argument(format!("--user: {e}"))),
            })?;
            let (uid, gid) = resolved.split_once(':').unwrap_or((&resolved, "0"));
            let mut u = oci_spec::runtime::User::default();
            u.set_uid(uid.parse().unwrap_or(0))
                .set_gid(gid.parse().unwrap_or(0));
            process.set_user(u);
        }
        let value = serde_json::to_vec(&process).map_err(|e| unexpected(e.to_string()))?;

        let ExecStdio {
            stdin,
            stdout,
            stderr,
            resize,
            signals,
        } = stdio;
        let pipes = Pipes::make(stdin.is_some(), !request.tty)
            .map_err(|e| unexpected(format!("cannot make the exec's pipes: {e}")))?;
        let path = |p: &Option<PathBuf>| p.as_deref().map(path_text).unwrap_or_default();
        let exec_id = format!(
            "tpcm-exec-{}-{}",
            std::process::id(),
            ATTACHED.fetch_add(1, Ordering::Relaxed)
        );
        let mut copies = vec![copy_out(pipes.stdout.clone(), stdout)];
        if let Some(err) = &pipes.stderr {
            copies.push(copy_out(err.clone(), stderr));
        }
        let (stdin_done, stdin_ended) = tokio::sync::oneshot::channel();
        if let (Some(path), Some(input)) = (&pipes.stdin, stdin) {
            // Not joined: it may stay blocked reading the caller's terminal after the process
            // ended; the caller exits then.
            copy_in(path.clone(), input, stdin_done);
        }
        let req = ExecProcessRequest {
            container_id: id.into(),
            stdin: path(&pipes.stdin),
            stdout: path_text(&pipes.stdout),
            stderr: path(&pipes.stderr),
            terminal: request.tty,
            spec: Some(prost_types::Any {
                type_url: PROCESS_TYPE_URL.into(),
                value,
            }),
            exec_id: exec_id.clone(),
        };
        if let Err(s) = self.tasks().exec(self.request(req, None)).await {
            pipes.release();
            return Err(Error::rpc(format!("exec in {id}"))(s));
        }
        let outcome = self
            .run_attached(
                id,
                &exec_id,
                request.tty.then_some(resize).flatten(),
                signals,
                stdin_ended,
            )
            .await;
        self.delete_exec(id, &exec_id).await;
        pipes.release();
        // The output the process wrote before it ended is all shown before we return.
        let drained = tokio::task::spawn_blocking(move || {
            for c in copies {
                let _ = c.join();
            }
        });
        let _ = tokio::time::timeout(DRAIN, drained).await;
        outcome
    }

    async fn run_attached(
        &self,
        id: &str,
        exec_id: &str,
        resize: Option<tokio::sync::mpsc::Receiver<WindowSize>>,
        signals: Option<tokio::sync::mpsc::Receiver<i32>>,
        stdin_ended: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<ExecExit, Error> {
        let start = StartRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        };
        if let Err(s) = self.tasks().start(self.request(start, None)).await {
            return Ok(start_failure(s.message()));
        }
        let resizing = resize.map(|mut rx| {
            let (this, id, exec_id) = (self.clone(), id.to_string(), exec_id.to_string());
            tokio::spawn(async move {
                while let Some(size) = rx.recv().await {
                    let req = ResizePtyRequest {
                        container_id: id.clone(),
                        exec_id: exec_id.clone(),
                        width: size.cols.into(),
                        height: size.rows.into(),
                    };
                    let _ = this.tasks().resize_pty(this.request(req, None)).await;
                }
            })
        });
        // Signals go to the exec'd process alone (not the container's other processes).
        let signalling = signals.map(|mut rx| {
            let (this, id, exec_id) = (self.clone(), id.to_string(), exec_id.to_string());
            tokio::spawn(async move {
                while let Some(signal) = rx.recv().await {
                    if let Err(e) = this.signal_exec(&id, &exec_id, signal as u32).await {
                        tracing::debug!("exec {exec_id} in {id}: cannot pass on signal {signal}: {e}");
                    }
                }
            })
        });
        let closing = {
            let (this, id, exec_id) = (self.clone(), id.to_string(), exec_id.to_string());
            tokio::spawn(async move {
                if stdin_ended.await.is_ok() {
                    let req = CloseIoRequest {
                        container_id: id,
                        exec_id,
                        stdin: true,
                    };
                    let _ = this.tasks().close_io(this.request(req, None)).await;
                }
            })
        };
        let waited = self
            .tasks()
            .wait(self.request(
                WaitRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                },
                None,
            ))
            .await;
        for task in [resizing, signalling].into_iter().flatten() {
            task.abort();
        }
        closing.abort();
        Ok(ExecExit::Code(
            waited
                .map_err(Error::rpc(format!("exec wait in {id}")))?
                .into_inner()
                .exit_status,
        ))
    }
}

fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failures_map_to_dockers_exit_codes() {
        let not_found = "OCI runtime exec failed: exec failed: unable to start container process: exec: \"nosuch\": executable file not found in $PATH: unknown";
        assert!(matches!(start_failure(not_found), ExecExit::NotFound(_)));
        let missing_path = "exec failed: unable to start container process: exec: \"/nope\": stat /nope: no such file or directory: unknown";
        assert!(matches!(start_failure(missing_path), ExecExit::NotFound(_)));
        let denied = "exec failed: unable to start container process: exec: \"/etc/passwd\": permission denied: unknown";
        assert!(matches!(start_failure(denied), ExecExit::CannotRun(_)));
        let cwd = "exec failed: unable to start container process: chdir to cwd (\"/nope\") set in config.json failed: no such file or directory: unknown";
        assert!(matches!(start_failure(cwd), ExecExit::CannotRun(_)));
    }

    #[test]
    fn exec_env_replaces_keys_given_again() {
        let base = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let got = merged_env(&base, &["A=2".to_string(), "B=3".to_string()]);
        assert_eq!(got, vec!["PATH=/bin", "A=2", "B=3"]);
    }
}
