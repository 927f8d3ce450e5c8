//! ONNX Runtime: the one process-wide environment, sessions built for a chosen execution
//! provider, and a pool of sessions per model so concurrent requests do not queue on one lock
//! (`Session::run` takes `&mut self`: ONNX Runtime's Run is not re-entrant per session).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;

use super::LoadError;

/// Which ONNX Runtime execution provider serves the models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProviderChoice {
    /// CUDA when it can be registered, otherwise CPU (with a log line saying so).
    Auto,
    /// CPU only.
    Cpu,
    /// CUDA or refuse to start: for deployments that must not silently run on CPU.
    Cuda,
}

/// The provider that actually serves a model, reported in `/health`.
pub type ProviderName = &'static str;

/// The provider a session ended up on, and why it is not the one asked for, if it is not.
#[derive(Debug, Clone)]
pub struct ProviderChoice {
    pub name: ProviderName,
    /// Set when `auto` could not use CUDA and fell back to CPU.
    pub fallback_reason: Option<String>,
}

impl ProviderChoice {
    fn exactly(name: ProviderName) -> ProviderChoice {
        ProviderChoice {
            name,
            fallback_reason: None,
        }
    }
}

/// The loaded ONNX Runtime library and its environment (only one may exist per process).
#[derive(Clone)]
pub struct Runtime {
    environment: Environment,
}

impl Runtime {
    /// Loads the shared library from `dylib` and creates the environment. A missing or wrong
    /// library is an error here, at start, rather than a panic on first use.
    pub fn load(dylib: &Path) -> Result<Runtime, LoadError> {
        if !dylib.is_file() {
            return Err(LoadError::Runtime(format!(
                "ONNX Runtime library not found at {} (run scripts/fetch-onnxruntime.sh or set ORT_DYLIB_PATH)",
                dylib.display()
            )));
        }
        let builder = ort::init_from(dylib).map_err(|e| {
            LoadError::Runtime(format!(
                "cannot load ONNX Runtime from {}: {e}",
                dylib.display()
            ))
        })?;
        let environment = builder.with_name("ferrum-serve").build().map_err(|e| {
            LoadError::Runtime(format!("cannot create the ONNX Runtime environment: {e}"))
        })?;
        Ok(Runtime { environment })
    }

    /// Builds one session from model bytes on the chosen provider, returning which provider it
    /// ended up on. `auto` falls back to CPU with a log line; `cuda` without CUDA is an error.
    pub fn session(
        &self,
        model_bytes: &[u8],
        intra_op_threads: usize,
        choice: ExecutionProviderChoice,
    ) -> Result<(Session, ProviderChoice), LoadError> {
        let ort_err = |e: ort::Error<SessionBuilder>| LoadError::Runtime(e.to_string());
        let builder = Session::builder(&self.environment)
            .map_err(|e| LoadError::Runtime(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(ort_err)?
            .with_intra_threads(intra_op_threads)
            .map_err(ort_err)?;
        let (mut builder, provider) = select_provider(builder, choice)?;
        let session = builder
            .commit_from_memory(model_bytes)
            .map_err(|e| LoadError::Runtime(format!("ONNX Runtime cannot load the model: {e}")))?;
        Ok((session, provider))
    }
}

#[cfg(feature = "cuda")]
fn select_provider(
    builder: SessionBuilder,
    choice: ExecutionProviderChoice,
) -> Result<(SessionBuilder, ProviderChoice), LoadError> {
    use ort::ep;
    if choice == ExecutionProviderChoice::Cpu {
        return Ok((builder, ProviderChoice::exactly("cpu")));
    }
    // error_on_failure: ort would otherwise skip a provider that fails to register silently,
    // and we could not tell which provider serves.
    match builder.with_execution_providers([ep::CUDA::default().build().error_on_failure()]) {
        Ok(builder) => Ok((builder, ProviderChoice::exactly("cuda"))),
        Err(e) if choice == ExecutionProviderChoice::Auto => {
            let reason = e.message().to_string();
            Ok((
                e.recover(),
                ProviderChoice {
                    name: "cpu",
                    fallback_reason: Some(reason),
                },
            ))
        }
        Err(e) => Err(LoadError::Runtime(format!(
            "--execution-provider cuda: the CUDA execution provider cannot be used: {}",
            e.message()
        ))),
    }
}

#[cfg(not(feature = "cuda"))]
fn select_provider(
    builder: SessionBuilder,
    choice: ExecutionProviderChoice,
) -> Result<(SessionBuilder, ProviderChoice), LoadError> {
    match choice {
        ExecutionProviderChoice::Cuda => Err(LoadError::Runtime(
            "--execution-provider cuda: this binary was built without the `cuda` feature".into(),
        )),
        ExecutionProviderChoice::Auto => Ok((
            builder,
            ProviderChoice {
                name: "cpu",
                fallback_reason: Some("built without the `cuda` feature".into()),
            },
        )),
        ExecutionProviderChoice::Cpu => Ok((builder, ProviderChoice::exactly("cpu"))),
    }
}

/// Sessions of one model version. A caller takes whichever session is free, so as many
/// inferences run at once as there are sessions, and no caller ever waits behind a busy one
/// while another is idle.
pub struct SessionPool {
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
}

impl SessionPool {
    /// Wraps already-built sessions (at least one).
    pub fn new(sessions: Vec<Session>) -> SessionPool {
        assert!(!sessions.is_empty(), "a session pool needs a session");
        SessionPool {
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// How many inferences of this model can run at once.
    pub fn size(&self) -> usize {
        self.sessions.len()
    }

    /// A free session if there is one, otherwise waits for the next in turn. Blocks: call it
    /// from a blocking thread, never from an async worker.
    pub fn acquire(&self) -> MutexGuard<'_, Session> {
        let n = self.sessions.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(guard) = self.sessions[(start + i) % n].try_lock() {
                return guard;
            }
        }
        // A panic inside a run cannot leave a session half-updated from our side: reuse it.
        self.sessions[start % n]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Any session, for reading metadata (inputs, outputs).
    pub fn first(&self) -> MutexGuard<'_, Session> {
        self.sessions[0]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
