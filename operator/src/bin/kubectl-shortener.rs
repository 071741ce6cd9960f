//! `kubectl-shortener`: on PATH, kubectl runs it as `kubectl shortener ...`.

use std::process::ExitCode;

use clap::Parser;
use operator::cli::{self, Cli};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match Cli::try_parse() {
        Ok(args) => args,
        // Usage errors exit 1 like every other error, as kubectl's do; --help exits 0.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli::commands::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
