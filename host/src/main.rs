//! The `plover` binary: a thin layer over the library (see `plover_host::cli`).

use plover_host::allocator::PloverAllocator;

#[global_allocator]
static ALLOCATOR: PloverAllocator = PloverAllocator;

fn main() -> std::process::ExitCode {
    plover_host::cli::main()
}
