//! Live progress of a run: bars on a terminal, a line every few seconds otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Live output: bars on a terminal, a line every few seconds otherwise.
pub(crate) struct Display {
    pub(crate) bar: Option<ProgressBar>,
    enabled: bool,
    lines: bool,
    last_line: Instant,
}

impl Display {
    pub(crate) fn new(enabled: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        Self { bar: None, enabled, lines: enabled && !tty, last_line: Instant::now() }
    }

    pub(crate) fn start(&mut self, len: u64, template: &str) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if !self.enabled || !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(4));
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        self.bar = Some(bar);
    }

    pub(crate) fn update(&mut self, pos: u64, msg: String) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
            b.set_message(msg);
        } else if self.lines && self.last_line.elapsed() >= Duration::from_secs(5) {
            self.last_line = Instant::now();
            eprintln!("{msg}");
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
