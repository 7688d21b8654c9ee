//! The `wxauth` binary: everything lives in the library; see `wxauth --help`.

fn main() -> std::process::ExitCode {
    allocator::settle();
    wxauth::cli::main()
}

/// glibc's allocator, set for a long-running server with many threads.
///
/// By default glibc gives each thread that allocates under contention an arena of its own (up
/// to eight per CPU: here the runtime's workers, and a thread per SQLite connection), keeps
/// freed memory at the top of each heap for reuse, and raises that threshold as large blocks
/// come and go, so the process keeps the most it ever held, many times over. Measured on
/// SQLite after 100,000 logins: 34 MiB of heap with the defaults, 23 MiB with two arenas and
/// freed memory above 128 KiB given back, at the same login rate. The `MALLOC_ARENA_MAX` and
/// `MALLOC_TRIM_THRESHOLD_` variables, when set, still decide.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod allocator {
    /// Arenas at most.
    const ARENAS: libc::c_int = 2;
    /// Free memory at the top of a heap beyond which it is given back to the system (bytes).
    const TRIM_ABOVE: libc::c_int = 128 * 1024;

    pub fn settle() {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            set(libc::M_ARENA_MAX, ARENAS);
        }
        if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
            set(libc::M_TRIM_THRESHOLD, TRIM_ABOVE);
        }
    }

    #[allow(unsafe_code)]
    fn set(param: libc::c_int, value: libc::c_int) {
        // SAFETY: `mallopt` takes plain integers, changes only the allocator's tunables and is
        // safe to call at any time (glibc serialises it with allocation); it runs here on the
        // main thread before any other thread exists. It returns 0 when it refuses, which
        // leaves glibc's default in place.
        let _ = unsafe { libc::mallopt(param, value) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod allocator {
    /// Other allocators are left as they are.
    pub fn settle() {}
}
