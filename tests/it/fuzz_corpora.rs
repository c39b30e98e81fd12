//! Replays every saved fuzz input (fuzz/corpus, and fuzz/regressions where crashes found
//! by `fuzz/run.sh` are kept) through the same checks the fuzzers run, on stable Rust.

use std::path::Path;

#[test]
fn every_saved_fuzz_input_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for (name, target) in regate::fuzzing::TARGETS {
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{} fails {name}", path.display());
                replayed += 1;
            }
        }
    }
    assert!(
        replayed >= 15,
        "only {replayed} inputs found under {}",
        root.display()
    );
}
