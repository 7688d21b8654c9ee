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
/// freed memory above 128 KiB given back, at the same login rate.
///
/// That setting gives back only what is free at the top of a heap. Memory freed below a block
/// still in use stays with the process, however much of it there is: after bursts of many
/// connections (a load test's end, a crowd of clients going away) that was measured at about
/// 14 MiB of a 54 MiB process. So a thread of its own looks once a second at how much the
/// allocator holds free and, past [`TRIM_WHEN_FREE`], has it give back every whole free page
/// (`malloc_trim`), wherever it lies.
///
/// The `MALLOC_ARENA_MAX` and `MALLOC_TRIM_THRESHOLD_` variables, when set, still decide; with
/// `MALLOC_TRIM_THRESHOLD_` set, trimming is left to glibc alone.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod allocator {
    use std::time::Duration;

    /// Arenas at most.
    const ARENAS: libc::c_int = 2;
    /// Free memory at the top of a heap beyond which it is given back to the system (bytes).
    const TRIM_ABOVE: libc::c_int = 128 * 1024;
    /// How often the trimming thread looks.
    const TRIM_EVERY: Duration = Duration::from_secs(1);
    /// Free memory held by the allocator (bytes) past which its free pages are given back.
    const TRIM_WHEN_FREE: usize = 4 * 1024 * 1024;

    pub fn settle() {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            set(libc::M_ARENA_MAX, ARENAS);
        }
        if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
            set(libc::M_TRIM_THRESHOLD, TRIM_ABOVE);
            // Without a thread the process still works; it keeps what it freed, as glibc does.
            let _ = std::thread::Builder::new()
                .name("wxauth-trim".to_owned())
                .stack_size(64 * 1024)
                .spawn(|| {
                    loop {
                        std::thread::sleep(TRIM_EVERY);
                        if free_bytes() >= TRIM_WHEN_FREE {
                            trim();
                        }
                    }
                });
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

    /// The bytes the allocator holds free, in every arena.
    #[allow(unsafe_code)]
    fn free_bytes() -> usize {
        // SAFETY: `mallinfo2` (glibc 2.33 and later) only reads the allocator's statistics,
        // taking each arena's lock as allocation does, and returns them by value.
        unsafe { libc::mallinfo2() }.fordblks
    }

    /// Gives every whole free page of every arena back to the system.
    #[allow(unsafe_code)]
    fn trim() {
        // SAFETY: `malloc_trim` is thread-safe (it takes each arena's lock in turn) and only
        // releases pages no allocation holds; it returns whether it released any.
        let _ = unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod allocator {
    /// Other allocators are left as they are.
    pub fn settle() {}
}
