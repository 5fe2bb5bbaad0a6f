//! The process allocator of the `plover` binary and of the in-process benchmarks: mimalloc,
//! with eager arena commit off.
//!
//! Why not the system allocator: under glibc's malloc the engine's many small, short-lived
//! allocations across worker threads (sled's node copies, staged results, commit batches)
//! queued on malloc's arena locks, and that waiting was most of what durable tracking cost on
//! sled (BENCHMARKS.md, "Tracking"). Why eager commit off: by default mimalloc commits each
//! arena it reserves on Linux, which tripled the resident memory of an idle node.
//!
//! Declare it once per binary: `#[global_allocator] static A: PloverAllocator = PloverAllocator;`

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};

/// mimalloc's `mi_option_arena_eager_commit` (index 4 of `mi_option_e` in mimalloc v3's
/// `mimalloc.h`; libmimalloc-sys does not name it).
pub const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

static OPTIONS_SET: AtomicBool = AtomicBool::new(false);

/// mimalloc with Plover's options applied before the first allocation it serves.
pub struct PloverAllocator;

impl PloverAllocator {
    #[inline]
    fn ensure_options() {
        if !OPTIONS_SET.load(Ordering::Relaxed) {
            set_options();
        }
    }
}

#[cold]
fn set_options() {
    // `set_default` keeps a value the operator gave in MIMALLOC_ARENA_EAGER_COMMIT. Two
    // threads racing here both write the same value, so no lock is needed (and none could
    // be taken inside the allocator).
    // SAFETY: sets one integer option; it neither allocates nor reads memory of ours.
    unsafe { libmimalloc_sys::mi_option_set_default(ARENA_EAGER_COMMIT, 0) };
    OPTIONS_SET.store(true, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to mimalloc's `GlobalAlloc`, which upholds the
// contract; `ensure_options` runs before and does not allocate.
unsafe impl GlobalAlloc for PloverAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::ensure_options();
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::ensure_options();
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// What the running process's allocator is set to, for tests and diagnostics: whether
/// `ptr` came from mimalloc, and the eager-commit option in force.
pub fn describe(ptr: *const u8) -> (bool, std::ffi::c_long) {
    // SAFETY: both calls only read allocator metadata; `mi_is_in_heap_region` accepts any
    // address.
    unsafe {
        (
            libmimalloc_sys::mi_is_in_heap_region(ptr.cast()),
            libmimalloc_sys::mi_option_get(ARENA_EAGER_COMMIT),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVERRIDE: &str = "MIMALLOC_ARENA_EAGER_COMMIT";
    const CHILD: &str = "PLOVER_ALLOCATOR_CHILD";

    /// This test binary's global allocator is the system's; `PloverAllocator` is called
    /// directly, as `#[global_allocator]` would call it.
    fn allocate_and_describe() -> (bool, std::ffi::c_long) {
        let layout = Layout::from_size_align(256, 8).unwrap();
        // SAFETY: a non-zero layout, freed with the same layout by the same allocator.
        unsafe {
            let ptr = PloverAllocator.alloc(layout);
            assert!(!ptr.is_null());
            let described = describe(ptr);
            PloverAllocator.dealloc(ptr, layout);
            described
        }
    }

    #[test]
    fn serves_from_mimalloc_with_eager_arena_commit_off() {
        if std::env::var_os(CHILD).is_some() {
            return; // the child run below checks the override instead
        }
        let outside = Box::new(0u64);
        assert!(
            !describe(&*outside as *const u64 as *const u8).0,
            "a system allocation counted as mimalloc's: the check would prove nothing"
        );
        let expected = if std::env::var_os(OVERRIDE).is_some() {
            None
        } else {
            Some(0)
        };
        let (from_mimalloc, eager_commit) = allocate_and_describe();
        assert!(from_mimalloc);
        if let Some(expected) = expected {
            assert_eq!(eager_commit, expected);
        }
    }

    /// Run alone in a child process with the operator's setting, reports what is in force.
    #[test]
    fn child_reports_eager_commit() {
        if std::env::var_os(CHILD).is_some() {
            println!("eager-commit={}", allocate_and_describe().1);
        }
    }

    #[test]
    fn an_operator_setting_in_the_environment_wins() {
        if std::env::var_os(CHILD).is_some() {
            return;
        }
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "allocator::tests::child_reports_eager_commit",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env(OVERRIDE, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        assert!(stdout.contains("eager-commit=1"), "{stdout}");
    }
}
