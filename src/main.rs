//! `ferrum-serve`: parse flags, set up logging and tracing, then serve (the default) or run an
//! offline job. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use ferrum_serve::config::{Cli, Command, LogFormat, ServeArgs};
use ferrum_serve::jobs::{self, drift_report::DRIFT_EXIT_CODE};
use ferrum_serve::telemetry::{self, LogTarget};
use ferrum_serve::{healthcheck, server, shutdown};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(url) = &cli.healthcheck {
        return ExitCode::from(healthcheck::main(url, &cli.serve) as u8);
    }
    match cli.into_command() {
        Command::Serve(args) => serve(args),
        Command::Predict(args) => job(args.model.log_format, || {
            jobs::predict::run(&args).map(|_| true)
        }),
        Command::DriftReport(args) => job(args.model.log_format, || {
            jobs::drift_report::run(&args).map(|report| report.drifted.is_empty())
        }),
        Command::Models(args) => job(args.command.repository().log_format, || {
            jobs::models::run(&args.command, &mut std::io::stdout().lock()).map(|_| true)
        }),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    // Before the runtime starts: the OTLP exporter builds its blocking HTTP client here.
    let telemetry = telemetry::init(args.log_format, LogTarget::Stdout, true);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime
                .block_on(server::run(args, shutdown::termination()))
                .map_err(|e| e.to_string())
        });
    let code = match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            // One line an operator can act on, in the log stream and on stderr.
            tracing::error!(error = %error, "ferrum-serve cannot start");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    };
    // The runtime is gone: flushing the last spans may block.
    telemetry.shutdown();
    code
}

/// Runs a job: exit 0 when it succeeded (and found no drift), 3 for drift, 1 on an error.
fn job(log_format: LogFormat, run: impl FnOnce() -> Result<bool, jobs::JobError>) -> ExitCode {
    let telemetry = telemetry::init(log_format, LogTarget::Stderr, false);
    let code = match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(DRIFT_EXIT_CODE),
        Err(error) => {
            tracing::error!(error = %error, "job failed");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
