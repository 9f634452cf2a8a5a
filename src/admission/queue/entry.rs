//! What the queue holds and hands back: priorities, entries, and the
//! reasons an entry is refused or dropped.

use tokio::time::Instant;

// === Entries ===

/// Request priority; higher is served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Shed first.
    Sheddable = 0,
    /// The default.
    Normal = 1,
    /// Never displaced by lower classes.
    Critical = 2,
}

impl Priority {
    pub(super) const ALL_HIGH_FIRST: [Priority; 3] =
        [Priority::Critical, Priority::Normal, Priority::Sheddable];

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Identifies an entry for [`AdmissionQueue::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(pub u64);

/// What the caller wants queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry<T> {
    /// The caller's payload (e.g. a oneshot sender).
    pub payload: T,
    /// Latest time the request may be sent to a backend.
    pub deadline: Instant,
    /// Service class.
    pub priority: Priority,
    /// Tenant for fairness, e.g. a hash of the API key or client address.
    pub tenant: u64,
    /// A retry that came back when it was told (it claimed a promise, see
    /// `returns`): served ahead of first attempts of its class.
    pub returning: bool,
    /// Its deadline is the gateway's automatic wait budget, not one its
    /// client named: [`super::AdmissionQueue::raise_auto`] may move it later
    /// as the gateway learns how long requests take.
    pub auto: bool,
}

/// An entry in (or out of) the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<T> {
    /// Its id.
    pub id: EntryId,
    /// When it was queued.
    pub enqueued_at: Instant,
    /// Latest time it may be sent to a backend.
    pub deadline: Instant,
    /// Service class.
    pub priority: Priority,
    /// Tenant key.
    pub tenant: u64,
    /// A retry that came back when told: ahead of first attempts.
    pub returning: bool,
    /// Its deadline is the automatic wait budget (see [`NewEntry::auto`]).
    pub auto: bool,
    /// The caller's payload.
    pub payload: T,
}

/// Why an admitted entry left the queue without being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Its deadline passed.
    Expired,
    /// Its deadline can no longer be met: refused at once rather than at
    /// its deadline (see `standing.rs`).
    Unmeetable,
    /// Waited past `overload_max_wait` during overload.
    Stale,
    /// Pushed out by a higher-priority or fairer arrival.
    Displaced,
    /// The client went away ([`AdmissionQueue::remove`]).
    Cancelled,
}

impl DropReason {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Expired => "expired",
            DropReason::Unmeetable => "unmeetable",
            DropReason::Stale => "stale",
            DropReason::Displaced => "displaced",
            DropReason::Cancelled => "cancelled",
        }
    }
}

/// An entry that left without service, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped<T> {
    /// The entry.
    pub entry: Entry<T>,
    /// Why.
    pub reason: DropReason,
}

/// Why an arrival was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueReject {
    /// The queue is full and nothing could be displaced.
    QueueFull,
    /// The predicted wait passes the deadline (or it has passed already).
    DeadlineUnmeetable,
    /// The tenant holds its share while others wait.
    TenantShare,
}

impl QueueReject {
    /// Metric / reason-header value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueReject::QueueFull => "queue_full",
            QueueReject::DeadlineUnmeetable => "deadline",
            QueueReject::TenantShare => "tenant_share",
        }
    }
}

/// A refused arrival: the reason, and the payload back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected<T> {
    /// Why.
    pub reason: QueueReject,
    /// The payload, so the caller can answer it.
    pub payload: T,
}

/// An accepted arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted<T> {
    /// Id of the new entry.
    pub id: EntryId,
    /// An entry pushed out to make room; answer it with a 503.
    pub displaced: Option<Entry<T>>,
}

/// Result of [`AdmissionQueue::pop`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Popped<T> {
    /// The entry to serve now, if any; its deadline has not passed.
    pub next: Option<Entry<T>>,
    /// Entries dropped on the way (expired, stale).
    pub dropped: Vec<Dropped<T>>,
}

/// Drops by reason since creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DropCounts {
    /// Deadline passed while queued.
    pub expired: u64,
    /// Refused early: the deadline could no longer be met.
    pub unmeetable: u64,
    /// Too old during overload.
    pub stale: u64,
    /// Displaced by a later arrival.
    pub displaced: u64,
    /// Client went away.
    pub cancelled: u64,
}

impl DropCounts {
    pub(super) fn add(&mut self, reason: DropReason) {
        let c = match reason {
            DropReason::Expired => &mut self.expired,
            DropReason::Unmeetable => &mut self.unmeetable,
            DropReason::Stale => &mut self.stale,
            DropReason::Displaced => &mut self.displaced,
            DropReason::Cancelled => &mut self.cancelled,
        };
        *c = c.saturating_add(1);
    }
}
