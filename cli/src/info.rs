//! `berth version` and `berth info`: what this berth is and what it runs on.

use std::fmt::Write as _;

use berth_state::Status;

use crate::paths::Paths;

pub fn version() -> anyhow::Result<i32> {
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

pub fn info(paths: &Paths) -> anyhow::Result<i32> {
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
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| crate::table::human_size(kib * 1024))
        .unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "Containers: {}", records.len());
    let _ = writeln!(out, " Running: {}", count(&[Status::Running]));
    let _ = writeln!(out, " Paused: {}", count(&[Status::Paused]));
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
    let _ = writeln!(out, "Kernel Version: {kernel}");
    let _ = writeln!(out, "Operating System: {os}");
    let _ = writeln!(out, "Architecture: {}", std::env::consts::ARCH);
    let _ = writeln!(out, "CPUs: {cpus}");
    let _ = writeln!(out, "Total Memory: {memory}");
    let _ = writeln!(out, "Berth Root Dir: {}", paths.root().display());
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
