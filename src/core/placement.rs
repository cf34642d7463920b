//! Placement as a pipeline (Nomad-style): feasibility filters, then a ranking by strategy.
//! Pure functions over a snapshot, so the maths is property-tested apart from the store.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;

use crate::model::{
    PlacementConstraint, PlacementConstraintType, PlacementStrategy, PlacementStrategyType,
    Protocol,
};

/// What one task asks for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub cluster: String,
    pub cpu: u32,
    pub memory: u32,
    pub ports: Vec<(u16, Protocol)>,
    /// The task's group (`service:web`), for distinctInstance and spread.
    pub group: String,
    pub strategy: Vec<PlacementStrategy>,
    pub constraints: Vec<PlacementConstraint>,
}

/// An instance as seen at the start of a placement pass.
#[derive(Debug, Clone, Default)]
pub struct Candidate {
    pub id: String,
    pub cluster: String,
    pub usable: bool,
    pub cpu_total: u32,
    pub memory_total: u32,
    pub cpu_used: u32,
    pub memory_used: u32,
    pub ports_used: BTreeSet<(u16, Protocol)>,
    /// Count of active tasks per group on this instance.
    pub groups: BTreeMap<String, u32>,
    pub tasks: u32,
    pub attributes: BTreeMap<String, String>,
}

impl Candidate {
    pub fn cpu_free(&self) -> u32 {
        self.cpu_total.saturating_sub(self.cpu_used)
    }
    pub fn memory_free(&self) -> u32 {
        self.memory_total.saturating_sub(self.memory_used)
    }
    /// Account a placed task, so a batch can place several tasks on one snapshot.
    pub fn take(&mut self, r: &Request) {
        self.cpu_used += r.cpu;
        self.memory_used += r.memory;
        self.ports_used.extend(r.ports.iter().copied());
        *self.groups.entry(r.group.clone()).or_insert(0) += 1;
        self.tasks += 1;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoPlacement {
    pub reason: String,
}

/// Choose an instance for `req` among `cands`, or say why none fits.
pub fn place(req: &Request, cands: &[Candidate], rng: &mut impl Rng) -> Result<usize, NoPlacement> {
    let mut rejected: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut feasible = Vec::new();
    for (i, c) in cands.iter().enumerate() {
        match feasibility(req, c) {
            Ok(()) => feasible.push(i),
            Err(why) => *rejected.entry(why).or_insert(0) += 1,
        }
    }
    if feasible.is_empty() {
        let in_cluster = cands.iter().filter(|c| c.cluster == req.cluster).count();
        let reason = if in_cluster == 0 {
            format!(
                "no container instance is registered in cluster {}",
                req.cluster
            )
        } else {
            let parts: Vec<String> = rejected
                .iter()
                .filter(|(k, _)| **k != "another cluster")
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            format!(
                "no container instance met all requirements ({} cpu, {} MiB): {}",
                req.cpu,
                req.memory,
                parts.join(", ")
            )
        };
        return Err(NoPlacement { reason });
    }
    Ok(rank(req, cands, &feasible, rng))
}

/// Nomad's limited candidate walk: visit candidates in `order` (shuffled once per pass) from
/// `cursor`, which moves on across calls so consecutive tasks start at different instances;
/// stop at `limit` feasible ones and rank only those. The cost per task is then bounded by
/// `limit` while instances have room, whatever the size of the cluster. Spread over an
/// attribute compares every instance, so it (and a walk no longer than `limit`) looks at all.
/// With nothing feasible in the whole walk, the answer (and its reason) is [`place`]'s.
pub fn place_sampled(
    req: &Request,
    cands: &[Candidate],
    order: &[usize],
    cursor: &mut usize,
    limit: usize,
    rng: &mut impl Rng,
) -> Result<usize, NoPlacement> {
    let by_attribute = req.strategy.iter().any(|s| {
        s.kind == PlacementStrategyType::Spread
            && s.field
                .as_deref()
                .is_some_and(|f| f.starts_with("attribute:"))
    });
    if by_attribute || order.len() <= limit.max(1) {
        return place(req, cands, rng);
    }
    let mut feasible = Vec::with_capacity(limit);
    for _ in 0..order.len() {
        let i = order[*cursor % order.len()];
        *cursor = (*cursor + 1) % order.len();
        if feasibility(req, &cands[i]).is_ok() {
            feasible.push(i);
            if feasible.len() >= limit {
                break;
            }
        }
    }
    if feasible.is_empty() {
        return place(req, cands, rng);
    }
    Ok(rank(req, cands, &feasible, rng))
}

/// How many candidates [`place_sampled`] ranks in a cluster of `n` instances: Nomad's
/// log2(n), but never fewer than `floor` (small clusters are ranked whole).
pub fn sample_limit(n: usize, floor: usize) -> usize {
    let log2 = usize::BITS - n.max(1).leading_zeros();
    (log2 as usize).max(floor)
}

/// The feasibility pipeline: each step names why it rejects.
fn feasibility(req: &Request, c: &Candidate) -> Result<(), &'static str> {
    if c.cluster != req.cluster {
        return Err("another cluster");
    }
    if !c.usable {
        return Err("not ACTIVE or agent disconnected");
    }
    if c.cpu_free() < req.cpu {
        return Err("insufficient CPU");
    }
    if c.memory_free() < req.memory {
        return Err("insufficient memory");
    }
    if req.ports.iter().any(|p| c.ports_used.contains(p)) {
        return Err("host port already in use");
    }
    for con in &req.constraints {
        match con.kind {
            PlacementConstraintType::DistinctInstance => {
                if c.groups.get(&req.group).copied().unwrap_or(0) > 0 {
                    return Err("distinctInstance: already runs a task of this group");
                }
            }
            PlacementConstraintType::MemberOf => {
                let expr = con.expression.as_deref().unwrap_or("");
                if !member_of(expr, c) {
                    return Err("memberOf expression not met");
                }
            }
        }
    }
    Ok(())
}

/// A small subset of ECS's cluster query language: `attribute:NAME == V`, `!=`, `in [a, b]`,
/// `not in`, and `and` / `or` between terms (left to right).
pub fn member_of(expr: &str, c: &Candidate) -> bool {
    let lower = expr.to_string();
    if let Some((l, r)) = split_word(&lower, " or ") {
        return member_of(l, c) || member_of(r, c);
    }
    if let Some((l, r)) = split_word(&lower, " and ") {
        return member_of(l, c) && member_of(r, c);
    }
    let term = expr.trim();
    let value_of = |lhs: &str| -> Option<String> {
        let lhs = lhs.trim();
        if lhs == "instanceId" || lhs == "ec2InstanceId" {
            return Some(c.id.clone());
        }
        let name = lhs.strip_prefix("attribute:")?;
        c.attributes.get(name).cloned()
    };
    let list = |rhs: &str| -> Vec<String> {
        rhs.trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .collect()
    };
    if let Some((l, r)) = term.split_once(" not in ") {
        return value_of(l).is_none_or(|v| !list(r).contains(&v));
    }
    if let Some((l, r)) = term.split_once(" in ") {
        return value_of(l).is_some_and(|v| list(r).contains(&v));
    }
    if let Some((l, r)) = term.split_once("!=") {
        return value_of(l).as_deref() != Some(r.trim().trim_matches('"'));
    }
    if let Some((l, r)) = term.split_once("==") {
        return value_of(l).as_deref() == Some(r.trim().trim_matches('"'));
    }
    false
}

fn split_word<'a>(s: &'a str, word: &str) -> Option<(&'a str, &'a str)> {
    s.find(word).map(|i| (&s[..i], &s[i + word.len()..]))
}

/// Rank feasible candidates by the strategies in order (ties broken by the next one, then
/// by id for determinism). With no strategy, spread over instances.
fn rank(req: &Request, cands: &[Candidate], feasible: &[usize], rng: &mut impl Rng) -> usize {
    let default = [PlacementStrategy {
        kind: PlacementStrategyType::Spread,
        field: Some("instanceId".into()),
    }];
    let strategies: &[PlacementStrategy] = if req.strategy.is_empty() {
        &default
    } else {
        &req.strategy
    };
    let mut best: Vec<usize> = feasible.to_vec();
    for s in strategies {
        let score = |c: &Candidate| -> i64 {
            match s.kind {
                // Binpack: least remaining of the field after placement wins.
                PlacementStrategyType::Binpack => match s.field.as_deref() {
                    Some("cpu") => c.cpu_free() as i64,
                    _ => c.memory_free() as i64,
                },
                // Spread: fewest tasks of this group on the instance (or on its attribute value).
                PlacementStrategyType::Spread => match s.field.as_deref() {
                    Some(f) if f.starts_with("attribute:") => {
                        let attr = &f["attribute:".len()..];
                        let val = c.attributes.get(attr);
                        cands
                            .iter()
                            .filter(|o| o.attributes.get(attr) == val)
                            .map(|o| *o.groups.get(&req.group).unwrap_or(&0) as i64)
                            .sum()
                    }
                    _ => {
                        *c.groups.get(&req.group).unwrap_or(&0) as i64 * 1_000_000 + c.tasks as i64
                    }
                },
                PlacementStrategyType::Random => 0,
            }
        };
        if s.kind == PlacementStrategyType::Random {
            let i = rng.gen_range(0..best.len());
            return best[i];
        }
        let min = best.iter().map(|&i| score(&cands[i])).min().unwrap_or(0);
        best.retain(|&i| score(&cands[i]) == min);
        if best.len() == 1 {
            break;
        }
    }
    best.sort_by(|a, b| cands[*a].id.cmp(&cands[*b].id));
    best[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn cand(id: &str, cpu: u32, mem: u32) -> Candidate {
        Candidate {
            id: id.into(),
            cluster: "default".into(),
            usable: true,
            cpu_total: cpu,
            memory_total: mem,
            ..Default::default()
        }
    }

    fn req(cpu: u32, mem: u32) -> Request {
        Request {
            cluster: "default".into(),
            cpu,
            memory: mem,
            group: "service:web".into(),
            ..Default::default()
        }
    }

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn binpack_fills_the_fullest_first() {
        let mut cs = vec![cand("a", 1024, 1024), cand("b", 1024, 1024)];
        cs[1].memory_used = 512;
        let mut r = req(128, 128);
        r.strategy = vec![PlacementStrategy {
            kind: PlacementStrategyType::Binpack,
            field: Some("memory".into()),
        }];
        assert_eq!(place(&r, &cs, &mut rng()).unwrap(), 1);
    }

    #[test]
    fn spread_balances_a_group() {
        let mut cs = vec![
            cand("a", 4096, 4096),
            cand("b", 4096, 4096),
            cand("c", 4096, 4096),
        ];
        let r = req(10, 10);
        let mut counts = [0; 3];
        for _ in 0..9 {
            let i = place(&r, &cs, &mut rng()).unwrap();
            cs[i].take(&r);
            counts[i] += 1;
        }
        assert_eq!(counts, [3, 3, 3]);
    }

    #[test]
    fn distinct_instance_and_ports_and_resources_filter() {
        let mut cs = vec![cand("a", 1024, 1024), cand("b", 1024, 1024)];
        let mut r = req(100, 100);
        r.constraints = vec![PlacementConstraint {
            kind: PlacementConstraintType::DistinctInstance,
            expression: None,
        }];
        let i = place(&r, &cs, &mut rng()).unwrap();
        cs[i].take(&r);
        let j = place(&r, &cs, &mut rng()).unwrap();
        assert_ne!(i, j);
        cs[j].take(&r);
        let err = place(&r, &cs, &mut rng()).unwrap_err();
        assert!(err.reason.contains("distinctInstance"), "{}", err.reason);

        let mut p = req(10, 10);
        p.ports = vec![(80, Protocol::Tcp)];
        let cs = vec![cand("a", 1024, 1024)];
        let mut cs2 = cs.clone();
        cs2[0].take(&p);
        assert!(place(&p, &cs2, &mut rng())
            .unwrap_err()
            .reason
            .contains("port"));
        assert!(place(&req(2048, 1), &cs, &mut rng())
            .unwrap_err()
            .reason
            .contains("CPU"));
        assert!(place(&req(1, 2048), &cs, &mut rng())
            .unwrap_err()
            .reason
            .contains("memory"));
    }

    #[test]
    fn member_of_expressions() {
        let mut c = cand("i-1", 1, 1);
        c.attributes.insert("zone".into(), "a".into());
        assert!(member_of("attribute:zone == a", &c));
        assert!(!member_of("attribute:zone != a", &c));
        assert!(member_of("attribute:zone in [a, b]", &c));
        assert!(member_of("attribute:zone not in [b]", &c));
        assert!(member_of("attribute:zone == b or instanceId == i-1", &c));
        assert!(!member_of("attribute:zone == a and instanceId == i-2", &c));
        assert!(!member_of("attribute:missing == x", &c));
    }

    #[test]
    fn sampled_walk_ranks_a_bounded_set_and_spreads() {
        let mut cs: Vec<Candidate> = (0..100)
            .map(|i| cand(&format!("i{i:03}"), 1024, 1024))
            .collect();
        let order: Vec<usize> = (0..cs.len()).collect();
        let mut cursor = 0;
        let r = req(10, 10);
        for _ in 0..300 {
            let i = place_sampled(&r, &cs, &order, &mut cursor, 8, &mut rng()).unwrap();
            cs[i].take(&r);
        }
        // Least-loaded among each window of 8: the load stays within two tasks of even.
        let (min, max) = (
            cs.iter().map(|c| c.tasks).min().unwrap(),
            cs.iter().map(|c| c.tasks).max().unwrap(),
        );
        assert!(max - min <= 2, "{min}..{max}");
        // Nothing fits: the reason covers the whole cluster.
        let big = req(4096, 1);
        let e = place_sampled(&big, &cs, &order, &mut cursor, 8, &mut rng()).unwrap_err();
        assert!(e.reason.contains("100 insufficient CPU"), "{}", e.reason);
        assert_eq!(sample_limit(1000, 2), 10);
        assert_eq!(sample_limit(3, 16), 16);
    }

    proptest! {
        /// Placing greedily from one snapshot never over-commits any instance.
        #[test]
        fn never_overcommits(
            sizes in proptest::collection::vec((256u32..4096, 256u32..4096), 1..6),
            reqs in proptest::collection::vec((0u32..1024, 0u32..1024), 1..60),
            strat in 0usize..3,
        ) {
            let mut cs: Vec<Candidate> = sizes.iter().enumerate()
                .map(|(i, (c, m))| cand(&format!("i{i}"), *c, *m)).collect();
            let kind = [PlacementStrategyType::Binpack, PlacementStrategyType::Spread, PlacementStrategyType::Random][strat];
            let mut rng = rng();
            for (cpu, mem) in reqs {
                let mut r = req(cpu, mem);
                r.strategy = vec![PlacementStrategy { kind, field: Some("cpu".into()) }];
                match place(&r, &cs, &mut rng) {
                    Ok(i) => {
                        prop_assert!(cs[i].cpu_free() >= cpu && cs[i].memory_free() >= mem);
                        cs[i].take(&r);
                    }
                    Err(_) => prop_assert!(cs.iter().all(|c| c.cpu_free() < cpu || c.memory_free() < mem)),
                }
            }
            for c in &cs {
                prop_assert!(c.cpu_used <= c.cpu_total && c.memory_used <= c.memory_total);
            }
        }
    }
}
