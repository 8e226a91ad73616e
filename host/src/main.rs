//! The `attune` binary: parse the command line, set up logging, hand over.

use clap::Parser;

// The pipeline allocates many small, short-lived values per event on
// several threads (requests, rows, JSON); mimalloc's thread-local free
// lists cost less there than the system allocator's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // With transparent huge pages on for every mapping (`always`, a common
    // default), the kernel backs the allocator's arenas with 2 MiB pages as
    // they are first touched, so an idle server held tens of MiB it never
    // used. Ordinary pages keep it small; the sandbox's own memories are
    // not the allocator's and are sized per execution anyway.
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes no pointers; it sets a flag of this
    // process, inherited by its children.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the async runtime starts")
        .block_on(run())
}

async fn run() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ATTUNE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = attune::cli::Cli::parse();
    match attune::cli::run(cli).await {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            // The server refused the request (bad input, not found, conflict…)
            // → 2, like a local invalid-input error; anything else → 70.
            let refused = matches!(
                e.downcast_ref::<attune::client::ClientError>(),
                Some(attune::client::ClientError::Api { status, .. }) if status.is_client_error()
            );
            std::process::ExitCode::from(if refused { 2 } else { 70 })
        }
    }
}
