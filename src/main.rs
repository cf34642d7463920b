//! The `berth` binary.

fn main() -> std::process::ExitCode {
    tune_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
        .block_on(berth::cli::main())
}

/// glibc raises its mmap threshold to the size of every large block freed (up to 32 MiB), so
/// after a few big transient buffers (store snapshots, watch relists, large list replies)
/// such blocks come from the heap and are never returned. Pinned at 1 MiB, `berth bench
/// scale` read 131–132 MiB after the fill instead of 182–202 MiB; pinned at glibc's initial
/// 128 KiB, mid-sized buffers went through mmap too and idle CPU rose to ~2% (README).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
