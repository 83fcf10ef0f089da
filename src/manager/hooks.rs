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
use crate::runtime::{ContainerState, Error as RuntimeError, Runtime};
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

    /// "pre" or "post".
    fn short(self) -> &'static str {
        match self {
            Hook::Pre => "pre",
            Hook::Post => "post",
        }
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

/// What looking for a hook found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A hook to run.
    Hook(HookSource),
    /// Neither the data directory nor the image has it.
    Nothing,
    /// The data directory has none and the image cannot be read (it is gone, as the original
    /// image of a TPC restored by a migration is, or this kernel cannot read it safely): why.
    Unreadable(String),
}

impl Found {
    /// The line an upgrade prints when there is no hook to run.
    pub fn absence(&self, hook: Hook) -> Option<String> {
        match self {
            Found::Hook(_) => None,
            Found::Nothing => Some(format!(
                "No {} hook found: neither the data directory nor the {} image has {}",
                hook.short(),
                hook.version(),
                hook.path()
            )),
            Found::Unreadable(why) => Some(format!(
                "No {} hook in the data directory, and the {} image's {} cannot be read ({why}): no {} hook runs",
                hook.short(),
                hook.version(),
                hook.path(),
                hook.short()
            )),
        }
    }

    /// `self` as found earlier, looked at again just before the hook runs: an operator's copy
    /// may have appeared in the data directory (written by the pre hook, say) or gone since.
    pub fn again(self, data_dir: &Path, hook: Hook) -> Found {
        match self {
            _ if data_dir.join(hook.relative()).is_file() => Found::Hook(HookSource::DataDir),
            Found::Hook(HookSource::DataDir) => Found::Nothing,
            other => other,
        }
    }
}

/// Finds `hook` for a TPC whose data directory is `data_dir` and whose (old or new) image is
/// `image`: the data directory's copy first, then the image's. A hook the image holds but that
/// cannot be run (not a text script, not a regular file, too large) is an error.
pub async fn find<R: Runtime>(
    runtime: &R,
    data_dir: &Path,
    image: &ImageRef,
    hook: Hook,
) -> Result<Found, Error> {
    if data_dir.join(hook.relative()).is_file() {
        return Ok(Found::Hook(HookSource::DataDir));
    }
    let path = hook.path();
    if image.digest.is_empty() {
        // Its name may point at another image by now.
        return Ok(Found::Unreadable("the image is known only by name".into()));
    }
    let read = match runtime.read_image_file(image, &path, IMAGE_HOOK_LIMIT).await {
        Ok(read) => read,
        Err(RuntimeError::ImageNotFound(_)) => {
            return Ok(Found::Unreadable(format!(
                "{} is no longer stored",
                image.reference
            )));
        }
        Err(RuntimeError::FailedPrecondition(why)) => return Ok(Found::Unreadable(why)),
        Err(e) => {
            return Err(Error::Invalid(format!(
                "cannot read {path} from the {} image {}: {e}",
                hook.version(),
                image.reference
            )));
        }
    };
    let Some(bytes) = read else {
        return Ok(Found::Nothing);
    };
    // It is passed as an argument: text without NUL bytes.
    match String::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => Ok(Found::Hook(HookSource::Image(text))),
        _ => Err(Error::Invalid(format!(
            "{path} in the {} image {} is not a text script",
            hook.version(),
            image.reference
        ))),
    }
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

    /// The data directory's post hook run in container `app`.
    async fn run_post_hook(rt: &FakeRuntime) -> Result<(), String> {
        run(
            rt,
            "app",
            Hook::Post,
            &HookSource::DataDir,
            Duration::from_secs(1),
            &|_| {},
        )
        .await
    }

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
        assert_eq!(
            find(&rt, data.path(), &image(), Hook::Pre).await.unwrap(),
            Found::Nothing
        );
        rt.state.lock().unwrap().image_files.insert(
            (OLD.into(), "/tpc/hook/pre.sh".into()),
            b"echo from image".to_vec(),
        );
        assert_eq!(
            find(&rt, data.path(), &image(), Hook::Pre).await.unwrap(),
            Found::Hook(HookSource::Image("echo from image".into()))
        );
        std::fs::create_dir(data.path().join("hook")).unwrap();
        std::fs::write(data.path().join("hook/pre.sh"), "echo mine").unwrap();
        assert_eq!(
            find(&rt, data.path(), &image(), Hook::Pre).await.unwrap(),
            Found::Hook(HookSource::DataDir)
        );
        assert_eq!(
            find(&rt, data.path(), &image(), Hook::Post).await.unwrap(),
            Found::Nothing
        );
        // Looked at again before it runs: the data directory's copy appeared, or went.
        assert_eq!(
            Found::Nothing.again(data.path(), Hook::Pre),
            Found::Hook(HookSource::DataDir)
        );
        std::fs::remove_file(data.path().join("hook/pre.sh")).unwrap();
        assert_eq!(
            Found::Hook(HookSource::DataDir).again(data.path(), Hook::Pre),
            Found::Nothing
        );
        assert_eq!(
            Found::Hook(HookSource::Image("x".into())).again(data.path(), Hook::Pre),
            Found::Hook(HookSource::Image("x".into()))
        );
    }

    #[tokio::test]
    async fn an_image_that_is_gone_or_known_by_name_only_is_unreadable_not_an_error() {
        let rt = FakeRuntime::new();
        let data = tempfile::tempdir().unwrap();
        let found = find(&rt, data.path(), &image(), Hook::Pre).await.unwrap();
        assert!(
            matches!(found, Found::Unreadable(ref why) if why.contains("no longer stored")),
            "{found:?}"
        );
        let by_name = ImageRef {
            reference: "docker.io/acme/app:1".into(),
            digest: String::new(),
        };
        let found = find(&rt, data.path(), &by_name, Hook::Pre).await.unwrap();
        assert!(matches!(found, Found::Unreadable(_)), "{found:?}");
        assert!(found.absence(Hook::Pre).unwrap().contains("no pre hook runs"));
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
        let e = run_post_hook(&rt).await.unwrap_err();
        assert_eq!(
            e,
            "the new version exited with code 3 before /tpc/hook/post.sh could run"
        );
    }

    #[tokio::test]
    async fn a_hook_that_fails_while_its_container_runs_is_the_hooks_failure() {
        let rt = FakeRuntime::new();
        rt.state
            .lock()
            .unwrap()
            .tasks
            .insert("app".into(), ContainerState::Running { pid: 7 });
        rt.state
            .lock()
            .unwrap()
            .exec_codes
            .insert("/tpc/hook/post.sh".into(), 137);
        let ran = run_post_hook(&rt).await;
        assert_eq!(ran.unwrap_err(), "/tpc/hook/post.sh failed (exit code 137)");
        rt.fail("exec_in_container", 1);
        let ran = run_post_hook(&rt).await;
        assert!(ran.unwrap_err().starts_with("/tpc/hook/post.sh could not run"));
    }
}
