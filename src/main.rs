//! The `tpcm` binary: parses the command line and hands over to [`tpcm::cli`].

fn main() -> std::process::ExitCode {
    tpcm::cli::main()
}
