//! The `attune` binary: parse the command line, set up logging, hand over.

use clap::Parser;

// The pipeline allocates many small, short-lived values per event on
// several threads (requests, rows, JSON); mimalloc's thread-local free
// lists cost less there than the system allocator's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
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
