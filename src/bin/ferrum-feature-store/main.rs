//! `ferrum-feature-store`: the mock Feast feature server (same image as the API, another
//! command). Parse flags, set up logging, serve; the router lives in [`mock`] (this binary's
//! own module tree, so the library does not carry it) and is tested without a socket.

mod mock;

use clap::Parser;
use ferrum_serve::telemetry;
use mock::MockArgs;

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
