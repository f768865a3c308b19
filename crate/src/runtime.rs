//! The tokio runtime the addon owns: started with the first server or
//! client, shut down when the last one closes, so a process with nothing
//! open has no native thread left.

use std::sync::Mutex;

use tokio::runtime::{Handle, Runtime};

use crate::bridge::DeferLimits;

/// What the process-wide options ask of the runtime (`threads`,
/// `eventBatchDelayUs`, `eventBatchSize`); `None` takes the default for the
/// cores this process may use.
#[derive(Clone, Copy, Debug, Default)]
pub struct Wanted {
    pub threads: Option<usize>,
    pub batch_delay_us: Option<u64>,
    pub batch_size: Option<usize>,
}

/// What the running runtime was started with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub threads: usize,
    pub limits: DeferLimits,
}

impl Wanted {
    /// The settings these options give in a process that may use `cores` cores.
    pub fn resolve(&self, cores: usize) -> Settings {
        Settings {
            threads: self.threads.unwrap_or_else(|| threads_for(cores)),
            limits: DeferLimits::for_cores(cores).with(self.batch_delay_us, self.batch_size),
        }
    }
}

struct Shared {
    rt: Runtime,
    users: usize,
    settings: Settings,
}

static RUNTIME: Mutex<Option<Shared>> = Mutex::new(None);

/// A handle to the runtime; the runtime lives until [`release`] is called as
/// many times as this was. `wanted` sets the runtime up when this call
/// starts it, and is ignored when it runs already (the first server or
/// client of the process decides; [`settings`] tells what it decided).
pub fn acquire(wanted: Wanted) -> std::io::Result<Handle> {
    let mut g = RUNTIME.lock().unwrap();
    if let Some(s) = g.as_mut() {
        s.users += 1;
        return Ok(s.rt.handle().clone());
    }
    let settings = wanted.resolve(cores());
    let limits = settings.limits;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.threads)
        .thread_name("h3node-io")
        // Events wake JS once per turn of a thread, when it runs out of
        // work, or once past the limits (crate::bridge::EventSink).
        .on_thread_start(move || crate::bridge::mark_io_thread_with(limits))
        .on_thread_park(crate::bridge::wake_deferred)
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    *g = Some(Shared {
        rt,
        users: 1,
        settings,
    });
    Ok(handle)
}

/// The settings of the running runtime, if it runs.
pub fn settings() -> Option<Settings> {
    RUNTIME.lock().unwrap().as_ref().map(|s| s.settings)
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

/// The cores this process may use (its affinity and cgroup quota).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The number of threads a runtime gets by default: half the cores,
/// between 1 and 4 (the JS thread needs a core of its own).
fn threads_for(cores: usize) -> usize {
    (cores / 2).clamp(1, 4)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn defaults_follow_the_cores_and_options_replace_them_one_by_one() {
        let none = Wanted::default();
        assert_eq!(none.resolve(1).threads, 1);
        assert_eq!(none.resolve(1).limits, DeferLimits::SHARED_CORE);
        assert_eq!(none.resolve(2).threads, 1);
        assert_eq!(none.resolve(2).limits, DeferLimits::SEPARATE_CORES);
        assert_eq!(none.resolve(16).threads, 4);
        let delay_only = Wanted {
            batch_delay_us: Some(750),
            ..Wanted::default()
        };
        let s = delay_only.resolve(1);
        assert_eq!(s.limits.max_delay, Duration::from_micros(750));
        assert_eq!(s.limits.max_events, DeferLimits::SHARED_CORE.max_events);
        let all = Wanted {
            threads: Some(3),
            batch_delay_us: Some(0),
            batch_size: Some(0),
        };
        let s = all.resolve(1);
        assert_eq!(s.threads, 3);
        assert_eq!(s.limits.max_delay, Duration::ZERO);
        assert_eq!(s.limits.max_events, usize::MAX, "0 means no count limit");
    }

    #[test]
    fn the_first_acquire_decides_what_every_runtime_thread_runs_with() {
        let wanted = Wanted {
            threads: Some(2),
            batch_delay_us: Some(1234),
            batch_size: Some(7),
        };
        let h = acquire(wanted).unwrap();
        let other = acquire(Wanted::default()).unwrap();
        let s = settings().unwrap();
        assert_eq!(s, wanted.resolve(cores()));
        let seen = h.block_on(async {
            let mut seen = Vec::new();
            for _ in 0..8 {
                seen.push(
                    tokio::spawn(async { crate::bridge::io_thread_limits() })
                        .await
                        .unwrap(),
                );
            }
            seen
        });
        for l in seen {
            assert_eq!(l, Some(s.limits));
        }
        drop(other);
        release();
        assert!(is_running());
        release();
        assert!(!is_running());
    }
}
