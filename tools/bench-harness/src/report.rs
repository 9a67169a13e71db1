//! The result of one harness run, and its three outputs: `benchmarks.json` (everything, raw runs
//! included), `benchmarks.md` and `benchmarks.svg`.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::chart;
use crate::machine::Machine;
use crate::markdown;
use crate::reconfig::Reconfig;
use crate::rounds::{Plan, Record};
use crate::scale::Scale;
use crate::summary::{Discards, MetricSummary};
use crate::targets::HEADLINE;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated_by: &'static str,
    /// "full" or "quick".
    pub mode: &'static str,
    pub started: String,
    pub duration_s: f64,
    /// The time limit stopped the rounds before all were run.
    pub cut_short: bool,
    pub plan: Plan,
    pub machine: Machine,
    pub layout: &'static str,
    /// Target names in round order.
    pub targets: Vec<String>,
    pub metrics: Vec<MetricSummary>,
    /// Every configuration file the run used (peers, backends, Ringway services), name → text.
    pub configs: Vec<(String, String)>,
    pub reconfig: Vec<Reconfig>,
    pub scale: Option<Scale>,
    pub discards: Discards,
    pub records: Vec<Record>,
}

/// How the processes were placed, as recorded with the results.
pub const LAYOUT: &str = "free: client, backends and peers unpinned (all on cores 0-1, scheduled by the kernel); \
Ringway's workers pinned one per core, as it deploys by default; every proxy with 2 workers \
(Ringway --workers 2, HAProxy nbthread 2, nginx worker_processes 2), pen single-process by design";

impl Report {
    /// Writes `benchmarks.json`, `benchmarks.svg` and `benchmarks.md` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(dir.join("benchmarks.json"), json + "\n")?;
        chart::draw(
            &self.metrics,
            &format!(
                "Ringway ({HEADLINE}) ÷ peer, median of per-round ratios — {}",
                self.started
            ),
            &dir.join("benchmarks.svg"),
        )?;
        let md_path = dir.join("benchmarks.md");
        let previous = std::fs::read_to_string(&md_path).unwrap_or_default();
        let notes = markdown::carried_notes(&previous);
        std::fs::write(&md_path, markdown::render(self, &notes))
            .with_context(|| format!("writing {}", md_path.display()))?;
        Ok(())
    }
}

/// The configuration files in `dir`, sorted by name, with the run directory `run` written as `RUN`.
pub fn configs(dir: &Path, run: &Path) -> Vec<(String, String)> {
    let run = run.display().to_string();
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((name, text.replace(&run, "RUN")))
        })
        .collect();
    out.sort();
    out
}

/// The current time in UTC, `YYYY-MM-DD HH:MM UTC`, without a date crate.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_000), (2024, 10, 4));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
