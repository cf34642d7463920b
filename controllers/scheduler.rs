//! The scheduler: assigns PROVISIONING tasks to container instances, as a batch pipeline.
//!
//! One pass (the single key `*`) takes every unplaced task from the shared cache and, on one
//! consistent cut of tasks and instances ([`ClusterCache`]), decides all their placements:
//! feasibility → rank over a bounded, shuffled walk of the instances (Nomad's limited
//! candidate iterator, `placement::place_sampled`), each decision accounted on the in-memory
//! candidates so the next task sees it. Per-instance usage comes from the cache's aggregate,
//! so the cost of a placement does not grow with the number of tasks in the cluster.
//!
//! Commit (Nomad's plan apply): the placements, grouped by instance, go out in as few
//! transactions as fit etcd's defaults (`store::MAX_TXN_OPS`, `MAX_TXN_BYTES`). Each one
//! compares every instance record it touches (and every task), and bumps those records, so a
//! racing scheduler that decided on stale usage fails the compare: an instance is never
//! over-committed. A pass whose transaction failed waits until its cache has caught up with
//! the store and plans again from there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tokio::time::Duration;

use crate::capacity::{self, candidate, PortsOf};
use berth_core::model::{
    keys, ContainerInstance, DesiredStatus, Kind, PlacementConstraintType, Task, TaskState,
};
use berth_core::objects;
use berth_core::placement::{self, Candidate, Request};
use berth_core::runtime::{
    Action, ClusterCache, Controller, ControllerOptions, Reconciler, Trigger,
};
use berth_core::store::{
    op_bytes, Compare, DynStore, KeyValue, Op, Txn, MAX_TXN_BYTES, MAX_TXN_COMPARES, MAX_TXN_OPS,
};

/// The key of a placement pass over every pending task.
const ALL: &str = "*";
/// Tasks decided per pass; the rest follow on an immediate requeue (bounds a pass's time).
const MAX_PER_PASS: usize = 4096;
/// Tries of one transaction whose compares failed only on instance records that saw no
/// placement meanwhile.
const COMMIT_ATTEMPTS: usize = 3;
/// Clusters up to this many usable instances are ranked whole; larger ones by a walk of
/// log2(n) feasible instances, but never fewer than this.
const SAMPLE_FLOOR: usize = 16;

pub struct Scheduler {
    store: DynStore,
    cache: ClusterCache,
}

/// One decided placement.
struct Plan {
    task: Arc<Task>,
    req: Request,
}

/// What a pass decides from: one consistent cut.
struct Snapshot {
    pending: Vec<Arc<Task>>,
    instances: Vec<Arc<ContainerInstance>>,
    cands: Vec<Candidate>,
}

impl Scheduler {
    /// A scheduler with a cache of its own (as a separate process would have).
    pub fn controller(store: DynStore) -> Controller {
        let cache = ClusterCache::start(store.clone(), &[]);
        Self::controller_with(store, &cache)
    }

    /// The reconciler alone (tests call `reconcile` on it directly).
    pub fn new(store: DynStore, cache: &ClusterCache) -> Self {
        Scheduler {
            store,
            cache: cache.clone(),
        }
    }

    pub fn controller_with(store: DynStore, cache: &ClusterCache) -> Controller {
        let r = Arc::new(Scheduler::new(store.clone(), cache));
        // A pending task, or anything that may free or add room (a task stopping, an instance
        // or agent lease changing), runs a pass over all pending tasks.
        let on_task = |t: &Task| -> Vec<String> {
            let pending = t.status.container_instance.is_none() && !t.is_stopped();
            let frees = t.is_stopped() || t.status.desired_status == DesiredStatus::Stopped;
            if pending || frees {
                vec![ALL.to_string()]
            } else {
                vec![]
            }
        };
        let all = |_: &KeyValue| vec![ALL.to_string()];
        Controller::new(
            "scheduler",
            store,
            r,
            ControllerOptions {
                // One pass at a time: a pass decides for every pending task at once.
                workers: 1,
                resync: Duration::from_secs(10),
                ..Default::default()
            },
        )
        .shared(&cache.informer)
        .trigger(Trigger::on::<Task>(keys::prefix(Kind::Task), on_task))
        // Instance records change with every placement and task transition: spaced (a new
        // pending task still triggers a pass at once).
        .trigger(Trigger::new(keys::prefix(Kind::ContainerInstance), all).spaced(INSTANCE_SPACING))
        .trigger(Trigger::new(keys::INSTANCE_LEASE_PREFIX, all).spaced(INSTANCE_SPACING))
    }

    /// Pending tasks (oldest first) and every instance as a candidate, read as one cut.
    fn snapshot(&self) -> Snapshot {
        let mut pending = self.cache.unplaced_tasks();
        if pending.is_empty() {
            return Snapshot {
                pending,
                instances: vec![],
                cands: vec![],
            };
        }
        pending.sort_by(|a, b| {
            (a.status.created_at, &a.metadata.name).cmp(&(b.status.created_at, &b.metadata.name))
        });
        let instances = self.cache.instances.list();
        let mut ports = PortsOf::default();
        let cands = instances
            .iter()
            .map(|i| {
                let id = &i.metadata.name;
                let u = self.cache.usage(id);
                candidate(i, self.cache.connected(id), &u, &self.cache, &mut ports)
            })
            .collect();
        Snapshot {
            pending,
            instances,
            cands,
        }
    }

    async fn pass(&self) -> anyhow::Result<Action> {
        self.cache.informer.wait_synced().await;
        let Snapshot {
            pending,
            instances,
            cands,
        } = self.cache.informer.consistent(|_| self.snapshot());
        if pending.is_empty() {
            return Ok(Action::Done);
        }
        let (to_stop, pending): (Vec<Arc<Task>>, Vec<Arc<Task>>) = pending
            .into_iter()
            .partition(|t| t.status.desired_status == DesiredStatus::Stopped);
        for t in &to_stop {
            self.stop_unplaced(&t.metadata.name).await?;
        }

        // Decide.
        let mut rng = rand::rngs::StdRng::from_entropy();
        let mut order: Vec<usize> = (0..cands.len()).filter(|&i| cands[i].usable).collect();
        order.shuffle(&mut rng);
        let limit = placement::sample_limit(order.len(), SAMPLE_FLOOR);
        let mut work = cands.clone();
        let mut cursor = 0;
        let mut ports = PortsOf::default();
        // Usage only grows within a pass: a request shape that fitted nowhere fits nowhere
        // for the rest of it (Nomad's computed node class, turned around).
        let mut hopeless: HashMap<String, String> = HashMap::new();
        let mut plans: BTreeMap<usize, Vec<Plan>> = BTreeMap::new();
        let mut unplaceable: Vec<(Arc<Task>, String)> = Vec::new();
        for t in pending.iter().take(MAX_PER_PASS) {
            let req = Request {
                cluster: t.spec.cluster.clone(),
                cpu: t.spec.cpu,
                memory: t.spec.memory,
                ports: ports.get(&self.cache, &t.spec.task_definition).to_vec(),
                group: t.spec.group.clone(),
                strategy: t.spec.placement_strategy.clone(),
                constraints: t.spec.placement_constraints.clone(),
            };
            let shape = shape_of(&req);
            if let Some(why) = hopeless.get(&shape) {
                unplaceable.push((t.clone(), why.clone()));
                continue;
            }
            match placement::place_sampled(&req, &work, &order, &mut cursor, limit, &mut rng) {
                Ok(i) => {
                    work[i].take(&req);
                    plans.entry(i).or_default().push(Plan {
                        task: t.clone(),
                        req,
                    });
                }
                Err(no) => {
                    hopeless.insert(shape, no.reason.clone());
                    unplaceable.push((t.clone(), no.reason));
                }
            }
        }

        // Commit, grouped by instance, chunked to the store's transaction limits; chunks on
        // different instances go out concurrently.
        let mut commit = Commit {
            base: cands,
            revisions: instances.iter().map(|i| i.metadata.revision).collect(),
            records: HashMap::new(),
            failed: HashSet::new(),
            last_revision: 0,
            conflicts: 0,
        };
        let (together, in_order) = chunks(&plans, &instances)?;
        let outcomes: Vec<anyhow::Result<Outcome>> = {
            let c = &commit;
            let instances = &instances;
            // Collected first: a closure held across the await trips async_trait's lifetimes.
            let commits: Vec<_> = together
                .iter()
                .map(|ch| Box::pin(self.commit(c, instances, ch)))
                .collect();
            futures::stream::iter(commits)
                .buffer_unordered(COMMIT_CONCURRENCY)
                .collect()
                .await
        };
        for o in outcomes {
            commit.apply(o?);
        }
        for ch in &in_order {
            let o = self.commit(&commit, &instances, ch).await?;
            commit.apply(o);
        }
        for (t, why) in &unplaceable {
            if t.status.placement_message.as_deref() != Some(why.as_str()) {
                objects::update_task(&*self.store, &t.metadata.name, |t| {
                    if t.status.placement_message.as_deref() == Some(why.as_str())
                        || t.status.container_instance.is_some()
                    {
                        return false;
                    }
                    t.status.placement_message = Some(why.clone());
                    true
                })
                .await?;
            }
        }
        tracing::debug!(
            pending = pending.len(),
            instances = plans.len(),
            conflicts = commit.conflicts,
            failed = commit.failed.len(),
            "placement pass"
        );
        if !commit.failed.is_empty() {
            // Lost a race (another scheduler, an instance update): plan again once the cache
            // holds everything the store has now.
            let rev = self.store.revision().await?;
            let _ = self.cache.wait_for(rev).await;
            return Ok(Action::Requeue);
        }
        if commit.last_revision > 0 {
            // The next pass must see these placements, or it would try them again.
            let _ = self.cache.wait_for(commit.last_revision).await;
        }
        Ok(if pending.len() > MAX_PER_PASS {
            Action::Requeue
        } else if !unplaceable.is_empty() {
            // Instance and task changes re-trigger a pass; this is the safety net.
            Action::RequeueAfter(Duration::from_secs(5))
        } else {
            Action::Done
        })
    }

    /// One transaction: for each instance, its tasks' placements and its record, each
    /// compared with the revision the decision was made on.
    ///
    /// A failed compare usually means an instance record changed for another reason (the
    /// instance-status controller writes counters after every task transition). The record's
    /// `placementGeneration` tells the two apart: every placement bumps it, so an instance
    /// whose generation is still the one decided on has seen no placement since the cut, and
    /// its tasks' usage is what the decision assumed. Those are retried on their fresh
    /// revision, read from the cache once it has caught up with the store (one round trip,
    /// not one read per instance: Nomad's partial plan apply); the others are left to the
    /// next pass.
    async fn commit(
        &self,
        c: &Commit,
        instances: &[Arc<ContainerInstance>],
        chunk: &Chunk<'_>,
    ) -> anyhow::Result<Outcome> {
        let mut out = Outcome::default();
        // This chunk's instances as retried: fresher records than `c` holds.
        let mut fresh: HashMap<usize, (i64, ContainerInstance)> = HashMap::new();
        let mut failed: HashSet<usize> = HashSet::new();
        for attempt in 0..COMMIT_ATTEMPTS {
            let mut txn = Txn::new();
            let mut staged: Vec<(usize, Candidate, ContainerInstance)> = Vec::new();
            for (i, plans) in chunk {
                let i = *i;
                // Failed before (or an earlier part of this instance's list did).
                if c.failed.contains(&i) || failed.contains(&i) {
                    continue;
                }
                let mut cand = c.base[i].clone();
                let (revision, mut rec) = match fresh.get(&i) {
                    Some((r, rec)) => (*r, rec.clone()),
                    None => (c.revisions[i], c.record(i, instances).clone()),
                };
                for p in plans.iter() {
                    cand.take(&p.req);
                    let key = objects::task_key(&p.task.metadata.name);
                    let mut t = (*p.task).clone();
                    t.status.container_instance = Some(rec.metadata.name.clone());
                    t.status.last_status = TaskState::Pending;
                    t.status.placement_message = None;
                    txn = txn
                        .when(Compare::mod_revision(&key, p.task.metadata.revision))
                        .and_then(Op::put(key, t.to_bytes()));
                }
                rec.status.placement_generation += 1;
                rec.status.remaining_resources = capacity::remaining(&cand);
                rec.status.pending_tasks_count += plans.len() as u32;
                let ikey = keys::key(Kind::ContainerInstance, &rec.metadata.name);
                txn = txn
                    .when(Compare::mod_revision(&ikey, revision))
                    .and_then(Op::put(ikey, rec.to_bytes()));
                staged.push((i, cand, rec));
            }
            if staged.is_empty() {
                break;
            }
            debug_assert!(txn.success.len() <= MAX_TXN_OPS);
            debug_assert!(txn.success.iter().map(op_bytes).sum::<usize>() <= MAX_TXN_BYTES);
            let r = self.store.txn(txn).await?;
            if r.succeeded {
                tracing::debug!(instances = staged.len(), revision = r.revision, "placed");
                out.placed = staged;
                out.revision = r.revision;
                break;
            }
            out.conflicts += 1;
            let now = self.store.revision().await?;
            let _ = self.cache.wait_for(now).await;
            for (i, ..) in &staged {
                let i = *i;
                let (revision, decided) = match fresh.get(&i) {
                    Some((r, rec)) => (*r, rec.status.placement_generation),
                    None => (
                        c.revisions[i],
                        c.record(i, instances).status.placement_generation,
                    ),
                };
                let key = keys::key(Kind::ContainerInstance, &instances[i].metadata.name);
                match self.cache.instances.get(&key) {
                    Some(f)
                        if f.status.placement_generation == decided
                            && f.metadata.revision != revision =>
                    {
                        fresh.insert(i, (f.metadata.revision, (*f).clone()));
                    }
                    // Placed on by someone else, gone, or unchanged (then a task moved).
                    _ => {
                        failed.insert(i);
                    }
                }
            }
            if attempt + 1 == COMMIT_ATTEMPTS {
                failed.extend(chunk.iter().map(|(i, _)| *i));
            }
        }
        out.failed = failed.into_iter().collect();
        Ok(out)
    }

    /// A task asked to stop before it was ever placed: nothing runs, so it stops right here.
    async fn stop_unplaced(&self, id: &str) -> anyhow::Result<()> {
        objects::update_task(&*self.store, id, |t| {
            if t.status.container_instance.is_some() || t.is_stopped() {
                return false;
            }
            t.status.last_status = TaskState::Stopped;
            t.status.stopped_at = Some(berth_core::model::now());
            true
        })
        .await?;
        Ok(())
    }
}

/// Spacing of passes triggered by instance and lease changes.
const INSTANCE_SPACING: Duration = Duration::from_millis(100);

/// Transactions of one pass in flight at once (each on instances no other one touches).
const COMMIT_CONCURRENCY: usize = 4;

/// One transaction's placements: (instance index, some of its plans).
type Chunk<'a> = Vec<(usize, &'a [Plan])>;

/// What one chunk's commit did.
#[derive(Default)]
struct Outcome {
    /// Instances placed on, with their candidate and record as written.
    placed: Vec<(usize, Candidate, ContainerInstance)>,
    /// The revision of the transaction that placed them.
    revision: i64,
    failed: Vec<usize>,
    conflicts: u32,
}

/// Split the placements into transactions within the store's limits. An instance's list goes
/// whole into one transaction whenever it fits in one, so those transactions touch disjoint
/// instances and may commit concurrently (the first list). A list too long for one is split
/// into transactions of its own that must commit in order, each fenced on the revision the
/// one before left (the second).
fn chunks<'a>(
    plans: &'a BTreeMap<usize, Vec<Plan>>,
    instances: &[Arc<ContainerInstance>],
) -> anyhow::Result<(Vec<Chunk<'a>>, Vec<Chunk<'a>>)> {
    let mut together: Vec<Chunk<'a>> = Vec::new();
    let mut in_order: Vec<Chunk<'a>> = Vec::new();
    let mut cur: Chunk<'a> = Vec::new();
    let (mut ops, mut bytes) = (0usize, 0usize);
    for (&i, list) in plans {
        let inst_bytes = instances[i].to_bytes().len() + 256;
        let sizes: Vec<usize> = list.iter().map(|p| p.task.to_bytes().len() + 256).collect();
        let total: usize = inst_bytes + sizes.iter().sum::<usize>();
        // Compares: one per task and one per instance record.
        let fits = |ops: usize, bytes: usize| {
            ops + list.len() < MAX_TXN_COMPARES && bytes + total <= MAX_TXN_BYTES
        };
        if fits(0, 0) {
            if !fits(ops, bytes) {
                together.push(std::mem::take(&mut cur));
                (ops, bytes) = (0, 0);
            }
            cur.push((i, list));
            ops += list.len() + 1;
            bytes += total;
            continue;
        }
        let mut rest: &[Plan] = list;
        let mut sizes: &[usize] = &sizes;
        while !rest.is_empty() {
            let (mut n, mut b) = (0, inst_bytes);
            while n < rest.len() && n + 2 <= MAX_TXN_COMPARES && b + sizes[n] <= MAX_TXN_BYTES {
                b += sizes[n];
                n += 1;
            }
            if n == 0 {
                anyhow::bail!("one placement does not fit a transaction");
            }
            in_order.push(vec![(i, &rest[..n])]);
            rest = &rest[n..];
            sizes = &sizes[n..];
        }
    }
    if !cur.is_empty() {
        together.push(cur);
    }
    Ok((together, in_order))
}

/// State of a pass's commits: what each instance holds as committed so far.
struct Commit {
    base: Vec<Candidate>,
    revisions: Vec<i64>,
    /// Instance records as last written by this pass.
    records: HashMap<usize, ContainerInstance>,
    failed: HashSet<usize>,
    last_revision: i64,
    /// Transactions that failed a compare.
    conflicts: u32,
}

impl Commit {
    /// Instance `i`'s record as this pass last wrote it, else as the cut read it.
    fn record<'a>(
        &'a self,
        i: usize,
        instances: &'a [Arc<ContainerInstance>],
    ) -> &'a ContainerInstance {
        self.records.get(&i).unwrap_or(&instances[i])
    }

    fn apply(&mut self, o: Outcome) {
        for (i, cand, rec) in o.placed {
            self.base[i] = cand;
            self.revisions[i] = o.revision;
            self.records.insert(i, rec);
        }
        self.last_revision = self.last_revision.max(o.revision);
        self.failed.extend(o.failed);
        self.conflicts += o.conflicts;
    }
}

/// What decides whether a request fits an instance (strategy only ranks; the group matters
/// only under distinctInstance).
fn shape_of(r: &Request) -> String {
    let distinct = r
        .constraints
        .iter()
        .any(|c| c.kind == PlacementConstraintType::DistinctInstance);
    format!(
        "{}|{}|{}|{:?}|{:?}|{}",
        r.cluster,
        r.cpu,
        r.memory,
        r.ports,
        r.constraints,
        if distinct { r.group.as_str() } else { "" }
    )
}

#[async_trait]
impl Reconciler for Scheduler {
    async fn reconcile(&self, _key: &str) -> anyhow::Result<Action> {
        self.pass().await
    }
    async fn resync_keys(&self) -> anyhow::Result<Vec<String>> {
        Ok(vec![ALL.to_string()])
    }
}
