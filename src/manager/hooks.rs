//! The upgrade hooks: `/tpc/hook/pre.sh` runs in the old container before it stops and
//! `/tpc/hook/post.sh` in the new one once it runs, each with `/bin/sh`.
//!
//! A hook comes from one of two places. An operator's copy in the TPC's data directory
//! (`<data root>/<name>/hook/`, which the container sees as `/tpc/hook/`) wins. Otherwise the
//! image's own `/tpc/hook/<hook>` is used, as SONiC's TPCM seed ships it; inside the container
//! that file is hidden under the data directory's mount, so its text is read from the image's
//! root filesystem (the old image for the pre hook, the new one for the post hook) and handed to
//! `/bin/sh -c`, with `$0` set to the hook's path.

use super::Error;
use crate::runtime::{ContainerState, Runtime};
use crate::tpc_spec::ImageRef;
use std::path::Path;
use std::time::Duration;

/// Largest hook read from an image: it travels as one argument, which Linux caps at 128 KiB.
const IMAGE_HOOK_LIMIT: u64 = 64 * 1024;

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Runs in the old container before it stops.
    Pre,
    /// Runs in the new container after it started.
    Post,
}

impl Hook {
    /// Its path relative to the data directory, which is `/tpc` inside the container.
    pub fn relative(self) -> &'static str {
        match self {
            Hook::Pre => "hook/pre.sh",
            Hook::Post => "hook/post.sh",
        }
    }

    /// Its path inside the container (and inside the image).
    pub fn path(self) -> String {
        format!("/tpc/{}", self.relative())
    }

    /// Which container it runs in and which image it may come from.
    fn version(self) -> &'static str {
        match self {
            Hook::Pre => "old",
            Hook::Post => "new",
        }
    }
}

/// Where a hook was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookSource {
    /// In the TPC's data directory: run as the file the container sees.
    DataDir,
    /// In the image: its text.
    Image(String),
}

impl HookSource {
    /// For messages: "from the data directory" / "from the new image".
    fn describe(&self, hook: Hook) -> String {
        match self {
            HookSource::DataDir => "from the data directory".to_string(),
            HookSource::Image(_) => format!("from the {} image", hook.version()),
        }
    }
}

/// Finds `hook` for a TPC whose data directory is `data_dir` and whose (old or new) image is
/// `image`: the data directory's copy first, then the image's. `None` when neither has it.
pub async fn find<R: Runtime>(
    runtime: &R,
    data_dir: &Path,
    image: &ImageRef,
    hook: Hook,
) -> Result<Option<HookSource>, Error> {
    if data_dir.join(hook.relative()).is_file() {
        return Ok(Some(HookSource::DataDir));
    }
    let path = hook.path();
    let read = match runtime.read_image_file(image, &path, IMAGE_HOOK_LIMIT).await {
        Ok(read) => read,
        Err(e) => {
            return Err(Error::Invalid(format!(
                "cannot read {path} from the {} image {}: {e}",
                hook.version(),
                image.reference
            )));
        }
    };
    let Some(bytes) = read else {
        return Ok(None);
    };
    // It is passed as an argument: text without NUL bytes.
    match String::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => Ok(Some(HookSource::Image(text))),
        _ => Err(Error::Invalid(format!(
            "{path} in the {} image {} is not a text script",
            hook.version(),
            image.reference
        ))),
    }
}

/// The line an upgrade prints when it looked for a hook and found none.
pub fn none_found(hook: Hook) -> String {
    format!(
        "No {} found: neither the data directory nor the {} image has {}",
        match hook {
            Hook::Pre => "pre hook",
            Hook::Post => "post hook",
        },
        hook.version(),
        hook.path()
    )
}

/// Runs `hook` from `source` inside the running container `name`, for at most `timeout`,
/// showing its output. A container that exits before or while the hook runs is reported as
/// that exit, which is what went wrong, rather than as the hook's failure to run.
pub async fn run<R: Runtime>(
    runtime: &R,
    name: &str,
    hook: Hook,
    source: &HookSource,
    timeout: Duration,
    say: &dyn Fn(&str),
) -> Result<(), String> {
    let path = hook.path();
    if let Some(exit) = exited(runtime, name).await {
        return Err(format!(
            "the {} version exited with code {exit} before {path} could run",
            hook.version()
        ));
    }
    say(&format!(
        "Running {path} {} in the {} TPC-{name} container",
        source.describe(hook),
        hook.version()
    ));
    let argv = match source {
        HookSource::DataDir => vec!["/bin/sh".to_string(), path.clone()],
        HookSource::Image(text) => vec!["/bin/sh".into(), "-c".into(), text.clone(), path.clone()],
    };
    let ran = runtime.exec_in_container(name, &argv, timeout).await;
    if let Ok(result) = &ran {
        for line in result.output.lines() {
            say(&format!("  {}: {line}", hook.relative()));
        }
        if result.code == Some(0) {
            return Ok(());
        }
    }
    // The container's own exit, if that is what ended the hook, says what went wrong.
    if let Some(exit) = exited(runtime, name).await {
        return Err(format!(
            "the {} version exited with code {exit} while {path} ran",
            hook.version()
        ));
    }
    Err(match ran {
        Err(e) => format!("{path} could not run: {e}"),
        Ok(result) => match result.code {
            Some(code) => format!("{path} failed (exit code {code})"),
            None => format!("{path} did not finish within {} s", timeout.as_secs()),
        },
    })
}

/// The exit code of container `name`'s task, if it exited by itself.
async fn exited<R: Runtime>(runtime: &R, name: &str) -> Option<u32> {
    match runtime.container_state(name).await {
        Ok(ContainerState::Exited { code }) => Some(code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;

    const OLD: &str = "sha256:old";

    fn image() -> ImageRef {
        ImageRef {
            reference: "docker.io/acme/app:1".into(),
            digest: OLD.into(),
        }
    }

    #[tokio::test]
    async fn the_data_directory_wins_then_the_image_then_none() {
        let rt = FakeRuntime::new();
        rt.add_image("docker.io/acme/app:1", OLD);
        let data = tempfile::tempdir().unwrap();
        assert_eq!(find(&rt, data.path(), &image(), Hook::Pre).await.unwrap(), None);
        rt.state.lock().unwrap().image_files.insert(
            (OLD.into(), "/tpc/hook/pre.sh".into()),
            b"echo from image".to_vec(),
        );
        assert_eq!(
            find(&rt, data.path(), &image(), Hook::Pre).await.unwrap(),
            Some(HookSource::Image("echo from image".into()))
        );
        std::fs::create_dir(data.path().join("hook")).unwrap();
        std::fs::write(data.path().join("hook/pre.sh"), "echo mine").unwrap();
        assert_eq!(
            find(&rt, data.path(), &image(), Hook::Pre).await.unwrap(),
            Some(HookSource::DataDir)
        );
        assert_eq!(find(&rt, data.path(), &image(), Hook::Post).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_binary_hook_in_the_image_is_refused_by_name() {
        let rt = FakeRuntime::new();
        rt.add_image("docker.io/acme/app:1", OLD);
        rt.state.lock().unwrap().image_files.insert(
            (OLD.into(), "/tpc/hook/post.sh".into()),
            vec![0x7f, b'E', 0, 0xff],
        );
        let data = tempfile::tempdir().unwrap();
        let e = find(&rt, data.path(), &image(), Hook::Post).await.unwrap_err();
        assert!(
            e.to_string().contains("/tpc/hook/post.sh in the new image"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_container_that_exited_is_reported_as_its_exit() {
        let rt = FakeRuntime::new();
        rt.exit("app", 3);
        let e = run(
            &rt,
            "app",
            Hook::Post,
            &HookSource::DataDir,
            Duration::from_secs(1),
            &|_| {},
        )
        .await
        .unwrap_err();
        assert_eq!(
            e,
            "the new version exited with code 3 before /tpc/hook/post.sh could run"
        );
    }
}
