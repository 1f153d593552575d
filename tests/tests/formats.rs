//! The output people script against: `ps` filters and formats, docker's
//! `inspect` shape and templates, `images` filters, `logs` times, and
//! outputs that cannot be written.

use std::fs;
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use berth_e2e::{assert_berth_error, describe, require_root, stderr, stdout, wait_until, Berth};

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

/// The names `ps ARGS --format {{.Names}}` prints, sorted.
fn names(berth: &Berth, args: &[&str]) -> Vec<String> {
    let mut all = vec!["ps"];
    all.extend_from_slice(args);
    all.extend(["--format", "{{.Names}}"]);
    let mut names = lines(&berth.run_ok(&all));
    names.sort();
    names
}

fn run_detached(berth: &Berth, name: &str, extra: &[&str], command: &[&str]) {
    let mut args = vec![
        "run", "-d", "--pull", "never", "--net", "none", "--name", name,
    ];
    args.extend_from_slice(extra);
    args.push("busybox");
    args.extend_from_slice(command);
    berth.run_ok(&args);
}

#[test]
fn ps_filters_pick_exactly_the_right_containers() {
    require_root!();
    let berth = Berth::new();
    run_detached(
        &berth,
        "web",
        &["-l", "tier=web"],
        &["sh", "-c", "head -c 5000 /dev/zero > /blob; sleep 300"],
    );
    run_detached(&berth, "db", &["-l", "tier=db"], &["sleep", "300"]);
    for (name, code) in [("done", "0"), ("failed", "3")] {
        let out = berth.output([
            "run",
            "--pull",
            "never",
            "--net",
            "none",
            "--name",
            name,
            "busybox",
            "sh",
            "-c",
            &format!("exit {code}"),
        ]);
        assert_eq!(
            out.status.code(),
            Some(code.parse().unwrap()),
            "{}",
            describe(&out)
        );
    }
    berth.run_ok([
        "create", "--pull", "never", "--net", "none", "--name", "fresh", "busybox", "true",
    ]);

    assert_eq!(names(&berth, &[]), ["db", "web"]);
    assert_eq!(
        names(&berth, &["-a"]),
        ["db", "done", "failed", "fresh", "web"]
    );
    assert_eq!(
        names(&berth, &["-a", "--filter", "status=exited"]),
        ["done", "failed"]
    );
    // A status filter looks at stopped containers without -a, as docker's.
    assert_eq!(
        names(&berth, &["--filter", "status=exited"]),
        ["done", "failed"]
    );
    assert_eq!(
        names(&berth, &["-a", "--filter", "status=created"]),
        ["fresh"]
    );
    assert_eq!(
        names(
            &berth,
            &["-a", "-f", "status=created", "-f", "status=running"]
        ),
        ["db", "fresh", "web"]
    );
    assert_eq!(names(&berth, &["-a", "--filter", "exited=3"]), ["failed"]);
    assert_eq!(names(&berth, &["-a", "--filter", "exited=0"]), ["done"]);
    assert_eq!(names(&berth, &["--filter", "label=tier"]), ["db", "web"]);
    assert_eq!(names(&berth, &["--filter", "label=tier=db"]), ["db"]);
    assert_eq!(names(&berth, &["-a", "--filter", "name=fai"]), ["failed"]);
    assert_eq!(names(&berth, &["-a", "--filter", "name=^/web$"]), ["web"]);
    assert_eq!(
        names(&berth, &["-a", "--filter", "ancestor=busybox"]),
        ["db", "done", "failed", "fresh", "web"]
    );
    assert!(names(&berth, &["-a", "--filter", "ancestor=alpine"]).is_empty());
    // Different keys must all match.
    assert_eq!(
        names(
            &berth,
            &["-a", "--filter", "label=tier", "--filter", "name=w"]
        ),
        ["web"]
    );
    let failed_id = berth.run_ok(["inspect", "-f", "{{.Id}}", "failed"]);
    assert_eq!(
        names(
            &berth,
            &["-a", "--filter", &format!("id={}", &failed_id[..10])]
        ),
        ["failed"]
    );
    assert_eq!(
        names(&berth, &["-a", "--filter", "since=failed"]),
        ["fresh"]
    );
    assert_eq!(names(&berth, &["-a", "--filter", "before=db"]), ["web"]);

    // -n and -l: the newest, whatever their state.
    assert_eq!(
        lines(&berth.run_ok(["ps", "-n", "2", "--format", "{{.Names}}"])),
        ["fresh", "failed"]
    );
    assert_eq!(
        lines(&berth.run_ok(["ps", "-l", "--format", "{{.Names}} {{.State}}"])),
        ["fresh created"]
    );

    // -q and --no-trunc.
    let quiet = lines(&berth.run_ok(["ps", "-q", "--no-trunc", "--filter", "name=failed", "-a"]));
    assert_eq!(quiet, [failed_id.trim().to_owned()]);
    assert_eq!(lines(&berth.run_ok(["ps", "-q"])).len(), 2);

    // A table has docker's header and a column per placeholder.
    let table = lines(&berth.run_ok([
        "ps",
        "--format",
        "table {{.Names}}\\t{{.Label \"tier\"}}\\t{{.State}}",
    ]));
    assert_eq!(table.len(), 3, "{table:?}");
    let header: Vec<&str> = table[0].split_whitespace().collect();
    assert_eq!(header, ["NAMES", "LABEL", "STATE"]);
    assert!(
        table[1..]
            .iter()
            .any(|row| row.split_whitespace().collect::<Vec<_>>() == ["web", "web", "running"]),
        "{table:?}"
    );
    let default = berth.run_ok(["ps"]);
    let header: Vec<&str> = default
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        [
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES"
        ]
    );

    // -s: the bytes written to the container's own layer.
    assert!(
        wait_until(Duration::from_secs(10), || berth
            .run_ok(["ps", "-s", "--filter", "name=web", "--format", "{{.Size}}"])
            .starts_with("5kB (virtual ")),
        "{}",
        berth.run_ok(["ps", "-s", "--filter", "name=web"])
    );
    assert!(berth
        .run_ok(["ps", "-s"])
        .lines()
        .next()
        .unwrap()
        .ends_with("SIZE"));

    // One JSON object per line.
    for line in lines(&berth.run_ok(["ps", "-a", "--format", "json"])) {
        let row: serde_json::Value = serde_json::from_str(&line).expect("json line");
        assert!(row["ID"].is_string() && row["Names"].is_string(), "{row}");
    }

    for name in ["web", "db", "done", "failed", "fresh"] {
        berth.run_ok(["rm", "-f", name]);
    }
    berth.assert_clean();
}

/// PORTS shows the published ports of a running container, as docker's.
#[test]
fn ps_shows_published_ports() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run",
        "-d",
        "--pull",
        "never",
        "--name",
        "served",
        "-p",
        "18080:80",
        "-p",
        "5353:53/udp",
        "busybox",
        "sleep",
        "300",
    ]);
    let ports = berth.run_ok(["ps", "--format", "{{.Ports}}"]);
    assert_eq!(
        ports.trim(),
        "0.0.0.0:5353->53/udp, 0.0.0.0:18080->80/tcp",
        "{ports}"
    );
    assert!(berth.run_ok(["ps"]).contains("0.0.0.0:18080->80/tcp"));
    assert_eq!(names(&berth, &["--filter", "publish=80"]), ["served"]);
    assert_eq!(names(&berth, &["--filter", "publish=53/udp"]), ["served"]);
    assert!(names(&berth, &["--filter", "publish=81"]).is_empty());
    assert_eq!(names(&berth, &["--filter", "network=bridge"]), ["served"]);
    assert!(names(&berth, &["--filter", "network=none"]).is_empty());
    let host_port = berth.run_ok([
        "inspect",
        "-f",
        "{{(index (index .NetworkSettings.Ports \"80/tcp\") 0).HostPort}} {{.HostConfig.NetworkMode}}",
        "served",
    ]);
    assert_eq!(host_port.trim(), "18080 bridge");
    let address = berth.run_ok([
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}={{.NetworkSettings.IPAddress}}",
        "served",
    ]);
    let (from_networks, top) = address.trim().split_once('=').unwrap();
    assert!(
        from_networks.parse::<std::net::Ipv4Addr>().is_ok(),
        "{address}"
    );
    assert_eq!(from_networks, top);
    berth.run_ok(["rm", "-f", "served"]);
    berth.assert_clean();
}

#[test]
fn inspect_has_dockers_shape_for_running_and_exited_containers() {
    require_root!();
    let berth = Berth::new();
    run_detached(
        &berth,
        "up",
        &["-l", "k=v", "-e", "GREETING=hi"],
        &["sleep", "300"],
    );
    let out = berth.run_ok(["inspect", "up"]);
    let all: serde_json::Value = serde_json::from_str(&out).expect("inspect prints JSON");
    let up = &all[0];
    assert_eq!(up["Name"], "/up");
    assert_eq!(up["State"]["Status"], "running");
    assert_eq!(up["State"]["Running"], true);
    let pid = up["State"]["Pid"].as_i64().unwrap();
    assert_eq!(pid, berth.inspect("up")["pid"].as_i64().unwrap());
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).expect("the Pid is alive");
    assert!(String::from_utf8_lossy(&cmdline).starts_with("sleep"));
    assert_eq!(up["State"]["FinishedAt"], "0001-01-01T00:00:00Z");
    assert!(up["State"]["StartedAt"].as_str().unwrap().starts_with("20"));
    assert!(up["Image"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(up["Config"]["Image"], "busybox");
    assert_eq!(up["Path"], "sleep");
    assert_eq!(up["Args"], serde_json::json!(["300"]));
    // Templates from docker's documentation.
    assert_eq!(
        berth.run_ok(["inspect", "-f", "{{.Name}} {{.State.Status}}", "up"]),
        "/up running\n"
    );
    assert_eq!(
        berth.run_ok([
            "inspect",
            "--format",
            "{{index .Config.Labels \"k\"}}",
            "up"
        ]),
        "v\n"
    );
    let env: Vec<String> =
        serde_json::from_str(&berth.run_ok(["inspect", "-f", "{{json .Config.Env}}", "up"]))
            .expect("json .Config.Env");
    assert!(env.contains(&"GREETING=hi".to_owned()), "{env:?}");
    // The host paths docker names, and -s sizes.
    let paths = berth.run_ok([
        "inspect",
        "-f",
        "{{.LogPath}} {{.HostsPath}} {{.ResolvConfPath}} {{.HostnamePath}}",
        "up",
    ]);
    for path in paths.split_whitespace() {
        assert!(
            path.starts_with(berth.root().to_str().unwrap()) && fs::metadata(path).is_ok(),
            "{path}"
        );
    }
    let sizes = berth.run_ok(["inspect", "-s", "-f", "{{.SizeRw}} {{.SizeRootFs}}", "up"]);
    let sizes: Vec<u64> = sizes
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(sizes[1] > sizes[0], "{sizes:?}");
    let ranged = berth.run_ok([
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        "up",
    ]);
    assert!(ranged.lines().any(|l| l == "GREETING=hi"), "{ranged}");

    let out = berth.output([
        "run", "--pull", "never", "--net", "none", "--name", "gone", "busybox", "sh", "-c",
        "exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    let gone = berth.run_ok([
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.Pid}} {{.State.ExitCode}} {{.State.Running}} {{.State.StartedAt}} {{.State.FinishedAt}}",
        "gone",
    ]);
    let fields: Vec<&str> = gone.split_whitespace().collect();
    assert_eq!(fields[..4], ["exited", "0", "7", "false"], "{gone}");
    assert!(
        fields[4] <= fields[5] && fields[4].starts_with("20"),
        "{gone}"
    );
    // Both, in the order given; json prints each on its own line.
    let both = lines(&berth.run_ok(["inspect", "-f", "{{.Name}}", "gone", "up"]));
    assert_eq!(both, ["/gone", "/up"]);
    let json_lines = lines(&berth.run_ok(["inspect", "--format", "json", "gone", "up"]));
    assert_eq!(json_lines.len(), 2);

    // --type picks what a name is looked up as.
    assert!(berth
        .run_ok(["inspect", "--type", "image", "busybox"])
        .contains("RepoTags"));
    assert_berth_error(
        &berth.output(["inspect", "--type", "container", "busybox"]),
        125,
    );
    assert_berth_error(&berth.output(["inspect", "--type", "image", "up"]), 125);

    berth.run_ok(["rm", "-f", "up", "gone"]);
    berth.assert_clean();
}

#[test]
fn images_quiet_format_and_filters() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run", "--rm", "--pull", "never", "--net", "none", "busybox", "true",
    ]);
    let ids = lines(&berth.run_ok(["images", "-q"]));
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].len(), 12);
    assert_eq!(
        berth.run_ok(["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]),
        format!("busybox:latest {}\n", ids[0])
    );
    assert_eq!(
        lines(&berth.run_ok(["images", "-q", "--filter", "reference=busy*"])),
        ids
    );
    assert!(berth
        .run_ok(["images", "-q", "--filter", "reference=alp*"])
        .is_empty());
    assert!(berth
        .run_ok(["images", "-q", "--filter", "dangling=true"])
        .is_empty());
    assert_eq!(
        lines(&berth.run_ok(["images", "-q", "--filter", "dangling=false"])),
        ids
    );
    let table = berth.run_ok(["images", "--format", "table {{.Repository}}\\t{{.Size}}"]);
    assert!(
        table.starts_with("REPOSITORY   SIZE\nbusybox      "),
        "{table}"
    );
    berth.assert_clean();
}

#[test]
fn logs_timestamps_since_and_until() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run",
        "--pull",
        "never",
        "--net",
        "none",
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "echo early; sleep 2; echo late",
    ]);
    let stamped = lines(&berth.run_ok(["logs", "-t", "talker"]));
    assert_eq!(stamped.len(), 2, "{stamped:?}");
    let (early_time, early) = stamped[0].split_once(' ').unwrap();
    let (late_time, late) = stamped[1].split_once(' ').unwrap();
    assert_eq!((early, late), ("early", "late"));
    for time in [early_time, late_time] {
        // RFC 3339 with nine fraction digits, as docker prints them.
        assert!(
            time.len() == 30 && time.ends_with('Z') && time.as_bytes()[19] == b'.',
            "{time}"
        );
    }
    assert_eq!(
        berth.run_ok(["logs", "--since", late_time, "talker"]),
        "late\n"
    );
    assert_eq!(
        berth.run_ok(["logs", "--until", early_time, "talker"]),
        "early\n"
    );
    assert_eq!(
        berth.run_ok(["logs", "--since", "1h", "talker"]),
        "early\nlate\n"
    );
    assert_eq!(berth.run_ok(["logs", "--until", "1h", "talker"]), "");
    let future = (std::time::SystemTime::now() + Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    assert_eq!(berth.run_ok(["logs", "--since", &future, "talker"]), "");
    assert_eq!(
        berth.run_ok(["logs", "-n", "1", "-t", "talker"]),
        format!("{late_time} late\n")
    );
    berth.run_ok(["rm", "talker"]);
    berth.assert_clean();
}

#[test]
fn bad_templates_and_filters_are_one_line_errors_before_any_output() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run", "--pull", "never", "--net", "none", "--name", "target", "busybox", "true",
    ]);
    let cases: &[&[&str]] = &[
        &["ps", "-a", "--format", "{{.Names"],
        &["ps", "-a", "--format", "{{.Nmae}}"],
        &["ps", "-a", "--format", "{{nosuchfunction .}}"],
        &["ps", "-a", "--format", "{{if .Names}}"],
        &["ps", "--filter", "colour=red"],
        &["ps", "--filter", "status=sleeping"],
        &["ps", "--filter", "exited=x"],
        &["inspect", "-f", "{{.Name", "target"],
        &["inspect", "-f", "{{end}}", "target"],
        &["inspect", "--type", "volume", "target"],
        &["images", "--filter", "colour=red"],
        &["images", "--format", "{{.Nope}}"],
        &["logs", "--since", "yesterday", "target"],
        &["logs", "--until", "10x", "target"],
    ];
    for args in cases {
        let out = berth.output(*args);
        assert_berth_error(&out, 125);
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed\n{}",
            describe(&out)
        );
    }
    berth.run_ok(["rm", "target"]);
    berth.assert_clean();
}

#[test]
fn closed_and_full_outputs_end_quietly_never_a_panic() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run",
        "--pull",
        "never",
        "--net",
        "none",
        "--name",
        "out",
        "busybox",
        "sh",
        "-c",
        "seq 1 20000",
    ]);
    let commands: &[&[&str]] = &[
        &["inspect", "out"],
        &["inspect", "-f", "{{json .}}", "out"],
        &["ps", "-a"],
        &["ps", "-a", "--format", "json"],
        &["images", "--format", "{{.ID}}"],
        &["logs", "-t", "out"],
        &["completion", "bash"],
    ];
    for args in commands {
        // `berth ... | head -1`: the reader goes away after one line.
        let mut child = berth.cmd(*args).stdout(Stdio::piped()).spawn().unwrap();
        let mut pipe = child.stdout.take().unwrap();
        let mut first = [0u8; 1];
        let _ = pipe.read(&mut first);
        drop(pipe);
        let out = child.wait_with_output().unwrap();
        assert!(
            matches!(out.status.code(), Some(0 | 141)) && !stderr(&out).contains("panicked"),
            "{args:?} with a closed pipe\n{}",
            describe(&out)
        );
        // `berth ... > /dev/full`.
        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = berth.cmd(*args).stdout(full).output().unwrap();
        let line = assert_berth_error(&out, 125);
        assert!(line.contains("No space left"), "{args:?}: {line}");
    }
    assert!(stdout(&berth.output(["ps", "-a", "-q"])).lines().count() == 1);
    berth.run_ok(["rm", "out"]);
    berth.assert_clean();
}

#[test]
fn version_and_info_take_a_format() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run", "--pull", "never", "--net", "none", "--name", "one", "busybox", "true",
    ]);
    let version = berth.run_ok(["version", "--format", "{{.Client.Version}}"]);
    assert!(version.trim().split('.').count() == 3, "{version}");
    let info: serde_json::Value =
        serde_json::from_str(&berth.run_ok(["info", "--format", "{{json .}}"])).expect("json");
    assert_eq!(info["Containers"], 1);
    assert_eq!(info["ContainersStopped"], 1);
    assert_eq!(info["Images"], 1);
    assert_eq!(info["Driver"], "overlay");
    assert_eq!(info["DockerRootDir"], berth.root().to_str().unwrap());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(
        berth.run_ok(["info", "-f", "{{.KernelVersion}}"]).trim(),
        kernel.trim()
    );
    let cgroup = berth.run_ok(["info", "-f", "{{.CgroupVersion}} {{.CgroupLayout}}"]);
    assert!(
        ["1 legacy", "1 hybrid", "2 unified"].contains(&cgroup.trim()),
        "{cgroup}"
    );
    assert_berth_error(&berth.output(["info", "-f", "{{.X"]), 125);
    berth.run_ok(["rm", "one"]);
    berth.assert_clean();
}
