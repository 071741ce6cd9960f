//! `kubectl-shortener`: on PATH, kubectl runs it as `kubectl shortener ...`.

use std::process::ExitCode;

use clap::Parser;
use operator::cli::{self, Cli};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Cli::parse();
    match cli::commands::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
