//! `ferrum-serve --healthcheck[=URL]`: a probe for container runtimes that have no curl.
//!
//! An edge: reads [`crate::config`] only; only the binary's `main` calls it.
//!
//! A slim image carries only the binary, so Docker's `HEALTHCHECK` and docker-compose's
//! `healthcheck` run the binary itself: it sends one `GET` over a plain [`TcpStream`] and exits 0
//! when the answer's status is 2xx, 1 otherwise. Without a URL it asks this server's own
//! readiness route on the port the server would listen on (`--port` / `PORT`), so the probe and
//! the server read the same setting. With a URL (`http://host:port/path`, plain HTTP only) it can
//! probe another service in the same image, such as the mock feature store.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The route the default probe asks: ready means every model is loaded and warmed up.
pub const READY_PATH: &str = "/health/ready";

/// Where a probe goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address, as sent in the `Host` header (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    /// This server's readiness route, reached over loopback when it listens on every address.
    pub fn local_ready(host: IpAddr, port: u16) -> Result<Target, String> {
        if port == 0 {
            return Err(
                "cannot probe port 0: set --port or PORT to the port the server uses".into(),
            );
        }
        let host = match host {
            IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            other => other,
        };
        Ok(Target {
            host: host.to_string(),
            port,
            path: READY_PATH.into(),
        })
    }

    /// Parses `http://host[:port][/path]`; the port defaults to 80 and the path to `/`.
    pub fn parse_url(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("'{url}': only http:// URLs can be probed"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("'{url}': unclosed '[' in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("'{url}' names no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("'{url}': '{p}' is not a port"))?,
        };
        Ok(Target {
            host: host.into(),
            port,
            path: path.into(),
        })
    }
}

/// Sends `GET target.path` and returns the status code if it is 2xx, or why the probe failed.
/// `timeout` bounds the connect and each read and write.
pub fn probe(target: &Target, timeout: Duration) -> Result<u16, String> {
    let where_ = format!("{}:{}", target.host, target.port);
    let addresses: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {where_}: {e}"))?
        .collect();
    let mut last_error = format!("{where_} resolves to no address");
    let mut stream = None;
    for address in addresses {
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = format!("cannot connect to {address}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last_error)?;
    let io = |e: std::io::Error| format!("{where_}{}: {e}", target.path);
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let host_header = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        where_.clone()
    };
    write!(
        stream,
        "GET {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: ferrum-serve-healthcheck\r\nConnection: close\r\n\r\n",
        target.path
    )
    .map_err(io)?;
    // The status line is all we need; read until its end (or the peer closes).
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let status = parse_status_line(line)
        .ok_or_else(|| format!("{where_}{}: not an HTTP answer: {line:?}", target.path))?;
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(format!("{where_}{} answered {status}", target.path))
    }
}

/// The status code of `HTTP/1.x NNN reason`.
fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3)
        .then(|| code.parse::<u16>().ok())
        .flatten()
        .filter(|c| (100..600).contains(c))
}

/// `--healthcheck[=URL]`: an empty URL means this server's readiness route. Returns the exit code.
pub fn main(url: &str, serve: &crate::config::ServeArgs) -> i32 {
    let target = if url.is_empty() {
        Target::local_ready(serve.host, serve.port)
    } else {
        Target::parse_url(url)
    };
    match target {
        Ok(target) => run(&target),
        Err(reason) => {
            eprintln!("unhealthy: {reason}");
            1
        }
    }
}

/// Probes, prints one line, returns the process exit code (0 or 1).
pub fn run(target: &Target) -> i32 {
    match probe(target, Duration::from_secs(3)) {
        Ok(status) => {
            println!(
                "healthy: {}:{}{} answered {status}",
                target.host, target.port, target.path
            );
            0
        }
        Err(reason) => {
            eprintln!("unhealthy: {reason}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server on loopback that answers the first request with `reply` and hands the
    /// request it read back to the test.
    fn serve_once(reply: &'static [u8]) -> (u16, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 512];
            while !request.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            s.write_all(reply).unwrap();
            String::from_utf8(request).unwrap()
        });
        (port, handle)
    }

    fn local(port: u16) -> Target {
        Target::local_ready("0.0.0.0".parse().unwrap(), port).unwrap()
    }

    #[test]
    fn ok_answer_is_healthy_and_the_request_is_a_plain_get() {
        let (port, server) =
            serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 18\r\n\r\n{\"status\":\"ready\"}");
        assert_eq!(probe(&local(port), Duration::from_secs(2)), Ok(200));
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /health/ready HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
            "{request}"
        );
        assert_eq!(
            run(&local(port_with(b"HTTP/1.1 204 No Content\r\n\r\n"))),
            0
        );
    }

    fn port_with(reply: &'static [u8]) -> u16 {
        serve_once(reply).0
    }

    #[test]
    fn not_ready_garbage_and_nothing_listening_are_unhealthy() {
        let (port, _) = serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let error = probe(&local(port), Duration::from_secs(2)).unwrap_err();
        assert!(error.ends_with("/health/ready answered 503"), "{error}");

        let (port, _) = serve_once(b"SSH-2.0-OpenSSH\r\n");
        let error = probe(&local(port), Duration::from_secs(2)).unwrap_err();
        assert!(error.contains("not an HTTP answer"), "{error}");

        // A port nobody listens on: bind, note it, close it.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = probe(&local(port), Duration::from_secs(2)).unwrap_err();
        assert!(error.contains("cannot connect"), "{error}");
        assert_eq!(run(&local(port)), 1);
    }

    #[test]
    fn local_target_uses_loopback_for_unspecified_addresses() {
        assert_eq!(local(8080).host, "127.0.0.1");
        let v6 = Target::local_ready("::".parse().unwrap(), 8080).unwrap();
        assert_eq!(v6.host, "::1");
        let own = Target::local_ready("10.1.2.3".parse().unwrap(), 9000).unwrap();
        assert_eq!((own.host.as_str(), own.port), ("10.1.2.3", 9000));
        assert!(Target::local_ready("0.0.0.0".parse().unwrap(), 0).is_err());
    }

    #[test]
    fn urls_parse_or_are_refused_with_a_reason() {
        let t = Target::parse_url("http://127.0.0.1:6566/health").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 6566, "/health")
        );
        let t = Target::parse_url("http://feature-store").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("feature-store", 80, "/")
        );
        let t = Target::parse_url("http://[::1]:8080/health/live?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 8080, "/health/live?x=1")
        );
        for bad in [
            "https://x/",
            "x:80/",
            "http://:80/",
            "http://h:0/",
            "http://h:http/",
            "http://[::1/",
        ] {
            assert!(Target::parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status_line("HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status_line("HTTP/2 200"), None);
        assert_eq!(parse_status_line("HTTP/1.1 2000 OK"), None);
        assert_eq!(parse_status_line(""), None);
    }
}
