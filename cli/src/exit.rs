//! Docker's exit-code convention and the one-line error a user sees.

/// berth itself failed (bad input, missing image, setup error); 126 and
/// 127 come from the runtime (`cli::runtime::{CANNOT_INVOKE, NOT_FOUND}`).
pub const BERTH_FAILED: i32 = cli::runtime::RUNTIME_FAILED;

/// An error that must end berth with a specific exit code; any other error
/// ends it with 125.
#[derive(Debug)]
pub struct CodedError {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for CodedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CodedError {}

/// What `main` prints and returns for an error.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        let code = error
            .downcast_ref::<CodedError>()
            .map_or(BERTH_FAILED, |c| c.code);
        Failure {
            code,
            message: one_line(&error),
        }
    }
}

/// The whole cause chain on one line; a cause whose text its parent
/// already quotes (thiserror's "{path}: {source}") is said once.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message.replace('\n', " ")
}

/// docker's numbering for how a process ended: its exit code, or 128+N
/// when signal N killed it.
pub fn status_code(status: nix::sys::wait::WaitStatus) -> Option<i32> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// Write `text` to standard output. A reader that went away ends berth
/// quietly with 141 (what a shell reports for SIGPIPE; `head` expects it);
/// any other failure (a full disk) is an error. The panic hook in `main`
/// gives `print!` the same behaviour.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(CLOSED_PIPE),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write the output")),
    }
}

/// The exit code of a process killed by SIGPIPE, as a shell shows it.
pub const CLOSED_PIPE: i32 = 141;

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::sys::wait::WaitStatus;
    use nix::unistd::Pid;

    #[test]
    fn codes_follow_docker() {
        let pid = Pid::from_raw(1);
        assert_eq!(status_code(WaitStatus::Exited(pid, 3)), Some(3));
        assert_eq!(
            status_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(status_code(WaitStatus::StillAlive), None);
    }

    #[test]
    fn coded_errors_keep_their_code_and_context_stays_on_one_line() {
        let err = anyhow::Error::new(CodedError {
            code: cli::runtime::NOT_FOUND,
            message: "nope".into(),
        })
        .context("starting");
        let failure = Failure::from(err);
        assert_eq!(failure.code, cli::runtime::NOT_FOUND);
        assert_eq!(failure.message, "starting: nope");
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let quoted = anyhow::Error::new(berth_state::StateError::Io {
            path: "/x".into(),
            source: io,
        });
        assert_eq!(Failure::from(quoted).message, "/x: no such file");
        let failure = Failure::from(anyhow::anyhow!("line one\nline two"));
        assert_eq!(failure.code, BERTH_FAILED);
        assert!(!failure.message.contains('\n'));
    }
}
