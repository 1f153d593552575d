//! `berth completion bash|zsh|fish`: a shell completion script generated
//! from the command tree itself (clap_complete), so it never falls behind
//! the flags berth really has.

use clap::CommandFactory;

use crate::args::{Cli, CompletionShell};

pub fn completion(shell: CompletionShell) -> anyhow::Result<i32> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    crate::exit::write_stdout(&script(shell))?;
    Ok(0)
}

fn script(shell: clap_complete::Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "berth", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each script knows berth's commands and the flags added with them.
    #[test]
    fn scripts_name_commands_and_flags() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let text = script(shell);
            for word in [
                "berth",
                "inspect",
                "completion",
                "format",
                "filter",
                "since",
            ] {
                assert!(text.contains(word), "{shell}: no {word}");
            }
        }
    }
}
