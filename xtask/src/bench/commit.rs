//! The `commit` scenario (issue 16): `berth commit` of a container that
//! wrote ~100 MiB (four 20 MiB pseudo-random files and 4,000 small ones)
//! beside `tar -czf` and `tar -cf` of the same upper directory, rounds
//! interleaved, the order rotated.
//!
//! The data is put into the write layer of a stopped container (as
//! files.rs does for `cp`). Before every timed command the page cache is
//! written back (`sync`): no case pays for the previous one's writes, and
//! the source stays cached for all. Every round first adds one small file
//! of its own to the upper dir, so that every commit stores a layer the
//! store does not have; the images are removed after the last round, not
//! between rounds: on an ext4 without a journal (this VM's root) every new
//! inode skips each inode freed in its group in the last 60 s, so removing
//! one round's 4,000-file layer made the next round's commit pay for that
//! removal (and `tar`, which makes one file, pay nothing). Wall and CPU
//! (user+sys from `getrusage`) per case; commit.tsv keeps them all.

use std::fmt::Write as _;
use std::fs;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};

use super::exec::timed;
use super::files::{container_dir, fresh_dir, write_tree, TreeShape};
use super::report::median;
use super::system::{display_command, find_in_path, quiet, run_checked};
use super::{Runner, Section, Settings};

/// About 100 MiB: four 20 MiB files and 4,000 of 5 KiB.
const TREE: TreeShape = TreeShape {
    big_files: 4,
    big_file_bytes: 20 << 20,
    small_dirs: 8,
    small_files_per_dir: 500,
    small_file_bytes: 5 << 10,
    seed: 23,
};
const CONTAINER: &str = "bench-commit-src";

/// The cases, in table order.
const CASES: [&str; 3] = ["berth commit", "tar -czf", "tar -cf"];

/// One timed case: (wall, CPU) after writing back the page cache.
fn timed_after_sync(command: &mut Command) -> Result<(Duration, Duration)> {
    run_checked(quiet(&mut Command::new("sync")))?;
    let description = display_command(command);
    let (status, wall, cpu) = timed(command)?;
    if !status.success() {
        bail!("`{description}` failed ({status})");
    }
    Ok((wall, cpu))
}

pub(super) fn measure(settings: &Settings, runner: &Runner) -> Result<Section> {
    if find_in_path("tar").is_none() || find_in_path("gzip").is_none() {
        bail!("the commit scenario needs tar and gzip");
    }
    let root = runner.work.berth_root();
    // tar's archives go to the filesystem berth's layer store is on (a
    // tmpfs with --berth-root-on-tmpfs): both write to the same disk.
    let base = root.join("bench-commit-out");
    let out_dir = fresh_dir(&base)?;
    run_checked(quiet(runner.berth_command().args([
        "run", "--pull", "never", "--net", "none", "--name", CONTAINER, "busybox", "true",
    ])))?;
    let upper = container_dir(&root, CONTAINER)?.join("upper");
    let bytes = write_tree(&fresh_dir(&upper.join("data"))?, &TREE)?;
    let tar = |flags: &str, out: &str| {
        let mut command = Command::new("tar");
        command
            .arg("-C")
            .arg(&upper)
            .arg(flags)
            .arg(out_dir.join(out))
            .arg(".");
        command
    };

    let rounds = if settings.quick {
        1
    } else {
        settings.rounds.max(5)
    };
    let mut raw = String::from("round\tcase\twall_ms\tcpu_ms\n");
    // Per kept round: (wall, cpu) of each case, in CASES order.
    let mut rows: Vec<[(f64, f64); 3]> = Vec::new();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut commands = Vec::new();
    // Round 0 warms up (page cache of the source, first use of the store).
    let mut tags = Vec::new();
    for round in 0..=rounds {
        fs::write(
            upper.join("data").join(format!("round-{round}")),
            format!("round {round}\n"),
        )?;
        let mut row = [(0.0, 0.0); 3];
        for step in 0..CASES.len() {
            let case = (step + round) % CASES.len();
            let tag = format!("bench-commit:r{round}");
            let mut command = match case {
                0 => {
                    let mut command = runner.berth_command();
                    command.args(["commit", CONTAINER, &tag]);
                    command
                }
                1 => tar("-czf", "upper.tar.gz"),
                _ => tar("-cf", "upper.tar"),
            };
            if round == 0 {
                commands.push((case, display_command(&command)));
            }
            let (wall, cpu) = timed_after_sync(&mut command)?;
            // Untimed: the archives go at once (one inode each), the images
            // after the last round (see the module's doc).
            match case {
                0 => tags.push(tag),
                1 => fs::remove_file(out_dir.join("upper.tar.gz"))?,
                _ => fs::remove_file(out_dir.join("upper.tar"))?,
            }
            row[case] = (ms(wall), ms(cpu));
            let _ = writeln!(
                raw,
                "{round}\t{}\t{:.1}\t{:.1}",
                CASES[case],
                ms(wall),
                ms(cpu)
            );
        }
        if round > 0 {
            rows.push(row);
        }
    }
    for tag in &tags {
        run_checked(quiet(runner.berth_command().args(["rmi", tag])))?;
    }
    let _ = run_checked(quiet(runner.berth_command().args(["rm", "-f", CONTAINER])));
    let _ = fs::remove_dir_all(&base);

    commands.sort();
    Ok(Section {
        markdown: render(rounds, bytes, &rows, &commands),
        raw: Some(("commit.tsv", raw)),
        failure: None,
    })
}

fn render(
    rounds: usize,
    bytes: u64,
    rows: &[[(f64, f64); 3]],
    commands: &[(usize, String)],
) -> String {
    let wall = |i: usize| median(&rows.iter().map(|r| r[i].0).collect::<Vec<_>>());
    let cpu = |i: usize| median(&rows.iter().map(|r| r[i].1).collect::<Vec<_>>());
    let paired = |i: usize, against: usize, of: fn(&(f64, f64)) -> f64| {
        median(
            &rows
                .iter()
                .map(|r| of(&r[i]) / of(&r[against]))
                .collect::<Vec<_>>(),
        )
    };
    let show = |value: Option<f64>, suffix: &str| {
        value.map_or("-".to_owned(), |v| format!("{v:.2}{suffix}"))
    };
    let mut out = String::from("## commit: a container's ~100 MiB write layer\n\n");
    let _ = writeln!(
        out,
        "{rounds} rounds after a warm-up round, cases interleaved, order rotated; {} MiB in {} files ({} pseudo-random of {} MiB), page cache written back before each case; each round adds a small file of its own to the upper dir (so every commit stores a new layer) and the committed images are removed after the last round (untimed; a removal between rounds made the next commit pay for it on ext4 without a journal). Ratios: median of per-round paired ratios. Raw: commit.tsv.\n",
        bytes >> 20,
        TREE.files(),
        TREE.big_files,
        TREE.big_file_bytes >> 20
    );
    out.push_str("| case | wall median ms | CPU median ms | wall vs tar -czf | wall vs tar -cf | CPU vs tar -czf |\n|---|---:|---:|---:|---:|---:|\n");
    for (i, name) in CASES.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} |",
            show(wall(i), ""),
            show(cpu(i), ""),
            show(paired(i, 1, |c| c.0), "x"),
            show(paired(i, 2, |c| c.0), "x"),
            show(paired(i, 1, |c| c.1), "x"),
        );
    }
    out.push_str("\nTarget: berth commit at most 1.00x tar -czf. Commands:\n\n");
    for (_, command) in commands {
        let _ = writeln!(out, "    {command}");
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_paired_per_round() {
        let rows = [
            [(10.0, 2.0), (20.0, 4.0), (5.0, 1.0)],
            [(30.0, 3.0), (20.0, 2.0), (10.0, 1.0)],
        ];
        let text = render(2, 100 << 20, &rows, &[(0, "berth commit X".to_owned())]);
        // berth vs tar -czf: 0.5 and 1.5 -> 1.00x (CPU too); vs tar -cf: 2 and 3 -> 2.50x.
        assert!(
            text.contains("| berth commit | 20.00 | 2.50 | 1.00x | 2.50x | 1.00x |"),
            "{text}"
        );
        assert!(
            text.contains("| tar -czf | 20.00 | 3.00 | 1.00x |"),
            "{text}"
        );
        assert!(text.contains("    berth commit X"));
    }
}
