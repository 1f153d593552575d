//! `berth ps`.

use berth_state::Timestamp;

use crate::args::PsArgs;
use crate::container::{self, status_text};
use crate::paths::Paths;
use crate::table::{human_duration, render};

pub fn ps(paths: &Paths, args: &PsArgs) -> anyhow::Result<()> {
    let store = paths.containers()?;
    let mut records = container::list(&store)?;
    records.retain(|r| args.all || r.is_active());
    // Newest first, like docker.
    records.reverse();
    // Records that cannot be read are shown (with -a), never hide the rest.
    let broken = if args.all {
        store.broken()?
    } else {
        Vec::new()
    };
    let short = |id: &str| id[..id.len().min(12)].to_owned();
    if args.quiet {
        for id in records
            .iter()
            .map(|r| &r.id)
            .chain(broken.iter().map(|b| &b.id))
        {
            println!("{}", short(id));
        }
        return Ok(());
    }
    let now = Timestamp::now();
    let mut rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.short_id().to_owned(),
                r.name.clone(),
                r.image.clone(),
                command_text(&r.command),
                format!("{} ago", human_duration(r.created.until(now))),
                status_text(r, now),
            ]
        })
        .collect();
    rows.extend(broken.iter().map(|b| {
        vec![
            short(&b.id),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            "Broken record (berth rm -f removes it)".to_owned(),
        ]
    }));
    print!(
        "{}",
        render(
            &[
                "CONTAINER ID",
                "NAME",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS"
            ],
            &rows
        )
    );
    Ok(())
}

/// docker's COMMAND column: quoted, cut to 20 characters with an ellipsis.
fn command_text(command: &[String]) -> String {
    let full = command.join(" ");
    let cut: String = if full.chars().count() > 20 {
        full.chars().take(19).chain(std::iter::once('…')).collect()
    } else {
        full
    };
    format!("\"{cut}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_commands_are_cut() {
        assert_eq!(command_text(&["sh".into()]), "\"sh\"");
        let long: Vec<String> = ["sh", "-c", "echo hello world; sleep 100"]
            .map(String::from)
            .to_vec();
        assert_eq!(command_text(&long), "\"sh -c echo hello wo…\"");
    }
}
