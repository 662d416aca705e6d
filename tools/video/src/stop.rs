//! Ctrl-C: the first one asks the pipeline to stop after the frames in hand (the video is closed
//! properly and progress is kept for a resume); a second one quits at once.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C / SIGTERM handler.
pub(crate) fn install() {
    let result = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\nsegnet-video: interrupted again, quitting now");
            std::process::exit(130);
        }
        eprintln!(
            "\nsegnet-video: stopping after the current batch (Ctrl-C again to quit at once)"
        );
    });
    if let Err(e) = result {
        eprintln!("warning: cannot catch Ctrl-C ({e}); an interrupted run still resumes");
    }
}

pub(crate) fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
