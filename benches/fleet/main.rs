//! The gitfleet bench: converge side by side with Debian's `docker-compose up -d` and
//! the Engine API floor, the health gate, `decide` at scale, the idle agent's footprint,
//! the status branch under 500 writers, and merge-to-canary latency.
//!
//!   cargo bench --bench fleet                 # the full run (N = 1, 5, 20; 7 repetitions)
//!   cargo bench --bench fleet -- --quick      # CI smoke: N = 1, 2 repetitions, fewer agents
//!   cargo bench --bench fleet -- decide gate  # only these groups
//!
//! Needs the test engine and registry: `scripts/testenv up && . /tmp/gitfleet-testenv/env`.
//! Every case prints one `RESULT` line on stdout (progress goes to stderr); BENCHMARKS.md
//! keeps the latest table.

mod converge;
mod decide;
mod footprint;
mod merge;
mod status;
mod support;

use support::{Env, Options};

fn main() {
    // `cargo bench` passes --bench. `cargo test --all-targets` and nextest run bench
    // targets as tests (without it, or with --list): there are none here.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        if !args.iter().any(|a| a == "--list") {
            eprintln!("the fleet bench is no test: run it with `cargo bench --bench fleet`");
        }
        return;
    }
    let options = match Options::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let env = match Env::from_environment() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = std::time::Instant::now();
    progress!(
        "sizes {:?}, {} repetitions{}",
        options.sizes,
        options.reps,
        if options.quick { " (quick)" } else { "" }
    );
    let mut failed = Vec::new();
    let mut run = |group: &str, outcome: &dyn Fn() -> Result<(), String>| {
        if options.runs(group) {
            let t = std::time::Instant::now();
            if let Err(e) = outcome() {
                eprintln!("bench: {group} failed: {e}");
                failed.push(group.to_string());
            }
            progress!("{group}: {:.1}s", t.elapsed().as_secs_f64());
        }
    };
    run("decide", &|| decide::run(options.records, &env));
    run("converge", &|| {
        runtime.block_on(converge::run(&options, &env))
    });
    run("gate", &|| runtime.block_on(converge::gate(&options, &env)));
    run("footprint", &|| footprint::run(&options, &env));
    run("status", &|| status::run(&options));
    run("merge", &|| merge::run(&options, &env));
    progress!("done in {:.1}s", started.elapsed().as_secs_f64());
    if !failed.is_empty() {
        eprintln!("bench: failed: {}", failed.join(", "));
        std::process::exit(1);
    }
}
