//! `-e` and `--env-file`: the only flags that read anything outside the `--args` text (files, and
//! tpcm's own environment for a bare `KEY`). They are read once, when the spec is built; the
//! record keeps the resolved `KEY=VALUE` entries.

use super::{ArgsError, Outside, invalid};
use crate::tpc_spec;
use std::io::Read;

/// Largest `--env-file` read: a guard against naming a device or a huge file by mistake.
pub const MAX_ENV_FILE: u64 = 1024 * 1024;

/// Later values of a key replace earlier ones in place (the order of first appearance stays).
pub(super) fn dedup_env(env: Vec<String>) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let mut out: Vec<String> = Vec::with_capacity(env.len());
    for e in env {
        match out.iter_mut().find(|o| key(o) == key(&e)) {
            Some(o) => *o = e,
            None => out.push(e),
        }
    }
    out
}

/// The value of `key` in tpcm's environment, if set.
fn from_environment(flag: &str, key: &str, outside: &Outside<'_>) -> Result<Option<String>, ArgsError> {
    let Some(lookup) = outside.environment else {
        return Ok(None);
    };
    match lookup(key) {
        None => Ok(None),
        Some(v) => {
            let v = v.into_string().map_err(|_| {
                invalid(
                    flag,
                    format!("{key}: its value in tpcm's environment is not UTF-8"),
                )
            })?;
            tpc_spec::check_env_value(key, &v)?;
            Ok(Some(v))
        }
    }
}

/// `-e KEY=VALUE` as given; `-e KEY` from tpcm's environment, or nothing when it is not set.
pub(super) fn env_entry(e: &str, outside: &Outside<'_>) -> Result<Option<String>, ArgsError> {
    match e.split_once('=') {
        Some(("", _)) => Err(invalid("--env", format!("{e:?} has no variable name"))),
        Some((k, v)) => {
            tpc_spec::check_env_name(k)?;
            tpc_spec::check_env_value(k, v)?;
            Ok(Some(e.to_string()))
        }
        None if e.is_empty() => Err(invalid("--env", "empty variable name")),
        None => {
            tpc_spec::check_env_name(e)?;
            Ok(from_environment("--env", e, outside)?.map(|v| format!("{e}={v}")))
        }
    }
}

/// Reads a docker env file: `KEY=VALUE` lines (value kept verbatim: no quote removal, no
/// trimming), bare `KEY` lines taken from tpcm's environment (dropped when unset), `#` comment
/// lines and blank lines skipped, leading whitespace ignored, CRLF and a UTF-8 BOM accepted.
/// Errors name the file and the line number, never the line's text: the file may be one that
/// was named by mistake and holds secrets.
pub(super) fn read_env_file(path: &str, outside: &Outside<'_>) -> Result<Vec<String>, ArgsError> {
    const FLAG: &str = "--env-file";
    let fail = |m: String| invalid(FLAG, format!("{path}: {m}"));
    if path.is_empty() {
        return Err(invalid(FLAG, "empty path"));
    }
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_ENV_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_ENV_FILE {
        return Err(fail(format!("larger than {MAX_ENV_FILE} bytes")));
    }
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let mut line = std::str::from_utf8(raw).map_err(|_| fail(format!("line {n}: not UTF-8")))?;
        if n == 1 {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.contains('\0') {
            return Err(fail(format!("line {n}: contains a NUL character")));
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line.trim_end(), None),
        };
        if key.is_empty() {
            return Err(fail(format!("line {n}: no variable name")));
        }
        if key.contains([' ', '\t']) {
            return Err(fail(format!(
                "line {n}: the variable name contains whitespace (is this an env file?)"
            )));
        }
        match value {
            Some(v) => out.push(format!("{key}={v}")),
            None => {
                if let Some(v) = from_environment(FLAG, key, outside)? {
                    out.push(format!("{key}={v}"));
                }
            }
        }
    }
    Ok(out)
}
