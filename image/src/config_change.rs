//! Dockerfile-style instructions that change an image's run config, as
//! `docker commit --change` and `docker import --change` take them:
//! `CMD`, `ENTRYPOINT`, `ENV`, `WORKDIR`, `USER`, `EXPOSE`, `LABEL`,
//! `STOPSIGNAL`, `VOLUME`.

use oci_spec::image::Config;

use crate::ImageError;

/// One parsed instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// `CMD ["a", "b"]` (exec form) or `CMD a b` (shell form, run by
    /// `/bin/sh -c`).
    Cmd(Vec<String>),
    /// `ENTRYPOINT`, same forms as `CMD`.
    Entrypoint(Vec<String>),
    /// `ENV K=V K2="v 2"` or `ENV K V`.
    Env(Vec<(String, String)>),
    /// `WORKDIR /path`.
    Workdir(String),
    /// `USER name[:group]`.
    User(String),
    /// `EXPOSE 80 53/udp`.
    Expose(Vec<String>),
    /// `LABEL k=v k2="v 2"`.
    Label(Vec<(String, String)>),
    /// `STOPSIGNAL SIGTERM`.
    StopSignal(String),
    /// `VOLUME ["/a"]` or `VOLUME /a /b`.
    Volume(Vec<String>),
}

impl ConfigChange {
    /// Parse one instruction; the keyword is case-insensitive.
    pub fn parse(text: &str) -> Result<Self, ImageError> {
        let invalid = |reason: &str| ImageError::InvalidChange {
            change: text.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = text.trim();
        let (keyword, rest) = match trimmed.split_once(char::is_whitespace) {
            Some((keyword, rest)) => (keyword, rest.trim()),
            None => (trimmed, ""),
        };
        if rest.is_empty() {
            return Err(invalid("the instruction has no argument"));
        }
        let change = match keyword.to_ascii_uppercase().as_str() {
            "CMD" => ConfigChange::Cmd(command(rest).map_err(|r| invalid(&r))?),
            "ENTRYPOINT" => ConfigChange::Entrypoint(command(rest).map_err(|r| invalid(&r))?),
            "ENV" => ConfigChange::Env(pairs(rest, true).map_err(|r| invalid(&r))?),
            "LABEL" => ConfigChange::Label(pairs(rest, false).map_err(|r| invalid(&r))?),
            "WORKDIR" => ConfigChange::Workdir(single(rest).map_err(|r| invalid(&r))?),
            "USER" => ConfigChange::User(single(rest).map_err(|r| invalid(&r))?),
            "STOPSIGNAL" => ConfigChange::StopSignal(single(rest).map_err(|r| invalid(&r))?),
            "EXPOSE" => {
                let mut ports = Vec::new();
                for word in words(rest).map_err(|r| invalid(&r))? {
                    ports.push(port(&word).map_err(|r| invalid(&r))?);
                }
                ConfigChange::Expose(ports)
            }
            "VOLUME" => {
                let volumes = match json_array(rest) {
                    Some(list) => list.map_err(|r| invalid(&r))?,
                    None => words(rest).map_err(|r| invalid(&r))?,
                };
                if volumes.iter().any(|v| v.is_empty()) {
                    return Err(invalid("empty volume path"));
                }
                ConfigChange::Volume(volumes)
            }
            _ => {
                return Err(invalid(
                    "only CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME and WORKDIR can be changed",
                ))
            }
        };
        Ok(change)
    }

    /// Apply the change to `config` as docker does: `CMD`, `ENTRYPOINT`,
    /// `WORKDIR`, `USER`, `STOPSIGNAL` replace; `ENV` replaces a variable of
    /// the same name or adds it; `LABEL`, `EXPOSE` and `VOLUME` add.
    /// `ENTRYPOINT` also clears a `CMD` set earlier, as in a Dockerfile.
    pub fn apply(&self, config: &mut Config) {
        match self {
            ConfigChange::Cmd(cmd) => {
                config.set_cmd(Some(cmd.clone()));
            }
            ConfigChange::Entrypoint(entrypoint) => {
                config.set_entrypoint(Some(entrypoint.clone()));
                config.set_cmd(None);
            }
            ConfigChange::Env(vars) => {
                let mut env = config.env().clone().unwrap_or_default();
                for (key, value) in vars {
                    let entry = format!("{key}={value}");
                    match env
                        .iter_mut()
                        .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
                    {
                        Some(existing) => *existing = entry,
                        None => env.push(entry),
                    }
                }
                config.set_env(Some(env));
            }
            ConfigChange::Workdir(dir) => {
                config.set_working_dir(Some(dir.clone()));
            }
            ConfigChange::User(user) => {
                config.set_user(Some(user.clone()));
            }
            ConfigChange::StopSignal(signal) => {
                config.set_stop_signal(Some(signal.clone()));
            }
            ConfigChange::Expose(ports) => {
                let mut all = config.exposed_ports().clone().unwrap_or_default();
                for port in ports {
                    if !all.contains(port) {
                        all.push(port.clone());
                    }
                }
                all.sort();
                config.set_exposed_ports(Some(all));
            }
            ConfigChange::Label(labels) => {
                let mut all = config.labels().clone().unwrap_or_default();
                for (key, value) in labels {
                    all.insert(key.clone(), value.clone());
                }
                config.set_labels(Some(all));
            }
            ConfigChange::Volume(volumes) => {
                let mut all = config.volumes().clone().unwrap_or_default();
                for volume in volumes {
                    if !all.contains(volume) {
                        all.push(volume.clone());
                    }
                }
                all.sort();
                config.set_volumes(Some(all));
            }
        }
    }
}

/// `["a", "b"]` as JSON when it looks like one (`None` otherwise).
fn json_array(text: &str) -> Option<Result<Vec<String>, String>> {
    if !text.starts_with('[') {
        return None;
    }
    Some(
        serde_json::from_str::<Vec<String>>(text)
            .map_err(|e| format!("not a JSON array of strings: {e}")),
    )
}

fn command(text: &str) -> Result<Vec<String>, String> {
    match json_array(text) {
        // Docker: text that starts with '[' but is not JSON is shell form.
        Some(Ok(list)) => Ok(list),
        _ => Ok(vec!["/bin/sh".to_owned(), "-c".to_owned(), text.to_owned()]),
    }
}

fn single(text: &str) -> Result<String, String> {
    let mut all = words(text)?;
    if all.len() != 1 {
        return Err("takes exactly one argument".to_owned());
    }
    Ok(all.remove(0))
}

/// Split on whitespace, honouring double and single quotes and backslash
/// escapes (the Dockerfile word rules, without variable expansion).
fn words(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                in_word = true;
                let quote = c;
                loop {
                    match chars.next() {
                        None => return Err(format!("unterminated {quote} quote")),
                        Some(c) if c == quote => break,
                        Some('\\') if quote == '"' => match chars.next() {
                            Some(next) => current.push(next),
                            None => return Err("trailing backslash".to_owned()),
                        },
                        Some(c) => current.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(next) => current.push(next),
                    None => return Err("trailing backslash".to_owned()),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                current.push(c);
            }
        }
    }
    if in_word {
        out.push(current);
    }
    Ok(out)
}

/// `K=V ...`, or (for ENV) the legacy `K V with spaces`.
fn pairs(text: &str, legacy_form: bool) -> Result<Vec<(String, String)>, String> {
    let first = words(text)?;
    let is_pairs = first.first().is_some_and(|w| w.contains('='));
    if !is_pairs {
        if !legacy_form {
            return Err("expects KEY=VALUE pairs".to_owned());
        }
        let (key, value) = match text.split_once(char::is_whitespace) {
            Some((key, value)) => (key, value.trim()),
            None => return Err("expects KEY=VALUE or KEY VALUE".to_owned()),
        };
        check_key(key)?;
        return Ok(vec![(key.to_owned(), value.to_owned())]);
    }
    let mut out = Vec::new();
    for word in first {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("{word:?} is not KEY=VALUE"))?;
        check_key(key)?;
        out.push((key.to_owned(), value.to_owned()));
    }
    Ok(out)
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("empty name before '='".to_owned());
    }
    Ok(())
}

/// `80`, `80/tcp`, `53/udp`, `8000-8010/tcp`, normalized to `port/proto`.
fn port(text: &str) -> Result<String, String> {
    let (ports, proto) = match text.split_once('/') {
        Some((ports, proto)) => (ports, proto.to_ascii_lowercase()),
        None => (text, "tcp".to_owned()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("unknown protocol {proto:?} in {text:?}"));
    }
    let valid = |p: &str| p.parse::<u16>().is_ok_and(|p| p > 0);
    let ok = match ports.split_once('-') {
        Some((low, high)) => valid(low) && valid(high),
        None => valid(ports),
    };
    if !ok {
        return Err(format!("invalid port {text:?}"));
    }
    Ok(format!("{ports}/{proto}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(changes: &[&str]) -> Config {
        let mut config = Config::default();
        config.set_env(Some(vec!["PATH=/bin".to_owned(), "A=1".to_owned()]));
        config.set_cmd(Some(vec!["sh".to_owned()]));
        for change in changes {
            ConfigChange::parse(change).unwrap().apply(&mut config);
        }
        config
    }

    #[test]
    fn exec_and_shell_forms() {
        assert_eq!(
            ConfigChange::parse(r#"CMD ["echo", "hi there"]"#).unwrap(),
            ConfigChange::Cmd(vec!["echo".into(), "hi there".into()])
        );
        assert_eq!(
            ConfigChange::parse("cmd echo hi there").unwrap(),
            ConfigChange::Cmd(vec!["/bin/sh".into(), "-c".into(), "echo hi there".into()])
        );
        assert_eq!(
            ConfigChange::parse("ENTRYPOINT [\"/app\"]").unwrap(),
            ConfigChange::Entrypoint(vec!["/app".into()])
        );
    }

    #[test]
    fn env_label_and_the_rest() {
        let config = applied(&[
            "ENV A=2 B=\"two words\"",
            "ENV C legacy form value",
            "LABEL version=1.0 \"quoted key\"=x",
            "WORKDIR /srv",
            "USER app:app",
            "EXPOSE 80 53/udp 8000-8001",
            "STOPSIGNAL SIGQUIT",
            "VOLUME [\"/data\", \"/logs\"]",
            "VOLUME /cache",
            "ENTRYPOINT [\"/entry\"]",
        ]);
        assert_eq!(
            config.env().as_deref().unwrap(),
            ["PATH=/bin", "A=2", "B=two words", "C=legacy form value"]
        );
        let labels = config.labels().as_ref().unwrap();
        assert_eq!(labels["version"], "1.0");
        assert_eq!(labels["quoted key"], "x");
        assert_eq!(config.working_dir().as_deref(), Some("/srv"));
        assert_eq!(config.user().as_deref(), Some("app:app"));
        assert_eq!(
            config.exposed_ports().as_deref().unwrap(),
            ["53/udp", "80/tcp", "8000-8001/tcp"]
        );
        assert_eq!(config.stop_signal().as_deref(), Some("SIGQUIT"));
        assert_eq!(
            config.volumes().as_deref().unwrap(),
            ["/cache", "/data", "/logs"]
        );
        assert_eq!(config.entrypoint().as_deref().unwrap(), ["/entry"]);
        // ENTRYPOINT resets the CMD, as in a Dockerfile.
        assert_eq!(config.cmd(), &None);
    }

    #[test]
    fn refusals_name_the_change() {
        for bad in [
            "RUN rm -rf /",
            "CMD",
            "",
            "EXPOSE 0",
            "EXPOSE 70000",
            "EXPOSE 80/icmp",
            "LABEL novalue",
            "ENV =x",
            "WORKDIR /a /b",
            "USER \"unterminated",
            "VOLUME [\"/a\", 1]",
        ] {
            match ConfigChange::parse(bad) {
                Err(ImageError::InvalidChange { change, .. }) => assert_eq!(change, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
