//! `ferrum-serve`: parse flags, set up logging, serve. Everything else lives in the library.

use clap::Parser;
use ferrum_serve::config::Cli;
use ferrum_serve::{healthcheck, server, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(url) = &cli.healthcheck {
        std::process::exit(healthcheck::main(url, &cli.serve));
    }
    telemetry::init_logging(cli.serve.log_format);
    if let Err(error) = server::run(cli.serve).await {
        // One line an operator can act on, in the log stream and on stderr.
        tracing::error!(error = %error, "ferrum-serve cannot start");
        eprintln!("error: {error}");
        std::process::exit(1);
    }
    tracing::info!("stopped");
    Ok(())
}
