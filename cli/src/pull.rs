//! `pull`, `login` and `logout`: images from registries over the OCI
//! distribution API, and the credentials for them.
//!
//! Logins are stored in `<root>/auth.json` (docker's `config.json`
//! format, mode 0600); pulls also read `$REGISTRY_AUTH_FILE` (first) and
//! docker's own `~/.docker/config.json` (last).

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use berth_image::auth::{self, Credentials};
use berth_image::{
    Image, ImageError, ImageStore, Login, Progress, PullOptions, Reference, RegistryReference,
    RegistrySource, TargetPlatform, DEFAULT_REGISTRY,
};

use crate::args::{LoginArgs, LogoutArgs, PullArgs};
use crate::paths::Paths;
use crate::table::human_size;

/// How a pull is done and shown.
pub struct PullSettings {
    pub platform: TargetPlatform,
    pub tls_verify: bool,
    /// Per-layer lines redrawn in place (a terminal), or one line per
    /// finished layer.
    pub terminal: bool,
    /// Print only the reference.
    pub quiet: bool,
}

/// Where `login` stores credentials.
pub fn auth_file(paths: &Paths) -> PathBuf {
    paths.root().join("auth.json")
}

/// `berth pull`.
pub fn pull_command(paths: &Paths, args: &PullArgs) -> anyhow::Result<i32> {
    let reference = parse_reference(&args.image)?;
    let platform = match &args.platform {
        Some(text) => text.parse::<TargetPlatform>()?,
        None => TargetPlatform::host(),
    };
    let images = paths.images()?;
    let stdout = std::io::stdout();
    let settings = PullSettings {
        platform,
        tls_verify: args.tls_verify,
        terminal: stdout.is_terminal(),
        quiet: args.quiet,
    };
    let mut out = stdout.lock();
    pull(paths, &images, &reference, &settings, &mut out)?;
    if args.quiet {
        writeln!(out, "{reference}").context("cannot write the output")?;
    }
    out.flush().context("cannot write the output")?;
    Ok(0)
}

/// The reference to pull: docker's grammar, `latest` when no tag.
pub fn parse_reference(text: &str) -> anyhow::Result<Reference> {
    Ok(Reference::parse(text)?)
}

/// Pulls `reference` into `images`, reporting on `out` as docker does
/// (nothing when `settings.quiet`). The last line is the full reference.
pub fn pull(
    paths: &Paths,
    images: &ImageStore,
    reference: &Reference,
    settings: &PullSettings,
    out: &mut dyn Write,
) -> anyhow::Result<Image> {
    let failed = || format!("cannot pull {}", reference.familiar());
    let registry_reference = RegistryReference {
        registry: reference.registry().to_owned(),
        repository: reference.repository().to_owned(),
        tag: reference.tag().map(str::to_owned),
        digest: reference.digest().map(str::to_owned),
    };
    let credentials = Credentials::load(&Credentials::standard_paths(&auth_file(paths)))
        .context("cannot read the registry credentials")?;
    let options = PullOptions {
        platform: settings.platform.clone(),
        login: credentials.get(reference.registry()).cloned(),
        tls_verify: settings.tls_verify,
        user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")).to_owned(),
        ..PullOptions::default()
    };
    let source = RegistrySource::open(&registry_reference, &options).with_context(failed)?;
    let mut display = Display::new(out, settings.terminal, settings.quiet);
    display.line(&format!(
        "{}: Pulling from {}",
        reference
            .tag()
            .or(reference.digest())
            .unwrap_or(berth_image::DEFAULT_TAG),
        repository_shown(reference)
    ));
    let before = match images.resolve(&reference.to_string()) {
        Ok(image) => Some(image.id),
        Err(ImageError::NotFound { .. }) => None,
        Err(e) => return Err(e).with_context(failed),
    };
    for layer in berth_image::ImageSource::manifest(&source).layers() {
        display.add_layer(layer.digest().as_ref());
    }
    let image = images
        .add_image(&source, std::slice::from_ref(reference), &|event| {
            display_event(&display, event)
        })
        .with_context(failed)?;
    display.finish();
    display.line(&format!("Digest: {}", source.reference_digest()));
    let familiar = reference.familiar();
    if before.as_ref() == Some(&image.id) {
        display.line(&format!("Status: Image is up to date for {familiar}"));
    } else {
        display.line(&format!("Status: Downloaded newer image for {familiar}"));
    }
    display.line(&reference.to_string());
    Ok(image)
}

/// docker shows `library/busybox` for Docker Hub, the full name otherwise.
fn repository_shown(reference: &Reference) -> String {
    if reference.registry() == DEFAULT_REGISTRY {
        reference.repository().to_owned()
    } else {
        reference.name()
    }
}

fn display_event(display: &Display<'_>, event: Progress) {
    let mut state = display.state.borrow_mut();
    match event {
        Progress::LayerExists { digest } => state.set(&digest, "Already exists".to_owned(), true),
        Progress::LayerBytes {
            digest,
            done,
            total,
        } => state.set(
            &digest,
            format!("Downloading  {}/{}", human_size(done), human_size(total)),
            false,
        ),
        Progress::LayerDone { digest } => state.set(&digest, "Pull complete".to_owned(), true),
    }
}

/// docker's pull display: one line per layer (`<12 hex>: status`), redrawn
/// in place on a terminal; elsewhere only the final state of each layer.
struct Display<'a> {
    state: std::cell::RefCell<DisplayState<'a>>,
}

struct DisplayState<'a> {
    out: &'a mut dyn Write,
    terminal: bool,
    quiet: bool,
    /// Layer digest -> its line, in the order first shown.
    rows: HashMap<String, usize>,
    /// Lines printed since the first layer's, on a terminal.
    printed: usize,
}

impl<'a> Display<'a> {
    fn new(out: &'a mut dyn Write, terminal: bool, quiet: bool) -> Self {
        Display {
            state: std::cell::RefCell::new(DisplayState {
                out,
                terminal,
                quiet,
                rows: HashMap::new(),
                printed: 0,
            }),
        }
    }

    fn line(&mut self, text: &str) {
        let state = self.state.get_mut();
        if !state.quiet {
            // A closed or full output does not stop the pull.
            let _ = writeln!(state.out, "{text}");
            let _ = state.out.flush();
        }
    }

    fn add_layer(&mut self, digest: &str) {
        let state = self.state.get_mut();
        if state.rows.contains_key(digest) {
            return;
        }
        let row = state.rows.len();
        state.rows.insert(digest.to_owned(), row);
        if state.terminal && !state.quiet {
            let _ = writeln!(state.out, "{}: Pulling fs layer", short(digest));
            state.printed += 1;
        }
    }

    fn finish(&mut self) {
        let _ = self.state.get_mut().out.flush();
    }
}

impl DisplayState<'_> {
    fn set(&mut self, digest: &str, status: String, last: bool) {
        if self.quiet {
            return;
        }
        let text = format!("{}: {status}", short(digest));
        match (self.terminal, self.rows.get(digest)) {
            (true, Some(&row)) => {
                // Up to the layer's line, rewrite it, back down.
                let up = self.printed - row;
                let _ = write!(self.out, "\x1b[{up}A\r\x1b[2K{text}\r\x1b[{up}B");
            }
            (true, None) => {
                let _ = writeln!(self.out, "{text}");
            }
            (false, _) if last => {
                let _ = writeln!(self.out, "{text}");
            }
            (false, _) => {}
        }
        let _ = self.out.flush();
    }
}

/// The first 12 hex digits of a digest, as docker names layers.
fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    hex.get(..12).unwrap_or(hex)
}

/// `berth login`.
pub fn login(paths: &Paths, args: &LoginArgs) -> anyhow::Result<i32> {
    let server = server_name(args.server.as_deref());
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if args.password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let username = match &args.username {
        Some(name) => name.clone(),
        None if interactive && !args.password_stdin => prompt("Username: ", true)?,
        None => bail!("cannot perform an interactive login from a non TTY device: give -u USER"),
    };
    let password = if args.password_stdin {
        let mut text = String::new();
        stdin
            .lock()
            .read_line(&mut text)
            .context("cannot read the password from standard input")?;
        text.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        match &args.password {
            Some(password) => password.clone(),
            None if interactive => prompt("Password: ", false)?,
            None => bail!(
                "cannot perform an interactive login from a non TTY device: use --password-stdin"
            ),
        }
    };
    if username.is_empty() || password.is_empty() {
        bail!("a user name and a password are required to log in to {server}");
    }
    let options = PullOptions {
        tls_verify: args.tls_verify,
        ..PullOptions::default()
    };
    auth::verify_login(&server, &Login::new(&username, &password), &options)
        .with_context(|| format!("login to {server} failed"))?;
    paths.ensure_root()?;
    let file = auth_file(paths);
    auth::login(&file, &server, &username, &password)
        .with_context(|| format!("cannot store the login for {server}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "Login Succeeded").context("cannot write the output")?;
    Ok(0)
}

/// `berth logout`.
pub fn logout(paths: &Paths, args: &LogoutArgs) -> anyhow::Result<i32> {
    let server = server_name(args.server.as_deref());
    let file = auth_file(paths);
    let removed = if file.exists() {
        auth::logout(&file, &server)
            .with_context(|| format!("cannot remove the login for {server}"))?
    } else {
        false
    };
    let mut out = std::io::stdout().lock();
    if removed {
        writeln!(out, "Removing login credentials for {server}")
    } else {
        writeln!(out, "Not logged in to {server}")
    }
    .context("cannot write the output")?;
    Ok(0)
}

/// `host[:port]` of a registry as given to login/logout (a URL such as
/// docker's `https://index.docker.io/v1/` too); Docker Hub by default.
fn server_name(server: Option<&str>) -> String {
    let Some(server) = server.filter(|s| !s.is_empty()) else {
        return DEFAULT_REGISTRY.to_owned();
    };
    let without_scheme = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let host = without_scheme.split('/').next().unwrap_or(without_scheme);
    match host.to_ascii_lowercase().as_str() {
        "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_owned(),
        other => other.to_owned(),
    }
}

/// Asks on the terminal; the answer is not echoed unless `echo`.
fn prompt(question: &str, echo: bool) -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let mut out = std::io::stdout().lock();
    let stdin = std::io::stdin();
    // Echo goes off before the question: what is typed after it is seen
    // is never shown.
    let saved = if echo {
        None
    } else {
        let saved = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet)
            .context("cannot turn off the terminal's echo")?;
        Some(saved)
    };
    if let Err(e) = write!(out, "{question}").and_then(|()| out.flush()) {
        if let Some(saved) = &saved {
            let _ = tcsetattr(&stdin, SetArg::TCSANOW, saved);
        }
        return Err(e).context("cannot write to the terminal");
    }
    let mut answer = String::new();
    let read = stdin.lock().read_line(&mut answer);
    if let Some(saved) = saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
        let _ = writeln!(out);
    }
    read.context("cannot read from the terminal")?;
    Ok(answer.trim_end_matches(['\n', '\r']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_named_as_docker_stores_them() {
        assert_eq!(server_name(None), "docker.io");
        assert_eq!(
            server_name(Some("https://index.docker.io/v1/")),
            "docker.io"
        );
        assert_eq!(server_name(Some("127.0.0.1:5000")), "127.0.0.1:5000");
        assert_eq!(
            server_name(Some("http://Registry.Example:5000/v2/")),
            "registry.example:5000"
        );
    }

    #[test]
    fn layers_are_named_by_12_hex_digits() {
        assert_eq!(short("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short("abc"), "abc");
    }

    #[test]
    fn terminal_display_redraws_each_layer_line_in_place() {
        let mut buffer = Vec::new();
        {
            let mut display = Display::new(&mut buffer, true, false);
            display.add_layer("sha256:aaaaaaaaaaaa11");
            display.add_layer("sha256:bbbbbbbbbbbb22");
            display_event(
                &display,
                Progress::LayerBytes {
                    digest: "sha256:aaaaaaaaaaaa11".into(),
                    done: 1_500_000,
                    total: 3_000_000,
                },
            );
            display_event(
                &display,
                Progress::LayerExists {
                    digest: "sha256:bbbbbbbbbbbb22".into(),
                },
            );
        }
        let text = String::from_utf8(buffer).unwrap();
        assert!(
            text.starts_with("aaaaaaaaaaaa: Pulling fs layer\nbbbbbbbbbbbb: Pulling fs layer\n")
        );
        assert!(
            text.contains("\x1b[2A\r\x1b[2Kaaaaaaaaaaaa: Downloading  1.5MB/3MB\r\x1b[2B"),
            "{text:?}"
        );
        assert!(text.contains("\x1b[1A\r\x1b[2Kbbbbbbbbbbbb: Already exists\r\x1b[1B"));
    }

    #[test]
    fn quiet_lines_show_only_finished_layers() {
        let mut buffer = Vec::new();
        {
            let mut display = Display::new(&mut buffer, false, false);
            display.add_layer("sha256:aaaaaaaaaaaa11");
            for event in [
                Progress::LayerBytes {
                    digest: "sha256:aaaaaaaaaaaa11".into(),
                    done: 1,
                    total: 2,
                },
                Progress::LayerDone {
                    digest: "sha256:aaaaaaaaaaaa11".into(),
                },
            ] {
                display_event(&display, event);
            }
        }
        assert_eq!(
            String::from_utf8(buffer).unwrap(),
            "aaaaaaaaaaaa: Pull complete\n"
        );
    }
}
