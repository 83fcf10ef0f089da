//! `tpcm completions <shell>` and `tpcm man <dir>`: shell completions (clap_complete) and man
//! pages (clap_mangen) generated from the very clap definitions the binary parses with. The
//! Debian package runs these on the binary it ships (`scripts/package.sh`), so what is packaged
//! always matches that binary's command line: a subcommand or flag added later needs no second
//! list to be kept up to date. Both are hidden from `--help`: an operator has the packaged files.

use clap::{CommandFactory, ValueEnum};
use std::io::Write;
use std::path::Path;

/// The shells a completion script is generated for.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub(super) enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Writes the completion script for `shell` to stdout.
pub(super) fn completions(shell: Shell) -> Result<(), String> {
    let mut cmd = super::Cli::command();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // Into memory first: clap_complete panics on a write error (a closed pipe, a full disk);
    // this way such an error is tpcm's one-line error.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "tpcm", &mut script);
    std::io::stdout()
        .lock()
        .write_all(&script)
        .map_err(|e| format!("cannot write the completion script: {e}"))
}

/// Writes `tpcm.1` and one page per visible subcommand (`tpcm-install.1`, `tpcm-image-import.1`,
/// ...) into `dir`, which must exist.
pub(super) fn man_pages(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    clap_mangen::generate_to(super::Cli::command(), dir)
        .map_err(|e| format!("cannot write the man pages into {}: {e}", dir.display()))
}
