//! Replays the seed corpus and the saved regressions of every target
//! through the same functions the fuzz binaries call, uninstrumented:
//! `cargo test --manifest-path fuzz/Cargo.toml` (or `scripts/fuzz.sh replay`).

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            if f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            let data = std::fs::read(&f).unwrap();
            eprintln!("{target}: {}", f.display());
            run(&data);
            n += 1;
        }
    }
    assert!(n > 0, "no inputs for {target}");
}

#[test]
fn frame() {
    replay("frame", h3node_fuzz::frame);
}

#[test]
fn settings() {
    replay("settings", h3node_fuzz::settings);
}

#[test]
fn capsule() {
    replay("capsule", h3node_fuzz::capsule);
}

#[test]
fn headers() {
    replay("headers", h3node_fuzz::headers);
}

#[test]
fn session() {
    replay("session", h3node_fuzz::session);
}

#[test]
fn section() {
    replay("section", h3node_fuzz::section);
}
