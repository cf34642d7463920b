//! The `berth` binary.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    berth::cli::main().await
}
