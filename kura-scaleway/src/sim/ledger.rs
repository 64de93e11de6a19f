//! The billing ledger.

use std::time::Duration;

/// Kinds of billable resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum BillableKind {
    /// Instance server (from create to delete/terminate).
    InstanceServer,
    /// Elastic Metal server (from order to delete).
    ElasticMetalServer,
    /// Public IP (the dynamic IP of a running Instance server).
    PublicIp,
    /// Volume (SBS or local).
    Volume,
    /// Private network.
    PrivateNetwork,
}

/// One billable resource.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerEntry {
    /// Kind.
    pub kind: BillableKind,
    /// Id.
    pub id: String,
    /// Name (the server name for IPs and volumes).
    pub name: String,
    /// Zone or region.
    pub location: String,
    /// Creation time (simulator clock).
    pub created_at: Duration,
    /// Deletion time, `None` while it exists.
    pub deleted_at: Option<Duration>,
}

/// Every billable resource ever created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    entries: Vec<LedgerEntry>,
}

impl Ledger {
    pub(super) fn open(
        &mut self,
        kind: BillableKind,
        id: &str,
        name: &str,
        location: &str,
        at: Duration,
    ) {
        self.entries.push(LedgerEntry {
            kind,
            id: id.to_owned(),
            name: name.to_owned(),
            location: location.to_owned(),
            created_at: at,
            deleted_at: None,
        });
    }
    pub(super) fn close(&mut self, kind: BillableKind, id: &str, at: Duration) {
        for e in &mut self.entries {
            if e.kind == kind && e.id == id && e.deleted_at.is_none() {
                e.deleted_at = Some(at);
            }
        }
    }
    /// All entries, in creation order.
    pub fn entries(&self) -> &[LedgerEntry] {
        &self.entries
    }
    /// Entries not deleted.
    pub fn live(&self) -> Vec<&LedgerEntry> {
        self.entries
            .iter()
            .filter(|e| e.deleted_at.is_none())
            .collect()
    }
    /// Entries of `kind` not deleted.
    pub fn live_of(&self, kind: BillableKind) -> Vec<&LedgerEntry> {
        self.entries
            .iter()
            .filter(|e| e.kind == kind && e.deleted_at.is_none())
            .collect()
    }
    /// Entries of `kind` ever created.
    pub fn created_of(&self, kind: BillableKind) -> Vec<&LedgerEntry> {
        self.entries.iter().filter(|e| e.kind == kind).collect()
    }
    /// The largest number of `kind` resources named `name` that existed at the
    /// same time ("never two servers for one machine" is `<= 1`).
    pub fn max_concurrent(&self, kind: BillableKind, name: &str) -> usize {
        let mut events: Vec<(Duration, i64)> = Vec::new();
        for e in self
            .entries
            .iter()
            .filter(|e| e.kind == kind && e.name == name)
        {
            events.push((e.created_at, 1));
            if let Some(d) = e.deleted_at {
                events.push((d, -1));
            }
        }
        // Deletions before creations at the same instant.
        events.sort();
        let (mut cur, mut max) = (0i64, 0i64);
        for (_, delta) in events {
            cur += delta;
            max = max.max(cur);
        }
        usize::try_from(max).unwrap_or(0)
    }
    /// Total billed time of `kind` up to `now` (open entries count until `now`).
    pub fn billed_time(&self, kind: BillableKind, now: Duration) -> Duration {
        self.entries
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.deleted_at.unwrap_or(now).saturating_sub(e.created_at))
            .sum()
    }
}
