//! `ferrum-serve --healthcheck`, the probe the Docker HEALTHCHECK and docker-compose run, against
//! the real server: 0 once ready, 1 for a non-2xx answer or when nothing listens.

mod common;

use std::process::Command;

use common::Server;

/// Runs the binary as a probe with the given arguments and environment; returns the exit code
/// and what it printed.
fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrum-serve"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("HOST")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text)
}

#[tokio::test]
async fn probe_follows_the_servers_readiness_and_port_setting() {
    let server = Server::start_ready(&[]).await;
    let port = server.base.rsplit(':').next().unwrap().to_string();

    // The port comes from PORT, exactly as the server reads it; the host defaults to 0.0.0.0,
    // which the probe reaches over loopback.
    let (code, text) = healthcheck(&["--healthcheck"], &[("PORT", &port)]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("/health/ready answered 200"), "{text}");
    let (code, _) = healthcheck(&["--healthcheck", "--port", &port], &[]);
    assert_eq!(code, 0);

    // Another route by URL: liveness is fine, an unknown route is a 404 and so unhealthy.
    let live = format!("--healthcheck=http://127.0.0.1:{port}/health/live");
    assert_eq!(healthcheck(&[&live], &[]).0, 0);
    let missing = format!("--healthcheck=http://127.0.0.1:{port}/no-such-route");
    let (code, text) = healthcheck(&[&missing], &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("answered 404"), "{text}");
}

#[tokio::test]
async fn probe_fails_once_the_server_stopped_and_for_port_zero() {
    let mut server = Server::start_ready(&[]).await;
    let port = server.base.rsplit(':').next().unwrap().to_string();
    server.signal(15);
    server.wait_exit(std::time::Duration::from_secs(30));
    let (code, text) = healthcheck(&["--healthcheck"], &[("PORT", &port)]);
    assert_eq!(code, 1, "{text}");
    assert!(text.starts_with("unhealthy: cannot connect"), "{text}");

    let (code, text) = healthcheck(&["--healthcheck"], &[("PORT", "0")]);
    assert_eq!(code, 1);
    assert!(text.contains("cannot probe port 0"), "{text}");
}
