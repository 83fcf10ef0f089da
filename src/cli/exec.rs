//! `tpcm exec`: the caller's terminal side. With `-t` the process gets a pseudo-terminal
//! (made by the runtime); when our stdin is a terminal it is put in raw mode for the session
//! (restored after, whatever happens), so keys reach the process as typed, and its size follows
//! ours (SIGWINCH). SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to tpcm go to the process (a second
//! SIGINT or SIGTERM as SIGKILL). The
//! process's exit code becomes ours; a command that is not there exits 127, one that cannot run
//! 126, as docker's.

use crate::config::Settings;
use crate::runtime::{ExecExit, ExecRequest, ExecStdio, WindowSize};
use clap::Args;
use std::io::IsTerminal;
use std::os::fd::AsFd;

/// Exit code of a command that does not exist in the container (docker's).
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit code of a command that cannot be run (docker's).
pub const EXIT_CANNOT_RUN: i32 = 126;

/// `tpcm exec`.
#[derive(Args, Debug)]
pub(super) struct Exec {
    /// TPC name.
    name: String,
    /// Keep stdin open and forward it to the command.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Give the command a pseudo-terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Run as user[:group] (names or numeric ids, looked up in the container).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// Set an environment variable (KEY=VALUE); repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The command and its arguments (after --).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// Puts a terminal in raw mode until dropped.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> Result<RawMode, String> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved =
            tcgetattr(stdin.as_fd()).map_err(|e| format!("cannot read the terminal's settings: {e}"))?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .map_err(|e| format!("cannot put the terminal in raw mode: {e}"))?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// The size of the terminal on `fd`, if it is one.
fn window_size(fd: std::os::fd::BorrowedFd<'_>) -> Option<WindowSize> {
    use std::os::fd::AsRawFd;
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we pass.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(WindowSize {
        cols: ws.ws_col,
        rows: ws.ws_row,
    })
}

/// The caller's terminal size: stdin's, else stdout's.
fn our_size() -> Option<WindowSize> {
    window_size(std::io::stdin().as_fd()).or_else(|| window_size(std::io::stdout().as_fd()))
}

/// The signals an operator sends `tpcm exec` (Ctrl-C, `kill`, a closed SSH session's hangup),
/// for the process in the container: it decides how to end, and its exit code becomes ours.
/// Were they left to their default action, tpcm would die and the process run on, unseen, with
/// its pipes and containerd's record of it left behind. A second SIGINT or SIGTERM is passed
/// on as SIGKILL, for a process that ignores or takes too long over the first.
fn forwarded_signals() -> tokio::sync::mpsc::Receiver<i32> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let asked_to_stop = Arc::new(AtomicBool::new(false));
    for (kind, number) in [
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::hangup(), libc::SIGHUP),
        (SignalKind::quit(), libc::SIGQUIT),
    ] {
        let Ok(mut received) = signal(kind) else {
            continue;
        };
        let (tx, asked_to_stop) = (tx.clone(), asked_to_stop.clone());
        tokio::spawn(async move {
            while received.recv().await.is_some() {
                let stop = number == libc::SIGINT || number == libc::SIGTERM;
                let sent = if stop && asked_to_stop.swap(true, Ordering::SeqCst) {
                    libc::SIGKILL
                } else {
                    number
                };
                if tx.send(sent).await.is_err() {
                    break;
                }
            }
        });
    }
    rx
}

pub(super) async fn exec(cmd: Exec, settings: &Settings) -> Result<(), String> {
    let stdin_tty = std::io::stdin().is_terminal();
    if cmd.tty && cmd.interactive && !stdin_tty {
        // docker's refusal: raw keys cannot come from a pipe.
        return Err("the input device is not a TTY (use -i without -t to pipe input)".into());
    }
    let request = ExecRequest {
        argv: cmd.command,
        user: cmd.user,
        workdir: cmd.workdir,
        env: cmd.env,
        tty: cmd.tty,
        size: cmd.tty.then(our_size).flatten(),
    };
    let cd = super::connect(settings).await?;
    let resize = if cmd.tty {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        if let Ok(mut winch) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) {
            tokio::spawn(async move {
                while winch.recv().await.is_some() {
                    if let Some(size) = our_size()
                        && tx.send(size).await.is_err()
                    {
                        break;
                    }
                }
            });
        }
        Some(rx)
    } else {
        None
    };
    let stdio = ExecStdio {
        signals: Some(forwarded_signals()),
        stdin: cmd
            .interactive
            .then(|| Box::new(std::io::stdin()) as Box<dyn std::io::Read + Send>),
        stdout: Box::new(std::io::stdout()),
        stderr: Box::new(std::io::stderr()),
        resize,
    };
    let outcome = {
        let _raw = if cmd.tty && cmd.interactive && stdin_tty {
            Some(RawMode::enter()?)
        } else {
            None
        };
        crate::manager::exec::exec(&cd, settings, &cmd.name, &request, stdio).await
        // The terminal is restored here, before anything is printed or we exit.
    };
    let code = match outcome.map_err(|e| e.to_string())? {
        ExecExit::Code(c) => c.min(255) as i32,
        ExecExit::NotFound(why) => {
            eprintln!("tpcm: error: {}", why.replace('\n', " "));
            EXIT_NOT_FOUND
        }
        ExecExit::CannotRun(why) => {
            eprintln!("tpcm: error: {}", why.replace('\n', " "));
            EXIT_CANNOT_RUN
        }
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
