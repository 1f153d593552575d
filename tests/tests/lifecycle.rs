//! Containers as records: the write layer, --rm, ps, rm, lookups.

use std::fs;

use berth_e2e::{assert_berth_error, assert_target_error, require_root, Berth};

#[test]
fn writes_go_to_the_container_layer_never_the_image() {
    require_root!();
    let berth = Berth::new();
    // The busybox image is built on first use; make it exist first.
    berth.run_ok(["run", "--rm", "busybox", "true"]);
    let layers = berth.layer_rootfses();
    assert_eq!(layers.len(), 1, "image layers: {layers:?}");
    let image_passwd = fs::read(layers[0].join("etc/passwd")).expect("image /etc/passwd");

    berth.run_ok([
        "run",
        "--name",
        "writer",
        "busybox",
        "sh",
        "-c",
        "echo data > /newfile && echo intruder >> /etc/passwd && rm /bin/true",
    ]);
    for layer in berth.layer_rootfses() {
        assert!(
            !layer.join("newfile").exists(),
            "/newfile appeared in {}",
            layer.display()
        );
        assert!(
            layer.join("bin/true").exists(),
            "rm in the container removed /bin/true from the image"
        );
    }
    assert_eq!(
        fs::read(layers[0].join("etc/passwd")).expect("image /etc/passwd"),
        image_passwd,
        "the image's /etc/passwd changed"
    );
    // The change is in the container's own layer, and survives its exit.
    let dirs = berth.container_dirs();
    assert_eq!(dirs.len(), 1, "container dirs: {dirs:?}");
    let upper = dirs[0].join("upper");
    assert_eq!(
        fs::read_to_string(upper.join("newfile")).expect("upper/newfile"),
        "data\n"
    );

    // Another container starts from the pristine image.
    let out = berth.run_ok([
        "run",
        "busybox",
        "sh",
        "-c",
        "cat /newfile 2>&1; grep -c intruder /etc/passwd; true",
    ]);
    assert!(
        out.contains("No such file") && out.trim_end().ends_with('0'),
        "{out}"
    );

    berth.run_ok(["rm", "writer"]);
    assert!(
        !dirs[0].exists(),
        "the write layer {} is still there after rm",
        dirs[0].display()
    );
    berth.assert_clean();
}

#[test]
fn rm_flag_leaves_nothing_behind() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok([
        "run",
        "--rm",
        "--name",
        "gone",
        "busybox",
        "sh",
        "-c",
        "echo x > /file",
    ]);
    let out = berth.output(["run", "--rm", "busybox", "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    let out = berth.output(["run", "--rm", "busybox", "nosuchcmd"]);
    assert_eq!(out.status.code(), Some(127));

    assert_eq!(
        berth.container_dirs(),
        Vec::<std::path::PathBuf>::new(),
        "container dirs left"
    );
    assert!(
        berth.container_ids().is_empty(),
        "ps -a still lists containers"
    );
    assert_eq!(
        berth.run_ok(["ps", "-a"]).lines().count(),
        1,
        "ps -a shows more than its header"
    );
    assert_berth_error(&berth.output(["inspect", "gone"]), 125);
    berth.assert_clean();
}

#[test]
fn an_exited_container_stays_listed_until_rm() {
    require_root!();
    let berth = Berth::new();
    let out = berth.output(["run", "--name", "stays", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));

    let ps = berth.run_ok(["ps", "-a"]);
    let row = ps
        .lines()
        .find(|l| l.contains("stays"))
        .unwrap_or_else(|| panic!("ps -a does not list the exited container:\n{ps}"));
    assert!(row.contains("Exited (3) "), "status column: {row}");
    assert!(row.contains("busybox"), "image column: {row}");
    // Not running, so plain `ps` does not show it.
    let running = berth.run_ok(["ps"]);
    assert!(
        !running.contains("stays"),
        "ps shows an exited container:\n{running}"
    );

    let record = berth.inspect("stays");
    assert_eq!(record["status"], "exited");
    assert_eq!(record["exit_code"], 3);
    assert_eq!(berth.container_dirs().len(), 1);

    berth.run_ok(["rm", "stays"]);
    assert!(berth.container_ids().is_empty(), "still listed after rm");
    assert!(berth.container_dirs().is_empty(), "directory left after rm");
    assert_target_error(&berth.output(["rm", "stays"]));
    berth.assert_clean();
}

#[test]
fn containers_are_found_by_name_full_id_and_unique_prefix() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["run", "--name", "first", "busybox", "true"]);
    berth.run_ok(["run", "--name", "second", "busybox", "true"]);
    let id = berth.inspect("first")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let other = berth.inspect("second")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_ne!(id, other);
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "id {id}"
    );
    // The shortest prefix of `id` that is not a prefix of `other`.
    let common = id
        .bytes()
        .zip(other.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    let prefix = &id[..common + 1];

    for query in [&id[..], prefix, &id[..12], "first"] {
        assert_eq!(berth.inspect(query)["name"], "first", "lookup by {query:?}");
    }
    // `ps -q` lists the short ids.
    let mut ids = berth.container_ids();
    ids.sort();
    let mut want = vec![id[..12].to_owned(), other[..12].to_owned()];
    want.sort();
    assert_eq!(ids, want, "ps -a -q");

    assert_berth_error(&berth.output(["inspect", "nosuchcontainer"]), 125);
    berth.run_ok(["rm", prefix]);
    assert_berth_error(&berth.output(["inspect", "first"]), 125);
    berth.run_ok(["rm", &other]);
    assert!(berth.container_ids().is_empty());
    berth.assert_clean();
}

#[test]
fn ps_shows_docker_columns() {
    require_root!();
    let berth = Berth::new();
    berth.run_ok(["run", "--name", "listed", "busybox", "sh", "-c", "exit 0"]);
    let ps = berth.run_ok(["ps", "-a"]);
    let mut lines = ps.lines();
    let header = lines.next().expect("ps prints a header");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "CONTAINER",
            "ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES"
        ],
        "ps header"
    );
    let row = lines.next().expect("ps lists the container");
    let id = berth.inspect("listed")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(
        row.starts_with(&id[..12]),
        "row starts with the short id: {row}"
    );
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns.get(1), Some(&"busybox"), "{row}");
    assert_eq!(columns.last(), Some(&"listed"), "{row}");
    assert!(row.contains("\"sh -c exit 0\""), "command column: {row}");
    assert!(row.contains("Exited (0)"), "status column: {row}");
    // Columns line up under the header.
    for (title, value) in [
        ("IMAGE", "busybox"),
        ("COMMAND", "\"sh"),
        ("STATUS", "Exited"),
        ("NAMES", "listed"),
    ] {
        let at = header.find(title).expect("title");
        assert!(
            row.get(at..).is_some_and(|r| r.starts_with(value)),
            "{value} is not under {title}:\n{ps}"
        );
    }
    assert!(lines.next().is_none(), "one container, one row:\n{ps}");
    berth.assert_clean();
}
