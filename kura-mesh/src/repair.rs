//! Repair in O(difference): compare a peer's digest summaries with ours top-down,
//! fetch the entries where the peer is ahead and push those where we are ahead.
//!
//! A pass pulls what the peer is ahead on and, when [`RepairContext::push`] is set,
//! pushes what we are ahead on. The mesh pulls only: every node pulls from every
//! peer, so each differing byte crosses the link once. Namespace
//! tombstones are applied first, so a deleted namespace is never resurrected by a
//! peer that still holds older data: those records are shadowed and ignored.
//! A pass is idempotent and can be interrupted at any point; the next pass resumes
//! from what is still different.
//!
//! Summaries record knowledge, not possession: an object a node evicted stays in its
//! summary as a *ghost* (see kura-store's `docs/store.md`). Where the peer is ahead
//! with a ghost, the pass does not fetch (nobody may hold the bytes, and the peer
//! chose to drop them); it records the ghost locally with [`Store::learn`]. Where the
//! peer is ahead with the same digest we hold, it raises our version without a
//! transfer. Only entries the peer holds with other bytes are fetched.

use std::collections::BTreeSet;
use std::sync::Arc;

use kura_store::summary::{BucketEntry, DEPTH, FANOUT, NodeHash, diff_bucket_entries};
use kura_store::{Account, Namespace, NamespaceId, ObjectId, ReplicatedRecord, Store};
use tokio::sync::Semaphore;

use crate::client::PeerClient;
use crate::error::{Error, Result};
use crate::limiter::TokenBucket;
use crate::transfer::Progress;
use crate::wire::{self, BucketRequest, Status, SummaryRequest};

/// What one repair pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Namespaces whose roots were compared.
    pub namespaces_compared: u64,
    /// Namespaces whose roots differed.
    pub namespaces_differing: u64,
    /// Summary nodes and buckets requested.
    pub nodes_requested: u64,
    /// Keys found different.
    pub keys_differing: u64,
    /// Objects fetched and applied.
    pub objects_applied: u64,
    /// Object bytes fetched.
    pub bytes_fetched: u64,
    /// Key deletions applied.
    pub deletes_applied: u64,
    /// Namespace tombstones applied.
    pub tombstones_applied: u64,
    /// Records the store refused (e.g. clock skew); retried by the next pass.
    pub refused: u64,
    /// Objects pushed to the peer (we were ahead).
    pub objects_pushed: u64,
    /// Object bytes pushed.
    pub bytes_pushed: u64,
    /// Key deletions and namespace tombstones pushed.
    pub deletes_pushed: u64,
    /// Entries the peer was ahead on but only knew as ghosts (evicted there): recorded
    /// here as ghosts with [`Store::learn`], nothing transferred.
    pub ghosts_learned: u64,
    /// Entries the peer was ahead on with the bytes we already hold (same digest): our
    /// version was raised, nothing transferred.
    pub versions_bumped: u64,
    /// Fetches the peer answered "not found" (evicted or deleted since its summary was
    /// read); skipped, the next pass sees its new entry.
    pub fetches_vanished: u64,
}

/// Everything a repair pass needs.
#[derive(Debug, Clone)]
pub struct RepairContext<'a> {
    /// Local store.
    pub store: &'a Store,
    /// Our account.
    pub account: &'a Account,
    /// Limiters every fetched byte passes (global, per peer).
    pub limiters: Vec<Arc<TokenBucket>>,
    /// Bounds concurrent object transfers across the node.
    pub transfers: &'a Semaphore,
    /// Also push what we are ahead on. The mesh leaves this off (every node pulls,
    /// so each byte crosses once even when both sides repair at the same time, and
    /// a node that dropped a backlog asks the peer to pull instead); useful when
    /// only this side can reach the other.
    pub push: bool,
}

fn hashes(what: &'static str, v: &[String]) -> Result<Vec<NodeHash>> {
    if v.len() != FANOUT {
        return Err(Error::Wire(crate::WireError::Invalid {
            what,
            reason: format!("{} children instead of {FANOUT}", v.len()),
        }));
    }
    v.iter().map(|h| Ok(wire::parse_hash(what, h)?)).collect()
}

/// Alias of [`sync`] (a pass both pulls and pushes).
pub async fn pull(
    ctx: &RepairContext<'_>,
    peer: &PeerClient,
    status: &Status,
) -> Result<RepairReport> {
    sync(ctx, peer, status).await
}

/// Runs one repair pass with `peer`, whose `status` was just fetched: applies the
/// namespace tombstones it has, fetches what it is ahead on and pushes what we are
/// ahead on, descending only into differing summary nodes.
pub async fn sync(
    ctx: &RepairContext<'_>,
    peer: &PeerClient,
    status: &Status,
) -> Result<RepairReport> {
    let mut report = RepairReport::default();
    let store = ctx.store;
    // 1. Namespace tombstones first: they shadow older data on both sides.
    for t in &status.tombstones {
        let ns = NamespaceId::new(ctx.account.clone(), wire::parse_namespace(&t.namespace)?);
        let rec = ReplicatedRecord::DeleteNamespace {
            namespace: ns,
            version: t.version.into(),
        };
        if store.wants(&rec)? {
            match store.apply_replicated(rec, None).await {
                Ok(_) => report.tombstones_applied += 1,
                Err(e) => {
                    tracing::warn!(peer = peer.addr(), error = %e, "namespace tombstone refused");
                    report.refused += 1;
                }
            }
        }
    }
    // 1b. Our namespace tombstones the peer lacks.
    let ours = if ctx.push {
        store.namespace_tombstones()?
    } else {
        Vec::new()
    };
    for (ns, v) in ours {
        if ns.account != *ctx.account {
            continue;
        }
        let theirs = status
            .tombstones
            .iter()
            .find(|t| t.namespace == ns.namespace.as_str())
            .map(|t| kura_store::Version::from(t.version));
        if theirs.is_none_or(|t| t < v) {
            let rec = ReplicatedRecord::DeleteNamespace {
                namespace: ns,
                version: v,
            };
            push_one(ctx, peer, &rec, &mut report).await?;
        }
    }
    // 2. Every namespace either side has entries in, compared root first.
    let mut namespaces: std::collections::BTreeMap<Namespace, NodeHash> = Default::default();
    for r in &status.namespaces {
        namespaces.insert(
            wire::parse_namespace(&r.namespace)?,
            wire::parse_hash("root", &r.root)?,
        );
    }
    for ns in store.summarized_namespaces()? {
        if ns.account == *ctx.account {
            namespaces.entry(ns.namespace).or_insert([0u8; 32]);
        }
    }
    let mut to_push = Vec::new();
    for (namespace, remote_root) in namespaces {
        let ns = NamespaceId::new(ctx.account.clone(), namespace.clone());
        report.namespaces_compared += 1;
        if store.summary_node(&ns, 0, 0)? == remote_root {
            continue;
        }
        report.namespaces_differing += 1;
        let leaves = differing_leaves(store, peer, &ns, &mut report).await?;
        let (theirs, ours) = differing_keys(store, peer, &ns, &leaves, &mut report).await?;
        apply_keys(ctx, peer, &namespace, theirs, &mut report).await?;
        to_push.extend(ours);
    }
    // 3. Pushes last: when both sides run a pass at once, each has fetched by now,
    //    so these are mostly answered "stale" without a body crossing the link.
    if !ctx.push {
        to_push.clear();
    }
    for rec in to_push {
        push_one(ctx, peer, &rec, &mut report).await?;
    }
    Ok(report)
}

async fn differing_leaves(
    store: &Store,
    peer: &PeerClient,
    ns: &NamespaceId,
    report: &mut RepairReport,
) -> Result<Vec<u32>> {
    let mut frontier = vec![0u32];
    for level in 0..DEPTH {
        let mut next = Vec::new();
        for chunk in frontier.chunks(wire::MAX_SUMMARY_NODES) {
            let req = SummaryRequest {
                namespace: ns.namespace.as_str().to_owned(),
                nodes: chunk.iter().map(|i| (level, *i)).collect(),
            };
            report.nodes_requested += chunk.len() as u64;
            let resp = peer.summary(&req).await?;
            if resp.children.len() != chunk.len() {
                return Err(Error::Wire(crate::WireError::Invalid {
                    what: "summary response",
                    reason: "wrong number of nodes".into(),
                }));
            }
            for (idx, remote) in chunk.iter().zip(&resp.children) {
                let remote = hashes("summary child", remote)?;
                let local = store.summary_children(ns, level, *idx)?;
                for c in kura_store::summary::differing_children(&local, &remote) {
                    next.push(idx * FANOUT as u32 + c);
                }
            }
        }
        frontier = next;
    }
    Ok(frontier)
}

/// Of the differing keys: the peer's entries (to fetch if newer) and our records
/// where we are ahead (to push).
async fn differing_keys(
    store: &Store,
    peer: &PeerClient,
    ns: &NamespaceId,
    leaves: &[u32],
    report: &mut RepairReport,
) -> Result<(Vec<BucketEntry>, Vec<ReplicatedRecord>)> {
    let mut theirs = Vec::new();
    let mut ours = Vec::new();
    for chunk in leaves.chunks(wire::MAX_BUCKET_LEAVES) {
        let req = BucketRequest {
            namespace: ns.namespace.as_str().to_owned(),
            leaves: chunk.to_vec(),
        };
        report.nodes_requested += chunk.len() as u64;
        let resp = peer.buckets(&req).await?;
        if resp.buckets.len() != chunk.len() {
            return Err(Error::Wire(crate::WireError::Invalid {
                what: "bucket response",
                reason: "wrong number of buckets".into(),
            }));
        }
        for (leaf, remote) in chunk.iter().zip(&resp.buckets) {
            let remote: Vec<BucketEntry> = remote
                .iter()
                .map(|e| e.to_entry())
                .collect::<std::result::Result<_, _>>()?;
            let local = store.summary_bucket(ns, *leaf)?;
            let differing: BTreeSet<_> = diff_bucket_entries(&local, &remote).into_iter().collect();
            report.keys_differing += differing.len() as u64;
            for l in local.iter().filter(|l| differing.contains(&l.key)) {
                let mine = kura_store::merge::Entry {
                    version: l.version,
                    payload: l.payload,
                };
                let ahead = match remote.iter().find(|r| r.key == l.key) {
                    None => true,
                    Some(r) => kura_store::merge::winner(
                        &kura_store::merge::Entry {
                            version: r.version,
                            payload: r.payload,
                        },
                        &mine,
                    ),
                };
                if ahead {
                    let id = ObjectId::new(ns.account.clone(), ns.namespace.clone(), l.key.clone());
                    ours.push(match l.payload {
                        kura_store::merge::Payload::Deleted => ReplicatedRecord::Delete {
                            id,
                            version: l.version,
                        },
                        kura_store::merge::Payload::Present(digest) => ReplicatedRecord::Put {
                            id,
                            version: l.version,
                            content_type: String::new(),
                            len: 0,
                            digest,
                            refs: Vec::new(),
                        },
                    });
                }
            }
            theirs.extend(remote.into_iter().filter(|e| differing.contains(&e.key)));
        }
    }
    Ok((theirs, ours))
}

/// Pushes one record we are ahead on (for a put: our current copy, if it is still
/// the version the summary showed; otherwise a newer change is on its way anyway).
async fn push_one(
    ctx: &RepairContext<'_>,
    peer: &PeerClient,
    rec: &ReplicatedRecord,
    report: &mut RepairReport,
) -> Result<()> {
    let (rec, body) = match rec {
        ReplicatedRecord::Put { id, version, .. } => {
            let Some(o) = ctx.store.get(id).await? else {
                return Ok(());
            };
            let m = o.meta();
            if m.version != *version {
                return Ok(());
            }
            (m.put_record(), Some(o))
        }
        other => (other.clone(), None),
    };
    let _permit = ctx.transfers.acquire().await;
    let progress = Arc::new(Progress::default());
    let is_put = body.is_some();
    match peer
        .push(
            &rec,
            body.as_ref().map(|o| o.reader()),
            ctx.limiters.clone(),
            progress.clone(),
        )
        .await
    {
        Ok(out) => {
            if out.applied {
                if is_put {
                    report.objects_pushed += 1;
                    report.bytes_pushed += progress.bytes();
                } else {
                    report.deletes_pushed += 1;
                }
            }
            Ok(())
        }
        Err(e) if e.is_transient() => Err(e),
        Err(e) => {
            tracing::warn!(peer = peer.addr(), error = %e, "peer refused a repair record");
            report.refused += 1;
            Ok(())
        }
    }
}

async fn apply_keys(
    ctx: &RepairContext<'_>,
    peer: &PeerClient,
    namespace: &Namespace,
    entries: Vec<BucketEntry>,
    report: &mut RepairReport,
) -> Result<()> {
    let store = ctx.store;
    let mut retry = Vec::new();
    for entry in entries {
        let id = ObjectId::new(ctx.account.clone(), namespace.clone(), entry.key.clone());
        let rec = match entry.payload {
            kura_store::merge::Payload::Deleted => ReplicatedRecord::Delete {
                id,
                version: entry.version,
            },
            kura_store::merge::Payload::Present(digest) => ReplicatedRecord::Put {
                id,
                version: entry.version,
                content_type: String::new(),
                len: 0,
                digest,
                refs: Vec::new(),
            },
        };
        if !store.wants(&rec)? {
            continue;
        }
        match rec {
            ReplicatedRecord::Put {
                ref id,
                version,
                digest,
                ..
            } if !entry.held || store.head(id)?.is_some_and(|m| m.digest == digest) => {
                let evicted = (!entry.held).then_some(entry.evicted_ms);
                match store.learn(id, version, digest, evicted).await {
                    Ok(kura_store::Learned::Ghost) => report.ghosts_learned += 1,
                    Ok(kura_store::Learned::Bumped) => report.versions_bumped += 1,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(peer = peer.addr(), error = %e, "learning an entry failed");
                        report.refused += 1;
                    }
                }
            }
            ReplicatedRecord::Put { .. } => {
                if let Err(e) = fetch_one(ctx, peer, namespace, &entry.key, report).await {
                    match e {
                        Error::Store(kura_store::Error::MissingReference { .. }) => {
                            retry.push(entry.key.clone());
                        }
                        Error::Store(_) => report.refused += 1,
                        e => return Err(e),
                    }
                }
            }
            rec => match store.apply_replicated(rec, None).await {
                Ok(kura_store::Applied::Applied) => report.deletes_applied += 1,
                Ok(kura_store::Applied::Ignored) => {}
                Err(_) => report.refused += 1,
            },
        }
    }
    // Entries referencing objects fetched later in the same pass.
    for key in retry {
        if let Err(e) = fetch_one(ctx, peer, namespace, &key, report).await {
            match e {
                Error::Store(_) => report.refused += 1,
                e => return Err(e),
            }
        }
    }
    Ok(())
}

async fn fetch_one(
    ctx: &RepairContext<'_>,
    peer: &PeerClient,
    namespace: &Namespace,
    key: &kura_store::Key,
    report: &mut RepairReport,
) -> Result<()> {
    let _permit = ctx.transfers.acquire().await;
    let progress = Arc::new(Progress::default());
    let Some((record, body)) = peer
        .fetch(namespace, key, ctx.limiters.clone(), progress.clone())
        .await?
    else {
        // Evicted or deleted on the peer since we read its summary: skip quietly.
        report.fetches_vanished += 1;
        return Ok(());
    };
    let ok_id = match &record {
        ReplicatedRecord::Put { id, .. } => {
            id.account == *ctx.account && id.namespace == *namespace && id.key == *key
        }
        _ => false,
    };
    if !ok_id {
        return Err(Error::Wire(crate::WireError::Invalid {
            what: "fetched record",
            reason: "does not match the requested object".into(),
        }));
    }
    let applied = ctx.store.apply_replicated(record, Some(body)).await?;
    report.bytes_fetched += progress.bytes();
    if applied == kura_store::Applied::Applied {
        report.objects_applied += 1;
    }
    Ok(())
}
