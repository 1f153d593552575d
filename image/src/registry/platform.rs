//! Choosing one image of a manifest list (OCI index or docker manifest
//! list) by platform.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageIndex};

use super::RegistryError;

/// The platform an image is pulled for: `os/arch[/variant]`, by default
/// `linux/amd64`. Architecture spellings of `uname -m` (x86_64, aarch64)
/// are accepted and stored in the OCI spelling (amd64, arm64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPlatform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture in OCI spelling, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// CPU variant, e.g. `v7` for arm; `None` accepts any variant.
    pub variant: Option<String>,
}

impl Default for TargetPlatform {
    fn default() -> Self {
        TargetPlatform {
            os: "linux".to_owned(),
            architecture: "amd64".to_owned(),
            variant: None,
        }
    }
}

impl FromStr for TargetPlatform {
    type Err = RegistryError;

    fn from_str(text: &str) -> Result<Self, RegistryError> {
        let invalid = || RegistryError::InvalidPlatform {
            platform: text.to_owned(),
        };
        let parts: Vec<&str> = text.split('/').collect();
        let valid_part = |part: &&str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid_part) {
            return Err(invalid());
        }
        Ok(TargetPlatform {
            os: parts[0].to_ascii_lowercase(),
            architecture: normalize_architecture(&parts[1].to_ascii_lowercase()).to_owned(),
            variant: parts.get(2).map(|variant| variant.to_ascii_lowercase()),
        })
    }
}

impl TargetPlatform {
    /// The platform of the machine this runs on (`linux/amd64` on x86-64).
    pub fn host() -> Self {
        TargetPlatform {
            os: "linux".to_owned(),
            architecture: crate::ingest::host_architecture().to_owned(),
            variant: None,
        }
    }

    /// Whether an index entry's platform is this one (the variant only
    /// when one is wanted; arm64 without one is v8).
    pub(crate) fn matches(&self, platform: &oci_spec::image::Platform) -> bool {
        let implied = implied_variant(&self.architecture);
        platform.os().to_string() == self.os
            && normalize_architecture(&platform.architecture().to_string()) == self.architecture
            && match &self.variant {
                Some(wanted) => platform.variant().as_deref().or(implied) == Some(wanted.as_str()),
                None => true,
            }
    }
}

impl fmt::Display for TargetPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

fn normalize_architecture(architecture: &str) -> &str {
    match architecture {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "i386" | "i686" => "386",
        other => other,
    }
}

/// The variant an image without one is taken to have (arm64 images are
/// v8 unless they say otherwise, as in containerd's matcher).
fn implied_variant(architecture: &str) -> Option<&'static str> {
    match architecture {
        "arm64" => Some("v8"),
        _ => None,
    }
}

/// Picks the entry of `index` for `wanted`: same OS and architecture, and
/// the same variant when one is wanted. Among several matches an entry
/// without a variant (or with the implied one) wins, then the first.
/// Fails listing what the index has.
pub(crate) fn select_manifest<'a>(
    index: &'a ImageIndex,
    wanted: &TargetPlatform,
) -> Result<&'a Descriptor, Vec<String>> {
    let mut best: Option<(&Descriptor, bool)> = None;
    for entry in index.manifests() {
        let Some(platform) = entry.platform() else {
            continue;
        };
        if platform.os().to_string() != wanted.os
            || normalize_architecture(&platform.architecture().to_string()) != wanted.architecture
        {
            continue;
        }
        let implied = implied_variant(&wanted.architecture);
        let variant = platform.variant().as_deref().or(implied);
        let plain = variant == implied;
        match &wanted.variant {
            Some(want) if variant != Some(want.as_str()) => continue,
            _ => {}
        }
        let better = match best {
            None => true,
            Some((_, best_plain)) => plain && !best_plain,
        };
        if better {
            best = Some((entry, plain));
        }
    }
    best.map(|(entry, _)| entry).ok_or_else(|| {
        index
            .manifests()
            .iter()
            .filter_map(|entry| entry.platform().as_ref())
            .map(|platform| {
                let mut name = format!("{}/{}", platform.os(), platform.architecture());
                if let Some(variant) = platform.variant() {
                    name = format!("{name}/{variant}");
                }
                name
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[&str]) -> ImageIndex {
        let manifests: Vec<serde_json::Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, platform)| {
                let parts: Vec<&str> = platform.split('/').collect();
                let mut platform = serde_json::json!({"os": parts[0], "architecture": parts[1]});
                if let Some(variant) = parts.get(2) {
                    platform["variant"] = (*variant).into();
                }
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": format!("sha256:{:064x}", i),
                    "size": 100 + i,
                    "platform": platform,
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .unwrap()
    }

    fn pick(platforms: &[&str], wanted: &str) -> Result<u64, Vec<String>> {
        let index = index(platforms);
        select_manifest(&index, &wanted.parse().unwrap()).map(|d| d.size() - 100)
    }

    #[test]
    fn platforms_parse_and_print() {
        let platform: TargetPlatform = "linux/x86_64".parse().unwrap();
        assert_eq!(platform, TargetPlatform::default());
        assert_eq!(platform.to_string(), "linux/amd64");
        let arm: TargetPlatform = "Linux/arm/v7".parse().unwrap();
        assert_eq!(arm.to_string(), "linux/arm/v7");
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/arm/v7/x",
            "linux/amd 64",
        ] {
            assert!(
                matches!(
                    bad.parse::<TargetPlatform>(),
                    Err(RegistryError::InvalidPlatform { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_matching_entry_is_chosen() {
        let list = [
            "linux/arm64/v8",
            "linux/amd64",
            "linux/arm/v7",
            "linux/arm/v6",
        ];
        assert_eq!(pick(&list, "linux/amd64"), Ok(1));
        assert_eq!(pick(&list, "linux/arm64"), Ok(0));
        assert_eq!(pick(&list, "linux/aarch64/v8"), Ok(0));
        assert_eq!(pick(&list, "linux/arm/v6"), Ok(3));
        // No variant asked for: the first arm entry.
        assert_eq!(pick(&list, "linux/arm"), Ok(2));
        // A plain entry wins over one with a variant.
        assert_eq!(
            pick(&["linux/amd64/v3", "linux/amd64"], "linux/amd64"),
            Ok(1)
        );
    }

    #[test]
    fn no_match_lists_what_there_is() {
        assert_eq!(
            pick(
                &["linux/arm64", "windows/amd64", "linux/arm/v7"],
                "linux/amd64"
            ),
            Err(vec![
                "linux/arm64".to_owned(),
                "windows/amd64".to_owned(),
                "linux/arm/v7".to_owned()
            ])
        );
        assert_eq!(
            pick(&["linux/arm/v7"], "linux/arm/v6"),
            Err(vec!["linux/arm/v7".to_owned()])
        );
    }
}
