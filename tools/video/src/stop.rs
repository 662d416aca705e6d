//! Ctrl-C: the first one asks the pipeline to stop after the frames in hand (the video is closed
//! properly and progress is kept for a resume); a second one quits at once.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C / SIGTERM handler.
pub fn install() {
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

/// Asks every stage to stop, as Ctrl-C does.
pub fn request() {
    STOP.store(true, Ordering::SeqCst);
}

pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Simulated interruptions for the integration tests. `SEGNET_VIDEO_TEST_STOP=N` acts like
/// Ctrl-C once the network has computed N frames.
pub fn test_stop(computed: usize) {
    if reached("SEGNET_VIDEO_TEST_STOP", computed) {
        request();
    }
}

/// `SEGNET_VIDEO_TEST_KILL=N` acts like SIGKILL (abort: no clean-up at all) once the rows of N
/// computed frames are on disk.
pub fn test_kill(written: usize) {
    if reached("SEGNET_VIDEO_TEST_KILL", written) {
        std::process::abort();
    }
}

fn reached(var: &str, count: usize) -> bool {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| count >= n)
}
