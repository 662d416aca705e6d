//! The progress bar of long jobs (train, eval, video), on stderr so it never mixes with results.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `len` items, or a counter when the length is unknown, labelled `prefix`:
/// `prefix [=====>    ] 12/100 <message> ETA 1m`. Callers put their rate and running figures in
/// the message. Hidden when stderr is not a terminal (logs, pipes, tests).
pub fn bar(len: Option<u64>, prefix: impl Into<String>) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let template = match len {
        Some(_) => "{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
        None => "{prefix} {pos} {msg}",
    };
    let style = ProgressStyle::with_template(template)
        .expect("valid template")
        .progress_chars("=> ");
    let bar = ProgressBar::with_draw_target(len, target).with_style(style);
    bar.set_prefix(prefix.into());
    bar
}
