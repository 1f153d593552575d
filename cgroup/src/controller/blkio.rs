//! blkio (v1) / io (v2): proportional weights and per-device throttling.
//!
//! Weights go to whichever file the kernel offers, as runc does: v1
//! `blkio.weight` (CFQ) or else `blkio.bfq.weight` (BFQ); v2
//! `io.bfq.weight` (BFQ, same range as v1) or else `io.weight` (converted
//! to 1..=10000). Leaf weights exist only with CFQ on v1.

use std::path::{Path, PathBuf};

use super::Dir;
use crate::error::{CgroupError, Result};
use crate::fsio;
use crate::resources::{blkio_weight_to_io_weight, BlockIo, DeviceRate};
use crate::Version;

pub(crate) fn set(dir: Dir, block_io: &BlockIo) -> Result<()> {
    match dir {
        Dir::V1(path) => set_v1(path, block_io),
        Dir::V2(path) => set_v2(path, block_io),
    }
}

/// The first of `names` that exists in `dir`; the error names the first.
fn first_existing(dir: &Path, names: &[&str], setting: &'static str) -> Result<PathBuf> {
    names
        .iter()
        .map(|name| dir.join(name))
        .find(|file| file.exists())
        .ok_or_else(|| CgroupError::KernelLacks {
            setting,
            path: dir.join(names[0]),
        })
}

fn set_v1(path: &Path, block_io: &BlockIo) -> Result<()> {
    if wants_weight(block_io) {
        let (weight_file, device_file) = if path.join("blkio.weight").exists() {
            ("blkio.weight", "blkio.weight_device")
        } else if path.join("blkio.bfq.weight").exists() {
            ("blkio.bfq.weight", "blkio.bfq.weight_device")
        } else {
            return Err(CgroupError::KernelLacks {
                setting: "block I/O weight",
                path: path.join("blkio.weight"),
            });
        };
        if let Some(weight) = block_io.weight {
            fsio::write(&path.join(weight_file), &weight.to_string())?;
        }
        for device in &block_io.device_weights {
            if let Some(weight) = device.weight {
                let file = first_existing(path, &[device_file], "block I/O device weight")?;
                fsio::write(
                    &file,
                    &format!("{}:{} {weight}", device.major, device.minor),
                )?;
            }
        }
    }
    if let Some(weight) = block_io.leaf_weight {
        let file = first_existing(path, &["blkio.leaf_weight"], "block I/O leaf weight")?;
        fsio::write(&file, &weight.to_string())?;
    }
    for device in &block_io.device_weights {
        if let Some(weight) = device.leaf_weight {
            let file = first_existing(
                path,
                &["blkio.leaf_weight_device"],
                "block I/O device leaf weight",
            )?;
            fsio::write(
                &file,
                &format!("{}:{} {weight}", device.major, device.minor),
            )?;
        }
    }
    for (rates, name) in [
        (
            &block_io.throttle_read_bps,
            "blkio.throttle.read_bps_device",
        ),
        (
            &block_io.throttle_write_bps,
            "blkio.throttle.write_bps_device",
        ),
        (
            &block_io.throttle_read_iops,
            "blkio.throttle.read_iops_device",
        ),
        (
            &block_io.throttle_write_iops,
            "blkio.throttle.write_iops_device",
        ),
    ] {
        for rate in rates {
            // 0 removes the device's limit on v1.
            fsio::write(
                &path.join(name),
                &format!("{}:{} {}", rate.major, rate.minor, rate.rate),
            )?;
        }
    }
    Ok(())
}

fn set_v2(path: &Path, block_io: &BlockIo) -> Result<()> {
    if block_io.leaf_weight.is_some()
        || block_io
            .device_weights
            .iter()
            .any(|d| d.leaf_weight.is_some())
    {
        return Err(CgroupError::NeedsVersion {
            setting: "block I/O leaf weight",
            version: Version::V1,
        });
    }
    if wants_weight(block_io) {
        let bfq = path.join("io.bfq.weight");
        let (file, convert): (PathBuf, fn(u16) -> u64) = if bfq.exists() {
            (bfq, u64::from)
        } else {
            let file = first_existing(path, &["io.weight"], "block I/O weight")?;
            (file, blkio_weight_to_io_weight)
        };
        if let Some(weight) = block_io.weight {
            fsio::write(&file, &convert(weight).to_string())?;
        }
        for device in &block_io.device_weights {
            if let Some(weight) = device.weight {
                fsio::write(
                    &file,
                    &format!("{}:{} {}", device.major, device.minor, convert(weight)),
                )?;
            }
        }
    }
    let io_max = path.join("io.max");
    for (rates, key) in [
        (&block_io.throttle_read_bps, "rbps"),
        (&block_io.throttle_write_bps, "wbps"),
        (&block_io.throttle_read_iops, "riops"),
        (&block_io.throttle_write_iops, "wiops"),
    ] {
        for rate in rates {
            fsio::write(&io_max, &io_max_line(rate, key))?;
        }
    }
    Ok(())
}

fn wants_weight(block_io: &BlockIo) -> bool {
    block_io.weight.is_some() || block_io.device_weights.iter().any(|d| d.weight.is_some())
}

/// `8:0 rbps=1048576`; 0 is `max` (no limit), as 0 is on v1.
fn io_max_line(rate: &DeviceRate, key: &str) -> String {
    let value = match rate.rate {
        0 => "max".to_owned(),
        n => n.to_string(),
    };
    format!("{}:{} {key}={value}", rate.major, rate.minor)
}
