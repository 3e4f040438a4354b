//! `gitfleet status --repo URL`: where a release stands across the fleet, read from the
//! release branch and the status branch alone (no node, no server).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;

use chrono::{DateTime, Utc};

use super::exit;
use super::remote::{FleetRelease, ScratchMirror, now, read_records, read_release};
use crate::cli::{StatusArgs, StatusFormat};
use crate::config::duration::{DURATION_HELP, parse_duration};
use crate::config::fleet::{Fleet, NodeId};
use crate::core::batch::Tip;
use crate::core::status::StatusRecord;
use crate::core::summary::{FleetSummary, NodeView, summarize};
use crate::git::Mirror;
use crate::trust::{self, Authenticity};

/// Version of the JSON document; bumped only on an incompatible change (docs/status.md).
const SCHEMA: u32 = 1;

pub fn run(args: &StatusArgs) -> u8 {
    match status(args) {
        Ok(code) | Err(code) => code,
    }
}

fn fail(message: impl std::fmt::Display) -> u8 {
    eprintln!("error: {message}");
    exit::USAGE
}

/// What one look at the two branches shows.
struct Snapshot {
    release: FleetRelease,
    /// `None` when the release is rejected (its diagnostics are in `release.repo`).
    summary: Option<FleetSummary>,
    unreadable: Vec<(String, String)>,
    /// For each node fleet.toml lists a `key` for and that has reported: whether the
    /// commit that last wrote its record is signed by that key.
    authenticity: BTreeMap<NodeId, Authenticity>,
    /// The status branch's tip: with the release commit, what --watch compares.
    status_tip: Option<String>,
}

impl Snapshot {
    fn exit_code(&self) -> u8 {
        match &self.summary {
            None => exit::REJECTED,
            Some(s) if s.failed > 0 || s.halted_in.is_some() => exit::FAILED,
            Some(_) => exit::OK,
        }
    }
}

fn status(args: &StatusArgs) -> Result<u8, u8> {
    let interval = parse_duration(&args.interval)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| fail(format!("--interval `{}`: {DURATION_HELP}", args.interval)))?;
    let scratch = ScratchMirror::open(&args.repo, None).map_err(fail)?;
    let color = args.format == StatusFormat::Table
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut shown: Option<(String, Option<String>)> = None;
    loop {
        match now().and_then(|now| Ok((look(&scratch.mirror, args, now)?, now))) {
            Ok((snapshot, now)) => {
                let key = (snapshot.release.commit.clone(), snapshot.status_tip.clone());
                if shown.as_ref() != Some(&key) {
                    let text = match args.format {
                        StatusFormat::Table => render_table(&snapshot, now, color),
                        StatusFormat::Json => render_json(&snapshot, args.watch),
                    };
                    if args.watch && color {
                        // Clear the terminal and redraw from the top.
                        print!("\x1b[2J\x1b[H");
                    }
                    print!("{text}");
                    shown = Some(key);
                }
                if !args.watch {
                    return Ok(snapshot.exit_code());
                }
            }
            Err(e) if args.watch => eprintln!("warning: {e} (retrying)"),
            Err(e) => return Err(fail(e)),
        }
        std::thread::sleep(interval);
    }
}

fn look(mirror: &Mirror, args: &StatusArgs, now: DateTime<Utc>) -> Result<Snapshot, String> {
    let release = read_release(mirror, &args.repo, args.release.as_deref(), None)?;
    let (summary, unreadable, authenticity, status_tip) = match &release.repo {
        Ok(repo) => {
            let branch = &repo.fleet.status_branch;
            let (records, unreadable) = read_records(mirror, branch)?;
            let tip = Tip {
                commit: &release.commit,
                committed: release.committed,
            };
            let summary = summarize(&repo.fleet, &records, &tip, &repo.images.id(), now);
            let authenticity = authenticity(mirror, branch, &repo.fleet)?;
            let status_tip = mirror.tip(branch).map_err(|e| e.to_string())?;
            (Some(summary), unreadable, authenticity, status_tip)
        }
        Err(_) => (None, Vec::new(), BTreeMap::new(), None),
    };
    Ok(Snapshot {
        release,
        summary,
        unreadable,
        authenticity,
        status_tip,
    })
}

/// Commits walked back from the status tip to find who last wrote each record.
const AUTHENTICITY_DEPTH: usize = 10_000;

/// Whether each keyed node's record was last written by a commit its key signed.
fn authenticity(
    mirror: &Mirror,
    branch: &str,
    fleet: &Fleet,
) -> Result<BTreeMap<NodeId, Authenticity>, String> {
    let keyed: Vec<(&NodeId, &str)> = fleet
        .nodes
        .iter()
        .filter_map(|(id, facts)| facts.key.as_deref().map(|key| (id, key)))
        .collect();
    if keyed.is_empty() {
        return Ok(BTreeMap::new());
    }
    let writers = mirror
        .record_writers(branch, AUTHENTICITY_DEPTH)
        .map_err(|e| e.to_string())?;
    Ok(keyed
        .into_iter()
        .filter_map(|(id, key)| {
            let (signature, signed) = writers.get(&StatusRecord::path(id))?;
            Some((
                id.clone(),
                trust::node_signed(key, signature.as_deref(), signed),
            ))
        })
        .collect())
}

/// "3m ago", "2h ago", "5d ago".
fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..172_800 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

fn paint(text: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn render_table(snapshot: &Snapshot, now: DateTime<Utc>, color: bool) -> String {
    let release = &snapshot.release;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "release {} (committed {}, {})",
        release.short(),
        release.committed.format("%Y-%m-%d %H:%M UTC"),
        ago(release.committed, now)
    );
    let summary = match (&snapshot.summary, &release.repo) {
        (Some(s), _) => s,
        (None, Err(diags)) => {
            let _ = writeln!(
                out,
                "{}: every node keeps running what it ran\n{diags}",
                paint("rejected", "31;1", color)
            );
            return out;
        }
        (None, Ok(_)) => return out,
    };
    let state = match (&summary.halted_in, &summary.current_batch) {
        (Some(batch), _) => paint(&format!("HALTED in batch {batch}"), "31;1", color),
        (None, Some(batch)) => format!("in progress: batch {batch}"),
        (None, None) => paint("complete", "32", color),
    };
    let _ = writeln!(
        out,
        "fleet   {}/{} healthy, {} failed; {state}\n",
        summary.healthy, summary.total, summary.failed
    );
    let rows: Vec<[String; 6]> = summary
        .batches
        .iter()
        .flat_map(|b| {
            let mark = if b.finished { "" } else { " *" };
            let batch = format!("{}{mark}", b.name);
            b.nodes.iter().enumerate().map(move |(i, n)| {
                let state = match n.view {
                    NodeView::Working(s) => s.to_string(),
                    v => v.as_str().to_string(),
                };
                let state = match snapshot.authenticity.get(&n.node) {
                    Some(Authenticity::Unsigned) => format!("{state} (unsigned)"),
                    Some(Authenticity::Invalid) => format!("{state} (not signed by its key)"),
                    _ => state,
                };
                [
                    if i == 0 { batch.clone() } else { String::new() },
                    n.node.as_str().to_string(),
                    state,
                    n.release.as_deref().map_or("-", short).to_string(),
                    n.since.map_or("-".to_string(), |t| {
                        format!("{} ({})", ago(t, now), t.format("%m-%d %H:%M UTC"))
                    }),
                    n.message.clone().unwrap_or_else(|| match n.view {
                        NodeView::Pending => "listed, never reported".to_string(),
                        _ => String::new(),
                    }),
                ]
            })
        })
        .collect();
    let header = ["BATCH", "NODE", "STATE", "RELEASE", "SINCE", "MESSAGE"];
    let widths: Vec<usize> = (0..5)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: [&str; 6], state_color: Option<&str>| {
        let mut l = String::new();
        for (c, cell) in cells.iter().enumerate().take(5) {
            let padded = format!("{cell:<w$}  ", w = widths[c]);
            match (c, state_color) {
                (2, Some(code)) => l.push_str(&paint(&padded, code, color)),
                _ => l.push_str(&padded),
            }
        }
        l.push_str(cells[5]);
        l.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(header, None));
    for r in &rows {
        let code = match r[2].as_str() {
            s if s.ends_with("signed)") || s.ends_with("its key)") => "31;1",
            "healthy" => "32",
            "failed" | "rolled-back" | "rejected" => "31",
            "pending" | "stale" => "33",
            _ => "36",
        };
        let _ = writeln!(
            out,
            "{}",
            line(
                [&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]].map(String::as_str),
                Some(code)
            )
        );
    }
    if summary.batches.iter().any(|b| !b.finished) {
        let _ = writeln!(out, "\n* not finished with this release");
    }
    for (path, why) in &snapshot.unreadable {
        let _ = writeln!(out, "warning: status record {path} is unreadable: {why}");
    }
    for (node, verdict) in &snapshot.authenticity {
        if matches!(verdict, Authenticity::Unsigned | Authenticity::Invalid) {
            let _ = writeln!(
                out,
                "warning: the record of {node} was not written by {node}: its commit is not signed by the key fleet.toml lists for it"
            );
        }
    }
    out
}

fn render_json(snapshot: &Snapshot, one_line: bool) -> String {
    let release = &snapshot.release;
    let mut doc = serde_json::json!({
        "schema": SCHEMA,
        "release": release.commit,
        "committed": release.committed,
    });
    match (&snapshot.summary, &release.repo) {
        (Some(summary), _) => {
            if let (Some(doc), Ok(serde_json::Value::Object(fields))) =
                (doc.as_object_mut(), serde_json::to_value(summary))
            {
                doc.extend(fields);
                doc.insert("rejected".into(), false.into());
                doc.insert(
                    "authenticity".into(),
                    serde_json::to_value(&snapshot.authenticity).unwrap_or_default(),
                );
                doc.insert(
                    "unreadable_records".into(),
                    snapshot
                        .unreadable
                        .iter()
                        .map(|(path, error)| serde_json::json!({"path": path, "error": error}))
                        .collect(),
                );
            }
        }
        (None, Err(diags)) => {
            doc["rejected"] = true.into();
            doc["reason"] = diags.to_string().into();
        }
        (None, Ok(_)) => {}
    }
    let text = if one_line {
        serde_json::to_string(&doc)
    } else {
        serde_json::to_string_pretty(&doc)
    };
    text.unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let at = |s: i64| DateTime::from_timestamp(1_000_000 - s, 0).unwrap();
        assert_eq!(ago(at(5), now), "5s ago");
        assert_eq!(ago(at(300), now), "5m ago");
        assert_eq!(ago(at(7200), now), "2h ago");
        assert_eq!(ago(at(3 * 86_400), now), "3d ago");
        assert_eq!(ago(at(-10), now), "0s ago");
    }
}
