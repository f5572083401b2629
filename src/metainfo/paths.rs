//! Turns the path components a .torrent names into a relative path that is safe to join
//! onto the download directory: nothing absolute, no `..`, no empty or `.` components, no NUL
//! or separators inside a component, no device names. The error names the refused entry.

use std::path::PathBuf;

/// Why a path from a .torrent was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("refused path {entry:?}: {reason}")]
pub struct PathError {
    pub entry: String,
    pub reason: &'static str,
}

/// Names that open devices instead of files on Windows; refused so a torrent made here never
/// turns into something harmful when its files are moved there.
const DEVICE_NAMES: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Longest component accepted (the Linux NAME_MAX).
const MAX_COMPONENT_BYTES: usize = 255;

/// Checks one path component and returns why it is unsafe, if it is.
fn component_problem(component: &str) -> Option<&'static str> {
    if component.is_empty() {
        return Some("empty path component");
    }
    if component == "." || component == ".." {
        return Some("'.' or '..' component");
    }
    if component.contains('/') || component.contains('\\') {
        return Some("path separator inside a component");
    }
    if component.contains('\0') {
        return Some("NUL byte in a component");
    }
    if component.len() > MAX_COMPONENT_BYTES {
        return Some("component longer than 255 bytes");
    }
    let stem = component.split('.').next().unwrap_or(component);
    if DEVICE_NAMES.iter().any(|d| d.eq_ignore_ascii_case(stem)) {
        return Some("device name");
    }
    None
}

/// Joins checked components into a relative path; `display` names the entry in errors.
pub fn safe_relative_path(components: &[String]) -> Result<PathBuf, PathError> {
    let display = components.join("/");
    if components.is_empty() {
        return Err(PathError {
            entry: display,
            reason: "empty path",
        });
    }
    let mut path = PathBuf::new();
    for component in components {
        if let Some(reason) = component_problem(component) {
            return Err(PathError {
                entry: display,
                reason,
            });
        }
        path.push(component);
    }
    debug_assert!(path.is_relative());
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &[&str]) -> Vec<String> {
        s.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn accepts_ordinary_paths_with_unicode_and_spaces() {
        let p = safe_relative_path(&parts(&["dir one", "fïle ✓.txt"])).unwrap();
        assert_eq!(p, PathBuf::from("dir one/fïle ✓.txt"));
    }

    #[test]
    fn refuses_every_escape() {
        for bad in [
            &["..", "etc"][..],
            &["a", "", "b"],
            &["."],
            &["/etc/passwd"],
            &["a/../../b"],
            &["a\\..\\b"],
            &["nul\0byte"],
            &["CON"],
            &["com1.txt"],
            &[],
        ] {
            assert!(safe_relative_path(&parts(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn error_names_the_entry() {
        let err = safe_relative_path(&parts(&["a", "..", "b"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "refused path \"a/../b\": '.' or '..' component"
        );
    }
}
