//! The `tpcm` binary: parses the command line and hands over to [`tpcm::cli`].

fn main() -> std::process::ExitCode {
    // Imports pass 1 MiB chunks between several threads. glibc gives each thread its own heap
    // arena and every arena keeps freed chunks, so the resident size grew with the number of
    // threads (measured 43-64 MiB on the import bench); two arenas keep it near 45 MiB at the
    // same speed. (A fixed mmap threshold bounded it better but cost 240k page faults, +30 %.)
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    tpcm::cli::main()
}
