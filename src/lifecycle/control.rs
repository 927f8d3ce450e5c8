//! How the model repository is controlled at run time, with Triton's names:
//! `--model-control-mode none|poll|explicit` and `--repository-poll-secs`. The domain enum
//! owns its clap derive so `config` only adds the two flags.

use std::time::Duration;

use clap::ValueEnum;
use serde::Serialize;

use super::LifecycleError;

/// Triton's default rescan period.
pub const DEFAULT_POLL_SECS: u64 = 15;

/// Who changes what is loaded while the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelControlMode {
    /// Everything the manifest lists is loaded at start and stays (today's behaviour);
    /// SIGHUP still rescans once.
    #[default]
    None,
    /// The repository and manifest are rescanned every `--repository-poll-secs`: what
    /// changed is loaded, reloaded or unloaded.
    Poll,
    /// Nothing changes unless asked: the repository extension's `load` / `unload` routes
    /// (behind the API key when one is set), or SIGHUP.
    Explicit,
}

impl ModelControlMode {
    /// The flag's spelling, for messages and `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelControlMode::None => "none",
            ModelControlMode::Poll => "poll",
            ModelControlMode::Explicit => "explicit",
        }
    }
}

/// The validated control settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModelControl {
    pub mode: ModelControlMode,
    /// The rescan period; used in `poll` mode only.
    pub poll_interval: Duration,
}

impl ModelControl {
    /// Checks the flags together: polling every 0 s would spin, so it is refused in `poll`
    /// mode (and ignored in the others).
    pub fn new(mode: ModelControlMode, poll_secs: u64) -> Result<ModelControl, LifecycleError> {
        if mode == ModelControlMode::Poll && poll_secs == 0 {
            return Err(LifecycleError::config(
                "--repository-poll-secs",
                "must be at least 1 in poll mode",
            ));
        }
        Ok(ModelControl {
            mode,
            poll_interval: Duration::from_secs(poll_secs),
        })
    }

    /// The period of background rescans, if any.
    pub fn poll_every(&self) -> Option<Duration> {
        (self.mode == ModelControlMode::Poll).then_some(self.poll_interval)
    }

    /// Whether the repository extension's `load` and `unload` routes are served (the index
    /// is served in every mode: it only reads).
    pub fn accepts_load_requests(&self) -> bool {
        self.mode == ModelControlMode::Explicit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[arg(long, value_enum, default_value = "none")]
        model_control_mode: ModelControlMode,
        #[arg(long, default_value_t = DEFAULT_POLL_SECS)]
        repository_poll_secs: u64,
    }

    #[test]
    fn flags_parse_with_tritons_names() {
        let flags = Flags::try_parse_from([
            "x",
            "--model-control-mode",
            "poll",
            "--repository-poll-secs",
            "2",
        ])
        .unwrap();
        let control =
            ModelControl::new(flags.model_control_mode, flags.repository_poll_secs).unwrap();
        assert_eq!(control.poll_every(), Some(Duration::from_secs(2)));
        assert!(!control.accepts_load_requests());
        let default = Flags::try_parse_from(["x"]).unwrap();
        assert_eq!(default.model_control_mode, ModelControlMode::None);
        assert_eq!(default.repository_poll_secs, 15);
        assert!(Flags::try_parse_from(["x", "--model-control-mode", "auto"]).is_err());
        assert_eq!(
            serde_json::to_string(&ModelControlMode::Explicit).unwrap(),
            r#""explicit""#
        );
        for mode in ModelControlMode::value_variants() {
            assert_eq!(mode.to_possible_value().unwrap().get_name(), mode.as_str());
        }
    }

    #[test]
    fn poll_settings_are_checked_together() {
        let error = ModelControl::new(ModelControlMode::Poll, 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "--repository-poll-secs: must be at least 1 in poll mode"
        );
        let explicit = ModelControl::new(ModelControlMode::Explicit, 0).unwrap();
        assert_eq!(explicit.poll_every(), None);
        assert!(explicit.accepts_load_requests());
        assert_eq!(
            ModelControl::new(ModelControlMode::None, 15)
                .unwrap()
                .poll_every(),
            None
        );
    }
}
