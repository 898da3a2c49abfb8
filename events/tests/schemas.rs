//! `schemas/` is the published contract: it must match the code, and no change may break a
//! reader of events already written (checked against the files on disk and every version of them
//! in git history).

use std::path::PathBuf;
use std::process::Command;

use aurora_events::schema::{backward_incompatibilities, generated_files};

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

/// Every committed version of `schemas/<file>`, newest first; empty when git is not available.
fn committed_versions(file: &str) -> Vec<String> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = format!("schemas/{file}");
    let Ok(log) = Command::new("git").current_dir(&repo).args(["log", "--format=%H", "--", &path]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&log.stdout)
        .lines()
        .filter_map(|commit| {
            let shown = Command::new("git").current_dir(&repo).args(["show", &format!("{commit}:{path}")]).output().ok()?;
            shown.status.success().then(|| String::from_utf8_lossy(&shown.stdout).into_owned())
        })
        .collect()
}

#[test]
fn schemas_are_backward_compatible_with_every_committed_version() {
    let mut problems = Vec::new();
    for (file, generated) in generated_files() {
        if !file.ends_with(".json") || file == "asyncapi.json" {
            continue;
        }
        let new: serde_json::Value = serde_json::from_str(&generated).unwrap();
        let mut earlier = committed_versions(&file);
        if let Ok(on_disk) = std::fs::read_to_string(schemas_dir().join(&file)) {
            earlier.push(on_disk);
        }
        for old_text in earlier {
            let old: serde_json::Value = serde_json::from_str(&old_text).unwrap();
            for problem in backward_incompatibilities(&old, &new) {
                problems.push(format!("{file}: {problem}"));
            }
        }
    }
    problems.dedup();
    assert!(
        problems.is_empty(),
        "event schemas changed in a way old events cannot be read with; add a new schema version with an upcaster instead:\n{}",
        problems.join("\n")
    );
}

#[test]
fn schemas_directory_is_up_to_date() {
    let mut stale = Vec::new();
    let generated = generated_files();
    for (file, content) in &generated {
        match std::fs::read_to_string(schemas_dir().join(file)) {
            Ok(on_disk) if &on_disk == content => {}
            Ok(_) => stale.push(format!("{file} differs from the code")),
            Err(_) => stale.push(format!("{file} is missing")),
        }
    }
    for entry in std::fs::read_dir(schemas_dir()).expect("schemas/ exists") {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !generated.contains_key(&name) {
            stale.push(format!("{name} has no event type in the code"));
        }
    }
    assert!(stale.is_empty(), "schemas/ is stale; regenerate it with `cargo run -p aurora -- schemas write`:\n{}", stale.join("\n"));
}
