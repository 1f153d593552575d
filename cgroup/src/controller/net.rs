//! net_cls and net_prio (cgroup v1 only): a class id for the cgroup's
//! packets, and a priority per interface.

use std::path::Path;

use crate::error::Result;
use crate::fsio;
use crate::resources::NetPriority;

pub(crate) fn set_class_id(dir: &Path, class_id: u32) -> Result<()> {
    fsio::write(&dir.join("net_cls.classid"), &class_id.to_string())
}

pub(crate) fn set_priorities(dir: &Path, priorities: &[NetPriority]) -> Result<()> {
    let file = dir.join("net_prio.ifpriomap");
    for entry in priorities {
        // The interface name was validated: no whitespace.
        fsio::write(&file, &format!("{} {}", entry.interface, entry.priority))?;
    }
    Ok(())
}
