//! `ferrum-feature-store`: the mock Feast feature server (same image as the API, another
//! command). Parse flags, set up logging, serve; the router lives in
//! `ferrum_serve::features::mock` so it is tested without a socket.

use clap::Parser;
use ferrum_serve::features::mock::{self, MockArgs};
use ferrum_serve::telemetry;

#[tokio::main]
async fn main() {
    let args = MockArgs::parse();
    telemetry::init_logging(args.log_format);
    if let Err(error) = mock::serve(args).await {
        tracing::error!(error = %error, "ferrum-feature-store cannot start");
        eprintln!("error: {error}");
        std::process::exit(1);
    }
    tracing::info!("stopped");
}
