//! Wakes an agent's supervisor when its output file is written (inotify), so a line reaches
//! the event log as soon as it is written instead of at the next poll, and an agent that
//! prints nothing costs no reads. Supervisors still poll, slowly, in case a notification
//! is missed (or inotify is unavailable: then they poll at the fast rate).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use inotify::{Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::Notify;

/// One inotify instance per worker, shared by its supervisors.
pub struct OutputWatch {
    watches: Mutex<Watches>,
    /// Per watched file: who to wake, and how many supervisors watch it.
    wakers: Mutex<HashMap<WatchDescriptor, (Arc<Notify>, usize)>>,
}

impl std::fmt::Debug for OutputWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputWatch")
    }
}

/// A supervisor's watch on its output file; removed when dropped.
pub struct Watched {
    watch: Arc<OutputWatch>,
    wd: WatchDescriptor,
    notify: Arc<Notify>,
}

impl Watched {
    /// Resolves when the file was written since the last call (or since the watch began).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let mut wakers = self.watch.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, count)) = wakers.get_mut(&self.wd) {
            *count -= 1;
            if *count == 0 {
                wakers.remove(&self.wd);
                let mut watches = self.watch.watches.lock().unwrap_or_else(|e| e.into_inner());
                // Gone already if the file was deleted; nothing to undo then.
                let _ = watches.remove(self.wd.clone());
            }
        }
    }
}

impl OutputWatch {
    /// Starts the watcher task; None when inotify cannot be used (supervisors then poll).
    pub fn start() -> Option<Arc<Self>> {
        let started = Inotify::init().and_then(|inotify| inotify.into_event_stream([0u8; 16384]));
        let mut events = match started {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable; agent output is polled");
                return None;
            }
        };
        let watch = Arc::new(Self {
            watches: Mutex::new(events.watches()),
            wakers: Mutex::default(),
        });
        let weak = Arc::downgrade(&watch);
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let Some(watch) = weak.upgrade() else { return };
                let wakers = watch.wakers.lock().unwrap_or_else(|e| e.into_inner());
                match event {
                    Ok(event) if event.mask.contains(inotify::EventMask::Q_OVERFLOW) => {
                        // Events were dropped: wake everyone to read.
                        wakers.values().for_each(|(n, _)| n.notify_one());
                    }
                    Ok(event) => {
                        if let Some((notify, _)) = wakers.get(&event.wd) {
                            notify.notify_one();
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "inotify failed; agent output is polled");
                        wakers.values().for_each(|(n, _)| n.notify_one());
                        return;
                    }
                }
            }
        });
        Some(watch)
    }

    /// Watches `path` for writes; None if it does not exist (yet) or cannot be watched.
    pub fn watch(self: &Arc<Self>, path: &Path) -> Option<Watched> {
        let wd = {
            let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
            watches.add(path, WatchMask::MODIFY).ok()?
        };
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        let entry = wakers
            .entry(wd.clone())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Some(Watched {
            watch: self.clone(),
            wd,
            notify: entry.0.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_write_wakes_the_watcher_and_a_dropped_watch_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let watch = OutputWatch::start().expect("inotify");
        assert!(watch.watch(&path).is_none(), "no file yet");
        let mut file = std::fs::File::create(&path).unwrap();
        let watched = watch.watch(&path).expect("watch");
        let second = watch.watch(&path).expect("a second watch on the same file");
        writeln!(file, "{{\"line\":1}}").unwrap();
        tokio::time::timeout(Duration::from_secs(2), watched.changed())
            .await
            .expect("woken by the write");
        drop(second);
        // Still watched by the first: the shared inotify watch stays.
        writeln!(file, "{{\"line\":2}}").unwrap();
        tokio::time::timeout(Duration::from_secs(2), watched.changed())
            .await
            .expect("woken by the second write");
        drop(watched);
        assert!(watch.wakers.lock().unwrap().is_empty());
    }
}
