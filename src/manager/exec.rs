//! `tpcm exec`: run a command in a running TPC, its streams attached to the caller's (the
//! runtime copies them; a terminal when asked), and pass its exit code back.

use super::Error;
use super::container::{require, validate_name};
use super::store::Store;
use crate::config::Settings;
use crate::runtime::{ContainerState, ExecExit, ExecRequest, ExecStdio, Runtime};

/// Runs `request` in TPC `name`, which must be running.
pub async fn exec<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    name: &str,
    request: &ExecRequest,
    stdio: ExecStdio,
) -> Result<ExecExit, Error> {
    validate_name(name)?;
    if request.argv.is_empty() {
        return Err(Error::Invalid("exec: give the command to run after --".into()));
    }
    for kv in &request.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Error::Invalid(format!("--env {kv:?}: give KEY=VALUE")))?;
        crate::tpc_spec::check_env_name(k).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::tpc_spec::check_env_value(k, v).map_err(|e| Error::Invalid(e.to_string()))?;
    }
    if let Some(u) = &request.user {
        crate::tpc_spec::check_user(u).map_err(|e| Error::Invalid(e.to_string()))?;
    }
    if let Some(w) = &request.workdir
        && !w.starts_with('/')
    {
        return Err(Error::Invalid(format!("--workdir {w:?}: give an absolute path")));
    }
    require(&Store::new(&settings.root), name)?;
    if !matches!(
        runtime.container_state(name).await?,
        ContainerState::Running { .. }
    ) {
        return Err(Error::InUse(format!(
            "TPC {name} is not running; start it first (tpcm start {name})"
        )));
    }
    Ok(runtime.exec_attached(name, request, stdio).await?)
}
