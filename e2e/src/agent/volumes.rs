//! A pod's volumes as folders on the host, as a kubelet makes them:
//! ConfigMaps and Secrets written key by key (and kept up to date while the
//! pod runs), emptyDirs that live as long as the pod, and claims that live
//! as long as the claim, the way a PersistentVolume outlives its pods.

use std::collections::BTreeMap;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Pod, Secret, Volume};
use kube::runtime::reflector::{ObjectRef, Store};

/// Why a pod's volumes cannot be made yet (kubelet's `FailedMount`).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A referenced ConfigMap or Secret does not exist and is not optional.
    #[error("{kind} \"{name}\" not found")]
    NotFound {
        /// `configmap` or `secret`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A volume of a kind this node agent does not provide.
    #[error("volume \"{0}\": only configMap, secret, emptyDir and persistentVolumeClaim volumes are supported")]
    Unsupported(String),
    /// Writing the files failed.
    #[error("writing volume files: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the volumes of pods and of claims live on the host.
#[derive(Debug, Clone)]
pub struct VolumeDirs {
    /// This pod's folder (its emptyDirs and projected files).
    pub pod: PathBuf,
    /// Folder of every claim's data, by namespace and claim name.
    pub claims: PathBuf,
}

/// The objects volumes are made from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Every Secret.
    pub secrets: Store<Secret>,
    /// Every ConfigMap.
    pub config_maps: Store<ConfigMap>,
}

/// Makes (or brings up to date) every volume of `pod`, returning each
/// volume's folder by volume name. Files are only rewritten when their
/// content changed, each by a rename, so a reader never sees half a file.
pub fn sync(
    pod: &Pod,
    dirs: &VolumeDirs,
    sources: &Sources,
    fs_group: Option<u32>,
) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    let mut folders = BTreeMap::new();
    for volume in volumes {
        let folder = make(volume, namespace, dirs, sources, fs_group)?;
        folders.insert(volume.name.clone(), folder);
    }
    Ok(folders)
}

fn make(
    volume: &Volume,
    namespace: &str,
    dirs: &VolumeDirs,
    sources: &Sources,
    fs_group: Option<u32>,
) -> Result<PathBuf, VolumeError> {
    let folder = dirs.pod.join("volumes").join(&volume.name);
    if let Some(source) = &volume.config_map {
        let found = sources
            .config_maps
            .get(&ObjectRef::new(&source.name).within(namespace));
        let files = match found {
            Some(map) => {
                let mut files: BTreeMap<String, Vec<u8>> = map
                    .data
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                for (k, v) in map.binary_data.clone().unwrap_or_default() {
                    files.insert(k, v.0);
                }
                Some(files)
            }
            None if source.optional == Some(true) => None,
            None => {
                return Err(VolumeError::NotFound {
                    kind: "configmap",
                    name: source.name.clone(),
                })
            }
        };
        let files = select(files.unwrap_or_default(), source.items.as_deref());
        write_files(&folder, &files, source.default_mode, fs_group)?;
    } else if let Some(source) = &volume.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        let found = sources
            .secrets
            .get(&ObjectRef::new(&name).within(namespace));
        let files = match found {
            Some(secret) => secret
                .data
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
            None if source.optional == Some(true) => BTreeMap::new(),
            None => {
                return Err(VolumeError::NotFound {
                    kind: "secret",
                    name,
                })
            }
        };
        let files = select(files, source.items.as_deref());
        write_files(&folder, &files, source.default_mode, fs_group)?;
    } else if volume.empty_dir.is_some() {
        writable_dir(&folder, fs_group)?;
    } else if let Some(claim) = &volume.persistent_volume_claim {
        let folder = claim_folder(&dirs.claims, namespace, &claim.claim_name);
        writable_dir(&folder, fs_group)?;
        return Ok(folder);
    } else {
        return Err(VolumeError::Unsupported(volume.name.clone()));
    }
    Ok(folder)
}

/// The folder of a claim's data under `claims`: the path of the
/// PersistentVolume the agent provisions for it, and what a pod using the
/// claim mounts.
pub fn claim_folder(claims: &Path, namespace: &str, claim: &str) -> PathBuf {
    claims.join(namespace).join(claim)
}

/// The files a volume shows: every key, or only `items` at their paths.
fn select(
    files: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
) -> BTreeMap<String, Vec<u8>> {
    match items {
        None => files,
        Some(items) => items
            .iter()
            .filter_map(|item| Some((item.path.clone(), files.get(&item.key)?.clone())))
            .collect(),
    }
}

fn writable_dir(folder: &Path, fs_group: Option<u32>) -> std::io::Result<()> {
    std::fs::create_dir_all(folder)?;
    std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o777))?;
    if let Some(gid) = fs_group {
        chown(folder, None, Some(gid))?;
    }
    Ok(())
}

fn write_files(
    folder: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    mode: Option<i32>,
    fs_group: Option<u32>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(folder)?;
    let mode = mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(0o644);
    for (name, content) in files {
        // Keys are validated by the API server; a nested path (items) gets its folders.
        let path = folder.join(name);
        if std::fs::read(&path).is_ok_and(|old| &old == content) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let temp = folder.join(format!(".{}.tmp", name.replace('/', "_")));
        std::fs::write(&temp, content)?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))?;
        if let Some(gid) = fs_group {
            chown(&temp, None, Some(gid))?;
        }
        std::fs::rename(&temp, &path)?;
    }
    // Keys that went away.
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && !files.contains_key(&name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_follow_their_source_and_keys_that_went_away_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("v");
        let mut files = BTreeMap::from([
            ("a".to_owned(), b"1".to_vec()),
            ("b".to_owned(), b"2".to_vec()),
        ]);
        write_files(&folder, &files, None, None).expect("write");
        assert_eq!(std::fs::read(folder.join("a")).expect("a"), b"1");
        files.remove("a");
        files.insert("b".to_owned(), b"3".to_vec());
        write_files(&folder, &files, Some(0o600), None).expect("rewrite");
        assert!(!folder.join("a").exists());
        assert_eq!(std::fs::read(folder.join("b")).expect("b"), b"3");
        let mode = std::fs::metadata(folder.join("b"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn items_pick_keys_and_name_their_paths() {
        let files = BTreeMap::from([
            ("a".to_owned(), b"1".to_vec()),
            ("b".to_owned(), b"2".to_vec()),
        ]);
        let items = [KeyToPath {
            key: "b".to_owned(),
            path: "renamed".to_owned(),
            mode: None,
        }];
        let picked = select(files, Some(&items));
        assert_eq!(
            picked,
            BTreeMap::from([("renamed".to_owned(), b"2".to_vec())])
        );
    }
}
