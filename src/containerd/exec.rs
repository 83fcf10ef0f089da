//! Running a command inside a running container (upgrade hooks, health checks): containerd's
//! `Exec` with the container's own process settings (env, user, working directory) and its output
//! captured in a file the shim writes (`file://` stdio).

use super::{Containerd, Error};
use crate::runtime::ExecResult;
use containerd_client::services::v1::{
    DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest, StartRequest, WaitRequest,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How containerd recognises an OCI process spec inside an `Any`.
pub(super) const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// Most output kept from one command (its end, which holds the error if there is one).
const OUTPUT_LIMIT: u64 = 64 << 10;

static EXEC_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Containerd {
    /// Forgets exec process `exec_id` of container `id`: the shim's entry goes (after it
    /// finished copying the process's output). Best effort: a process already gone is fine.
    pub(super) async fn delete_exec(&self, id: &str, exec_id: &str) {
        let req = DeleteProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        };
        let _ = self.tasks().delete_process(self.request(req, None)).await;
    }

    /// Sends `signal` to exec process `exec_id` of container `id` alone.
    pub(super) async fn signal_exec(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
    ) -> Result<(), tonic::Status> {
        let req = KillRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            signal,
            all: false,
        };
        self.tasks().kill(self.request(req, None)).await.map(|_| ())
    }

    /// The process settings (env, user, working directory, capabilities…) of container `id`'s
    /// spec, which an exec'd command runs with.
    pub(super) async fn container_process(&self, id: &str) -> Result<oci_spec::runtime::Process, Error> {
        let unexpected = |detail: String| Error::Unexpected {
            op: format!("exec in {id}"),
            detail,
        };
        let container = self
            .containers()
            .get(self.request(GetContainerRequest { id: id.into() }, None))
            .await
            .map_err(Error::rpc(format!("container get {id}")))?
            .into_inner()
            .container
            .unwrap_or_default();
        let spec: oci_spec::runtime::Spec = serde_json::from_slice(
            &container
                .spec
                .ok_or_else(|| unexpected("the container has no spec".into()))?
                .value,
        )
        .map_err(|e| unexpected(e.to_string()))?;
        spec.process()
            .clone()
            .ok_or_else(|| unexpected("the container spec has no process".into()))
    }

    /// Runs `argv` in container `id` (whose task must be running) and waits at most `timeout`;
    /// a command still running then is killed and reported with no exit code.
    pub(crate) async fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, Error> {
        let unexpected = |detail: String| Error::Unexpected {
            op: format!("exec in {id}"),
            detail,
        };
        let mut process = self.container_process(id).await?;
        process.set_args(Some(argv.to_vec()));
        process.set_terminal(Some(false));
        let value = serde_json::to_vec(&process).map_err(|e| unexpected(e.to_string()))?;

        let n = EXEC_COUNTER.fetch_add(1, Ordering::Relaxed);
        let exec_id = format!("tpcm-{}-{n}", std::process::id());
        // The shim appends the command's stdout and stderr to this file.
        let output = tempfile::Builder::new()
            .prefix("tpcm-exec-")
            .tempfile()
            .map_err(|e| unexpected(format!("temporary output file: {e}")))?;
        let uri = format!("file://{}", output.path().display());
        let req = ExecProcessRequest {
            container_id: id.into(),
            stdin: String::new(),
            stdout: uri.clone(),
            stderr: uri,
            terminal: false,
            spec: Some(prost_types::Any {
                type_url: PROCESS_TYPE_URL.into(),
                value,
            }),
            exec_id: exec_id.clone(),
        };
        self.tasks()
            .exec(self.request(req, None))
            .await
            .map_err(Error::rpc(format!("exec in {id}")))?;
        let result = self.run_exec(id, &exec_id, timeout).await;
        // Deleting the process also waits for the shim to finish copying its output.
        self.delete_exec(id, &exec_id).await;
        let code = result?;
        Ok(ExecResult {
            code,
            output: read_tail(output.path(), OUTPUT_LIMIT),
        })
    }

    async fn run_exec(&self, id: &str, exec_id: &str, timeout: Duration) -> Result<Option<u32>, Error> {
        let ids = || WaitRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        };
        let start = StartRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        };
        self.tasks()
            .start(self.request(start, None))
            .await
            .map_err(Error::rpc(format!("exec start in {id}")))?;
        // An exec process that already ended still answers Wait until it is deleted.
        let mut tasks = self.tasks();
        let wait = tasks.wait(self.request(ids(), None));
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => Ok(Some(
                r.map_err(Error::rpc(format!("exec wait in {id}")))?
                    .into_inner()
                    .exit_status,
            )),
            Err(_) => {
                let _ = self.signal_exec(id, exec_id, libc::SIGKILL as u32).await;
                let _ = self.tasks().wait(self.request(ids(), None)).await;
                Ok(None)
            }
        }
    }
}

/// The last `limit` bytes of a file, as text.
fn read_tail(path: &std::path::Path, limit: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(limit)));
    let mut buf = Vec::new();
    let _ = f.take(limit).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
