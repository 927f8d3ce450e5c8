//! A real S3-compatible server for tests: moto's standalone server (from `MOTO_SERVER`, else
//! the hash-locked dev venv) on a free loopback port, and the bundled repository uploaded to it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::{client, repo_root};

/// The bundled models, as uploaded by [`S3::upload_repository`].
pub const MODELS: [&str; 2] = ["breast-cancer", "diabetes"];
pub const BUCKET: &str = "ferrum-models";
pub const PREFIX: &str = "prod/repo";

/// A child process killed on drop, with the loopback port it announced.
pub struct Helper {
    child: Child,
    pub port: u16,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Helper {
    /// Spawns `command` and waits for the line that announces its port (`marker` followed by
    /// the port number); keeps draining its output so a chatty server never blocks on a pipe.
    pub fn spawn(mut command: Command, marker: &'static str) -> Helper {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let port_tx = port_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some((_, rest)) = line.split_once(marker) {
                        let digits: String =
                            rest.chars().take_while(char::is_ascii_digit).collect();
                        if let Ok(port) = digits.parse::<u16>() {
                            let _ = port_tx.send(port);
                        }
                    }
                }
            });
        }
        let port = port_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{command:?} announced no port"));
        Helper { child, port }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// `moto_server` from `MOTO_SERVER`, else from the dev venv scripts/python-env.sh builds (and
/// reuses: scripts/test.sh has built it before the Rust tests run). Asked once per test
/// binary: the script rebuilds a stale venv in place, so concurrent calls would race.
pub fn moto_server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("MOTO_SERVER") {
            return PathBuf::from(bin);
        }
        let output = Command::new(repo_root().join("scripts/python-env.sh"))
            .arg("requirements/dev.lock")
            .current_dir(repo_root())
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/python-env.sh");
        assert!(output.status.success(), "scripts/python-env.sh failed");
        let venv = String::from_utf8(output.stdout).unwrap();
        PathBuf::from(venv.trim()).join("bin/moto_server")
    })
    .clone()
}

/// moto's S3 on a free loopback port, with one bucket.
pub struct S3 {
    pub server: Helper,
}

impl S3 {
    pub async fn start() -> S3 {
        let mut command = Command::new(moto_server_bin());
        command.args(["-H", "127.0.0.1", "-p", "0"]);
        let server = Helper::spawn(command, "Running on http://127.0.0.1:");
        let s3 = S3 { server };
        s3.put(&format!("/{BUCKET}"), Vec::new()).await;
        s3
    }

    /// PUTs an object (moto takes unsigned requests; the server under test signs its own).
    pub async fn put(&self, path: &str, body: Vec<u8>) {
        let response = client()
            .put(format!("{}{path}", self.server.base()))
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "PUT {path}: {}",
            response.status()
        );
    }

    /// Uploads the bundled repository under [`PREFIX`]: manifest.json and every version
    /// folder, with `replaced` files' bytes swapped for the given ones (moto refuses an
    /// unsigned overwrite, so a tampered object is uploaded in place of the original).
    pub async fn upload_repository(&self, replaced: &[(&str, &[u8])]) {
        for (relative, bytes) in repository_files() {
            let bytes = replaced
                .iter()
                .find(|(name, _)| *name == relative)
                .map_or(bytes, |(_, replacement)| replacement.to_vec());
            self.put(&format!("/{BUCKET}/{PREFIX}/{relative}"), bytes)
                .await;
        }
    }

    /// PUTs an object under [`PREFIX`] with a signed request, through boto3 from the venv
    /// moto runs from: how an object is overwritten (moto refuses unsigned overwrites).
    pub fn put_signed(&self, relative: &str, body: &[u8]) {
        use std::io::Write;
        let script = r#"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
s3.put_object(Bucket=sys.argv[2], Key=sys.argv[3], Body=sys.stdin.buffer.read())
"#;
        let mut child = Command::new(moto_server_bin().with_file_name("python"))
            .args(["-c", script, &self.server.base(), BUCKET])
            .arg(format!("{PREFIX}/{relative}"))
            .stdin(Stdio::piped())
            .spawn()
            .expect("run the venv's python");
        child.stdin.take().unwrap().write_all(body).unwrap();
        assert!(child.wait().unwrap().success(), "signed PUT {relative}");
    }

    /// The variables object_store's S3 builder reads, pointing at this server.
    pub fn env(&self) -> [(&'static str, String); 5] {
        [
            ("AWS_ENDPOINT_URL", self.server.base()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }
}

/// manifest.json and every file below models/, as (path relative to the repository, bytes).
pub fn repository_files() -> Vec<(String, Vec<u8>)> {
    let mut files = vec![(
        "manifest.json".to_string(),
        std::fs::read(repo_root().join("manifest.json")).unwrap(),
    )];
    for model in MODELS {
        let folder = repo_root().join("models").join(model).join("1");
        for entry in std::fs::read_dir(&folder).unwrap() {
            let entry = entry.unwrap();
            files.push((
                format!("{model}/1/{}", entry.file_name().to_string_lossy()),
                std::fs::read(entry.path()).unwrap(),
            ));
        }
    }
    files
}
