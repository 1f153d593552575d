//! The spec's lifecycle hooks: each is a program run with the container's
//! state as JSON on its stdin, killed when its timeout passes.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks, Spec, State};

use super::{Result, RuntimeError};

/// The points of the lifecycle at which hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HookPoint {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl HookPoint {
    fn name(self) -> &'static str {
        match self {
            HookPoint::Prestart => "prestart",
            HookPoint::CreateRuntime => "createRuntime",
            HookPoint::CreateContainer => "createContainer",
            HookPoint::StartContainer => "startContainer",
            HookPoint::Poststart => "poststart",
            HookPoint::Poststop => "poststop",
        }
    }

    fn of(self, hooks: &Hooks) -> Option<&Vec<Hook>> {
        #[allow(deprecated)]
        match self {
            HookPoint::Prestart => hooks.prestart().as_ref(),
            HookPoint::CreateRuntime => hooks.create_runtime().as_ref(),
            HookPoint::CreateContainer => hooks.create_container().as_ref(),
            HookPoint::StartContainer => hooks.start_container().as_ref(),
            HookPoint::Poststart => hooks.poststart().as_ref(),
            HookPoint::Poststop => hooks.poststop().as_ref(),
        }
    }
}

/// The hooks of `spec` at `point` (empty when there are none).
pub(crate) fn hooks_at(spec: &Spec, point: HookPoint) -> Vec<Hook> {
    spec.hooks()
        .as_ref()
        .and_then(|hooks| point.of(hooks).cloned())
        .unwrap_or_default()
}

/// Run the hooks in order; the first failure stops them and is returned.
pub(crate) fn run_hooks(hooks: &[Hook], point: HookPoint, state: &State) -> Result<()> {
    if hooks.is_empty() {
        return Ok(());
    }
    let input = serde_json::to_vec(state).unwrap_or_default();
    for hook in hooks {
        run_hook(hook, point, &input)?;
    }
    Ok(())
}

fn run_hook(hook: &Hook, point: HookPoint, input: &[u8]) -> Result<()> {
    let failed = |reason: String| RuntimeError::Hook {
        hook: point.name(),
        path: hook.path().clone(),
        reason,
    };
    let mut command = Command::new(hook.path());
    let args = hook.args().clone().unwrap_or_default();
    if let Some((first, rest)) = args.split_first() {
        std::os::unix::process::CommandExt::arg0(&mut command, first);
        command.args(rest);
    }
    command.env_clear();
    for entry in hook.env().iter().flatten() {
        if let Some((key, value)) = entry.split_once('=') {
            command.env(key, value);
        }
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| failed(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(input);
    }
    let deadline = hook
        .timeout()
        .filter(|&t| t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let status = loop {
        match child.try_wait().map_err(|e| failed(e.to_string()))? {
            Some(status) => break status,
            None if deadline.is_some_and(|d| Instant::now() >= d) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "timed out after {} s",
                    hook.timeout().unwrap_or_default()
                )));
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        let stderr = stderr.trim();
        return Err(failed(if stderr.is_empty() {
            format!("failed: {status}")
        } else {
            format!("failed: {status}: {}", stderr.replace('\n', " "))
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::HookBuilder;

    fn state() -> State {
        let mut state = State::default();
        state.set_id("hooked".into());
        state
    }

    #[test]
    fn a_hook_reads_the_state_and_its_failure_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seen");
        let hook = HookBuilder::default()
            .path("/bin/sh")
            .args(vec![
                "sh".to_owned(),
                "-c".to_owned(),
                format!("cat > {}; echo $X >> {}", out.display(), out.display()),
            ])
            .env(vec!["X=from-env".to_owned()])
            .build()
            .unwrap();
        run_hooks(&[hook], HookPoint::Poststop, &state()).unwrap();
        let seen = std::fs::read_to_string(&out).unwrap();
        assert!(seen.contains("\"id\":\"hooked\""), "{seen}");
        assert!(seen.ends_with("from-env\n"), "{seen}");

        let failing = HookBuilder::default()
            .path("/bin/sh")
            .args(vec![
                "sh".into(),
                "-c".into(),
                "echo bad >&2; exit 3".into(),
            ])
            .build()
            .unwrap();
        let err = run_hooks(&[failing], HookPoint::Prestart, &state()).unwrap_err();
        assert!(err.to_string().contains("prestart hook"), "{err}");
        assert!(err.to_string().contains("bad"), "{err}");
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed() {
        let slow = HookBuilder::default()
            .path("/bin/sleep")
            .args(vec!["sleep".into(), "30".into()])
            .timeout(1)
            .build()
            .unwrap();
        let started = Instant::now();
        let err = run_hooks(&[slow], HookPoint::Poststart, &state()).unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
