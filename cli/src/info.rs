//! `berth version` and `berth info`: what this berth is and what it runs on.

use std::fmt::Write as _;

use berth_state::Status;

use crate::paths::Paths;

/// docker's `version --format` data: `{{.Client.Version}}`,
/// `{{json .}}`.
fn version_json() -> serde_json::Value {
    serde_json::json!({
        "Client": {
            "Version": env!("CARGO_PKG_VERSION"),
            "Os": "linux",
            "Arch": go_arch(),
            "Runtime": crate::oci_cli::PROGRAM_NAME,
            "OciVersion": oci_spec_version(),
            "Libseccomp": berth_ns::seccomp::library_version().to_string(),
        }
    })
}

/// Print `--format` over one JSON value (`version`, `info`).
fn print_formatted(format: &str, value: &serde_json::Value) -> anyhow::Result<i32> {
    let format = crate::format::Format::parse(format, "", crate::format::Fields::Open)?;
    let text = format.render(&[], &[crate::format::to_value(value)])?;
    crate::exit::write_stdout(&text)?;
    Ok(0)
}

pub fn version(format: Option<&str>) -> anyhow::Result<i32> {
    if let Some(format) = format {
        return print_formatted(format, &version_json());
    }
    let mut out = String::new();
    let _ = writeln!(out, "Client:");
    let _ = writeln!(out, " Version:           {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, " OS/Arch:           linux/{}", go_arch());
    let _ = writeln!(
        out,
        " Runtime:           {} (OCI runtime spec {})",
        crate::oci_cli::PROGRAM_NAME,
        oci_spec_version()
    );
    let _ = writeln!(
        out,
        " libseccomp:        {}",
        berth_ns::seccomp::library_version()
    );
    print!("{out}");
    Ok(0)
}

pub fn info(paths: &Paths, format: Option<&str>) -> anyhow::Result<i32> {
    let store = paths.containers()?;
    let records = crate::container::list(&store)?;
    let count = |wanted: &[Status]| {
        records
            .iter()
            .filter(|r| wanted.contains(&r.status))
            .count()
    };
    let images = paths.images()?.list()?.len();
    let cgroups = berth_cgroup::Hierarchies::from_host().ok();
    let cgroup_version = match cgroups.as_ref().map(|h| h.layout()) {
        Some(berth_cgroup::Layout::Unified) => "2",
        Some(berth_cgroup::Layout::Legacy) => "1",
        Some(berth_cgroup::Layout::Hybrid) => "1 (hybrid: cgroup2 mounted beside v1)",
        None => "unknown",
    };
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "Linux".to_owned());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024);
    let memory = memory_bytes
        .map(crate::table::human_size)
        .unwrap_or_default();
    let running = count(&[Status::Running]);
    let paused = count(&[Status::Paused]);
    // docker's words for its userns-remap setting.
    let remap = crate::userns::remap_setting().map(|user| match user.as_str() {
        "default" => crate::userns::DEFAULT_USER.to_owned(),
        _ => user,
    });
    // What `-p` and bridge networks would use (BERTH_FIREWALL).
    let firewall = crate::network::firewall_kind()
        .map(|kind| kind.as_str().to_owned())
        .unwrap_or_else(|e| e.to_string());
    let mut security_options = vec!["name=seccomp,profile=builtin".to_owned()];
    if remap.is_some() {
        security_options.push("name=userns".to_owned());
    }
    if let Some(format) = format {
        let value = serde_json::json!({
            "Containers": records.len(),
            "ContainersRunning": running,
            "ContainersPaused": paused,
            "ContainersStopped": records.len() - running - paused,
            "Images": images,
            "ServerVersion": env!("CARGO_PKG_VERSION"),
            "Driver": "overlay",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": cgroup_version.split(' ').next().unwrap_or_default(),
            "CgroupLayout": match cgroups.as_ref().map(|h| h.layout()) {
                Some(berth_cgroup::Layout::Unified) => "unified",
                Some(berth_cgroup::Layout::Legacy) => "legacy",
                Some(berth_cgroup::Layout::Hybrid) => "hybrid",
                None => "unknown",
            },
            "DefaultRuntime": crate::oci_cli::PROGRAM_NAME,
            "SecurityOptions": security_options,
            "KernelVersion": kernel,
            "OperatingSystem": os,
            "OSType": "linux",
            "Architecture": std::env::consts::ARCH,
            "NCPU": cpus,
            "MemTotal": memory_bytes,
            "DockerRootDir": paths.root(),
            "FirewallBackend": firewall,
        });
        return print_formatted(format, &value);
    }
    let mut out = String::new();
    let _ = writeln!(out, "Containers: {}", records.len());
    let _ = writeln!(out, " Running: {running}");
    let _ = writeln!(out, " Paused: {paused}");
    let _ = writeln!(
        out,
        " Stopped: {}",
        records.len() - count(&[Status::Running, Status::Paused])
    );
    let _ = writeln!(out, "Images: {images}");
    let _ = writeln!(out, "Server Version: {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "Storage Driver: overlay");
    let _ = writeln!(out, "Cgroup Driver: cgroupfs");
    let _ = writeln!(out, "Cgroup Version: {cgroup_version}");
    let _ = writeln!(out, "Default Runtime: {}", crate::oci_cli::PROGRAM_NAME);
    let _ = writeln!(out, "Security Options:\n seccomp\n  Profile: builtin");
    if let Some(user) = &remap {
        let _ = writeln!(out, " userns\n  Remapped to: {user}'s subordinate ids");
    }
    let _ = writeln!(out, "Kernel Version: {kernel}");
    let _ = writeln!(out, "Operating System: {os}");
    let _ = writeln!(out, "Architecture: {}", std::env::consts::ARCH);
    let _ = writeln!(out, "CPUs: {cpus}");
    let _ = writeln!(out, "Total Memory: {memory}");
    let _ = writeln!(out, "Berth Root Dir: {}", paths.root().display());
    let _ = writeln!(out, "Firewall Backend: {firewall}");
    print!("{out}");
    Ok(0)
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn oci_spec_version() -> &'static str {
    cli::runtime::OCI_VERSION
}
