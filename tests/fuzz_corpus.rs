//! The fuzz targets' entry points (fuzz/entry.rs) on stable, in CI: every seed and every
//! past finding in `fuzz/corpus/<target>/`, then the hostile inputs every parser must
//! refuse without a panic or a stack overflow (alias bombs, deep nesting, huge files,
//! invalid UTF-8). Longer fuzzing runs on demand: `scripts/fuzz TARGET [SECONDS]`.

#[path = "../fuzz/entry.rs"]
mod entry;

use std::path::Path;

use entry::TARGETS;

#[test]
fn every_seed_and_finding_in_the_corpus_returns() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, run) in TARGETS {
        let dir = corpus.join(name);
        let mut inputs = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            run(&std::fs::read(&path).unwrap());
            inputs += 1;
        }
        assert!(inputs > 0, "no seed for {name} in {}", dir.display());
    }
}

/// Inputs built to hurt a parser: each is fed to every target.
fn hostile_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..10 {
        let refs = vec![format!("*{}", level_name(level - 1)); 10].join(", ");
        bomb.push_str(&format!(
            "{}: &{} [{refs}]\n",
            level_name(level),
            level_name(level)
        ));
    }
    bomb.push_str("services:\n  web:\n    image: x\n    command: *l9\n");
    vec![
        ("a YAML alias bomb", bomb.into_bytes()),
        (
            "YAML nested 100 000 deep",
            format!("services: {}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        ),
        (
            "YAML mappings nested 20 000 deep",
            format!("a: {}", "{b: ".repeat(20_000)).into_bytes(),
        ),
        (
            "TOML arrays nested 100 000 deep",
            format!(
                "version = 1\nx = {}{}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            )
            .into_bytes(),
        ),
        (
            "TOML inline tables nested 20 000 deep",
            format!("x = {}1{}", "{a=".repeat(20_000), "}".repeat(20_000)).into_bytes(),
        ),
        ("a 3 MiB file of one line", vec![b'a'; 3 * 1024 * 1024]),
        (
            "10 000 tables",
            (0..10_000)
                .flat_map(|i| format!("[t{i}]\nk = {i}\n").into_bytes())
                .collect(),
        ),
        (
            "invalid UTF-8 and NULs",
            vec![0xff, 0xfe, 0, 0, b'[', 0xc3, 0x28, b'\n', 0],
        ),
        ("an empty input", Vec::new()),
    ]
}

fn level_name(level: usize) -> String {
    if level == 0 {
        "a".to_string()
    } else {
        format!("l{level}")
    }
}

#[test]
fn hostile_inputs_are_refused_without_a_panic() {
    // A stack overflow would abort the whole test binary, so run on a thread with the
    // stack an agent's runtime threads get (2 MiB, Rust's default).
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| {
            for (what, input) in hostile_inputs() {
                for (name, run) in TARGETS {
                    let started = std::time::Instant::now();
                    run(&input);
                    assert!(
                        started.elapsed() < std::time::Duration::from_secs(10),
                        "{name} took {:?} on {what}",
                        started.elapsed()
                    );
                }
            }
        })
        .unwrap()
        .join()
        .expect("every parser returned on every hostile input");
}
