//! The bounded work queue: checkpoints waiting to be processed, ordered by step (lowest first, no step
//! last), each with the earliest time it may be tried (for the quiet period and retries). Keyed by
//! canonical path, so a checkpoint seen by several events, a rescan and a symlink is queued once.
//! When full, new arrivals are refused and `overflowed` is set: the next reconciliation scan picks
//! them up (the store knows what was processed), so memory stays bounded.

use crate::stamp::Stamp;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

/// One checkpoint to process for one run.
#[derive(Clone, Debug)]
pub struct Item {
    pub run: String,
    /// Canonical path of the checkpoint file or HF folder.
    pub path: PathBuf,
    /// The step by name (cheap), used for ordering only.
    pub step: Option<u64>,
    pub not_before: Instant,
    /// Times tried so far (for backoff).
    pub attempts: u32,
    /// When it was first seen incomplete with the current stamp (gives up after a timeout).
    pub incomplete_since: Option<Instant>,
    /// The checkpoint's files when last looked at ([`crate::stamp::stamp`], computed by the watcher;
    /// a later offer of the same checkpoint brings a newer one). The processor compares it with what
    /// was seen, once, and ingest checks the files against it after reading.
    pub stamp: Stamp,
}

type Key = (u64, String, PathBuf);

#[derive(Default)]
struct Inner {
    items: BTreeMap<Key, Item>,
    by_path: HashMap<(String, PathBuf), Key>,
    in_flight: HashSet<(String, PathBuf)>,
    /// Paths touched while in flight, with the newest offer of each: re-queued when done.
    touched: HashMap<(String, PathBuf), Item>,
    overflowed: bool,
}

pub struct WorkQueue {
    inner: Mutex<Inner>,
    capacity: usize,
    pub wake: tokio::sync::Notify,
}

/// What [`WorkQueue::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Added,
    AlreadyQueued,
    /// Being processed now; it will be looked at again when done.
    InFlight,
    Full,
}

impl WorkQueue {
    pub fn new(capacity: usize) -> WorkQueue {
        WorkQueue { inner: Mutex::new(Inner::default()), capacity, wake: tokio::sync::Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, item: Item) -> Pushed {
        let mut q = self.lock();
        let id = (item.run.clone(), item.path.clone());
        if q.in_flight.contains(&id) {
            q.touched.insert(id, item);
            return Pushed::InFlight;
        }
        if let Some(key) = q.by_path.get(&id).cloned() {
            // Keep the earlier time (a retry pushed back in carries its own) and the newer stamp.
            if let Some(existing) = q.items.get_mut(&key) {
                existing.not_before = existing.not_before.min(item.not_before);
                existing.stamp = item.stamp;
            }
            return Pushed::AlreadyQueued;
        }
        if q.items.len() >= self.capacity {
            q.overflowed = true;
            return Pushed::Full;
        }
        let key = (item.step.unwrap_or(u64::MAX), item.run.clone(), item.path.clone());
        q.by_path.insert(id, key.clone());
        q.items.insert(key, item);
        drop(q);
        self.wake.notify_waiters();
        self.wake.notify_one();
        Pushed::Added
    }

    /// Takes the lowest-step item that is due, marking it in flight. Else the earliest due time, if any.
    pub(crate) fn pop_ready(&self, now: Instant) -> Result<Item, Option<Instant>> {
        let mut q = self.lock();
        let mut next: Option<Instant> = None;
        let mut found = None;
        for (k, it) in q.items.iter() {
            if it.not_before <= now {
                found = Some(k.clone());
                break;
            }
            next = Some(next.map_or(it.not_before, |n| n.min(it.not_before)));
        }
        match found {
            Some(k) => {
                let it = q.items.remove(&k).expect("key just found");
                let id = (it.run.clone(), it.path.clone());
                q.by_path.remove(&id);
                q.in_flight.insert(id);
                Ok(it)
            }
            None => Err(next),
        }
    }

    /// Marks an item no longer in flight; true if it was touched meanwhile (the caller re-queues it).
    pub fn done(&self, run: &str, path: &std::path::Path) -> bool {
        self.finish(run, path).is_some()
    }

    /// Marks an item no longer in flight; the newest offer of it made meanwhile, if it was touched
    /// (the caller re-queues it, with that offer's stamp).
    pub fn finish(&self, run: &str, path: &std::path::Path) -> Option<Item> {
        let mut q = self.lock();
        let id = (run.to_string(), path.to_path_buf());
        q.in_flight.remove(&id);
        q.touched.remove(&id)
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    /// True (once) if an item was refused since the last call.
    pub(crate) fn take_overflow(&self) -> bool {
        std::mem::take(&mut self.lock().overflowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(run: &str, path: &str, step: Option<u64>, at: Instant) -> Item {
        Item {
            run: run.into(),
            path: path.into(),
            step,
            not_before: at,
            attempts: 0,
            incomplete_since: None,
            stamp: Vec::new(),
        }
    }

    #[test]
    fn ordered_by_step_and_deduplicated() {
        let q = WorkQueue::new(16);
        let now = Instant::now();
        assert_eq!(q.push(item("r", "/c/30", Some(30), now)), Pushed::Added);
        assert_eq!(q.push(item("r", "/c/last", None, now)), Pushed::Added);
        assert_eq!(q.push(item("r", "/c/10", Some(10), now)), Pushed::Added);
        assert_eq!(q.push(item("r", "/c/10", Some(10), now)), Pushed::AlreadyQueued);
        let order: Vec<_> = std::iter::from_fn(|| q.pop_ready(now).ok()).map(|i| i.path).collect();
        assert_eq!(order, vec![PathBuf::from("/c/10"), "/c/30".into(), "/c/last".into()]);
    }

    #[test]
    fn not_due_items_wait_and_bound_holds() {
        let q = WorkQueue::new(16);
        let now = Instant::now();
        let later = now + std::time::Duration::from_secs(5);
        q.push(item("r", "/c/1", Some(1), later));
        assert_eq!(q.pop_ready(now).unwrap_err(), Some(later));
        assert!(q.pop_ready(later).is_ok());
        for i in 0..16 {
            q.push(item("r", &format!("/d/{i}"), Some(i), now));
        }
        assert_eq!(q.push(item("r", "/d/99", Some(99), now)), Pushed::Full);
        assert!(q.take_overflow());
        assert!(!q.take_overflow());
    }

    #[test]
    fn the_newest_offer_s_stamp_is_carried() {
        use crate::store::checkpoints::FileStamp;
        let q = WorkQueue::new(16);
        let now = Instant::now();
        let offer = |size| Item {
            stamp: vec![FileStamp { path: "/c/1".into(), size, mtime_ns: 7 }],
            ..item("r", "/c/1", Some(1), now)
        };
        assert_eq!(q.push(offer(1)), Pushed::Added);
        assert_eq!(q.push(offer(2)), Pushed::AlreadyQueued);
        let it = q.pop_ready(now).unwrap();
        assert_eq!(it.stamp, offer(2).stamp, "queued once, with the newer stamp");
        assert_eq!(q.push(offer(3)), Pushed::InFlight);
        assert_eq!(q.push(offer(4)), Pushed::InFlight);
        assert_eq!(q.finish(&it.run, &it.path).map(|t| t.stamp), Some(offer(4).stamp));
        assert!(q.finish(&it.run, &it.path).is_none());
    }

    #[test]
    fn touched_while_in_flight_is_reported() {
        let q = WorkQueue::new(16);
        let now = Instant::now();
        q.push(item("r", "/c/1", Some(1), now));
        let it = q.pop_ready(now).unwrap();
        assert_eq!(q.push(item("r", "/c/1", Some(1), now)), Pushed::InFlight);
        assert!(q.done(&it.run, &it.path));
        assert!(!q.done(&it.run, &it.path));
    }
}
