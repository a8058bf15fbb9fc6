//! Progress bars and stage timing shared by every pipeline stage.
//!
//! Bars draw on stderr only when it is a terminal (indicatif's default), so
//! logs and tests stay clean; `PRIVDISTILL_QUIET=1` hides them everywhere.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::{Duration, Instant};

/// A bar of `len` steps labelled `stage`, showing position, rate, ETA and a
/// free message (the loss, say).
pub fn bar(len: u64, stage: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if quiet() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{prefix:>14.bold} [{bar:30}] {pos}/{len} {msg} ({per_sec}, ETA {eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(stage.to_string());
    bar
}

/// Whether progress output is switched off (`PRIVDISTILL_QUIET` set to anything but `0`).
pub fn quiet() -> bool {
    std::env::var("PRIVDISTILL_QUIET").map(|v| v != "0" && !v.is_empty()).unwrap_or(false)
}

/// Wall time of one stage, for the summary `run` and `demo` print.
#[derive(Debug)]
pub struct StageTimer {
    name: String,
    start: Instant,
}

impl StageTimer {
    /// Start timing `name`.
    pub fn start(name: impl Into<String>) -> StageTimer {
        StageTimer { name: name.into(), start: Instant::now() }
    }
    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Time since [`StageTimer::start`].
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Format seconds as `1m 23.4s` or `12.3s`.
pub fn format_seconds(secs: f64) -> String {
    if secs >= 60.0 {
        format!("{}m {:.1}s", (secs / 60.0).floor() as u64, secs % 60.0)
    } else {
        format!("{secs:.1}s")
    }
}
