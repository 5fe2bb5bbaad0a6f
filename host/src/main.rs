//! The `plover` binary: a thin layer over the library (see `plover_host::cli`).

fn main() -> std::process::ExitCode {
    plover_host::cli::main()
}
