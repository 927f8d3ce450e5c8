//! The log stream itself: text lines are coloured on a terminal unless `NO_COLOR` is set.
//! A real pseudo-terminal comes from util-linux's `script`.

mod common;

use std::process::Command;

/// Runs a job that fails at once (its input does not exist) with text logs on a terminal;
/// returns what the terminal showed.
fn failing_job_on_a_terminal(no_color: Option<&str>) -> String {
    let job = format!(
        "{} predict --log-format text --input /nonexistent/rows.csv --output /dev/null",
        env!("CARGO_BIN_EXE_ferrum-serve")
    );
    let mut command = Command::new("script");
    command
        .args(["--quiet", "--return", "--command", &job, "/dev/null"])
        .current_dir(common::repo_root())
        .env("ORT_DYLIB_PATH", common::ort_dylib())
        .env_remove("NO_COLOR");
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let output = command.output().expect("util-linux `script` runs");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let shown = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(shown.contains("job failed"), "{shown}");
    shown
}

#[test]
fn text_logs_are_coloured_on_a_terminal_unless_no_color_is_set() {
    const ESCAPE: &str = "\u{1b}[";
    assert!(failing_job_on_a_terminal(None).contains(ESCAPE));
    // https://no-color.org: any non-empty value turns colours off; an empty one does not.
    assert!(!failing_job_on_a_terminal(Some("1")).contains(ESCAPE));
    assert!(failing_job_on_a_terminal(Some("")).contains(ESCAPE));
}
