//! The tokio runtime the addon owns: started with the first server or
//! client, shut down when the last one closes, so a process with nothing
//! open has no native thread left.

use std::sync::Mutex;

use tokio::runtime::{Handle, Runtime};

struct Shared {
    rt: Runtime,
    users: usize,
}

static RUNTIME: Mutex<Option<Shared>> = Mutex::new(None);

/// A handle to the runtime; the runtime lives until [`release`] is called as
/// many times as this was. `threads` sizes the runtime when this call
/// starts it.
pub fn acquire(threads: usize) -> std::io::Result<Handle> {
    let mut g = RUNTIME.lock().unwrap();
    if let Some(s) = g.as_mut() {
        s.users += 1;
        return Ok(s.rt.handle().clone());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if threads == 0 {
            default_threads()
        } else {
            threads
        })
        .thread_name("h3node-io")
        // Events wake JS once per turn of a thread, when it runs out of
        // work (crate::bridge::EventSink).
        .on_thread_start(crate::bridge::mark_io_thread)
        .on_thread_park(crate::bridge::wake_deferred)
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    *g = Some(Shared { rt, users: 1 });
    Ok(handle)
}

/// Gives back one [`acquire`]; the last one stops the runtime's threads.
pub fn release() {
    let rt = {
        let mut g = RUNTIME.lock().unwrap();
        match g.as_mut() {
            Some(s) if s.users > 1 => {
                s.users -= 1;
                None
            }
            Some(_) => g.take().map(|s| s.rt),
            None => None,
        }
    };
    if let Some(rt) = rt {
        rt.shutdown_background();
    }
}

/// Whether the runtime is running (for tests of thread cleanup).
pub fn is_running() -> bool {
    RUNTIME.lock().unwrap().is_some()
}

/// The number of threads a runtime should get by default: half the cores,
/// between 1 and 4 (the JS thread needs a core of its own).
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores / 2).clamp(1, 4)
}
