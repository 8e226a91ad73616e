//! The `attune` binary: the command line in [`attune::cli::main`].

// The pipeline allocates many small, short-lived values per event on
// several threads (requests, rows, JSON); mimalloc's thread-local free
// lists cost less there than the system allocator's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    attune::cli::main()
}
