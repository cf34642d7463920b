//! `berth diff`: what a manifest object looks like against its stored counterpart, as a
//! readable unified diff of YAML.

use serde_json::{json, Map, Value};

use crate::apply::ownership;

/// The part of an object a manifest describes: apiVersion, kind, name, labels, the user's own
/// annotations (not berth's ownership ones) and spec. Task definitions are named by family.
pub fn projection(v: &Value) -> Value {
    let kind = v["kind"].as_str().unwrap_or_default();
    let mut name = v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if kind == "TaskDefinition" {
        if let Some((family, _)) = name.split_once(':') {
            name = family.to_string();
        }
    }
    let mut meta = Map::new();
    meta.insert("name".into(), json!(name));
    if let Some(l) = v["metadata"]["labels"]
        .as_object()
        .filter(|l| !l.is_empty())
    {
        meta.insert("labels".into(), Value::Object(l.clone()));
    }
    if let Some(a) = v["metadata"]["annotations"].as_object() {
        let user: Map<String, Value> = a
            .iter()
            .filter(|(k, _)| !ownership::is_ownership_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !user.is_empty() {
            meta.insert("annotations".into(), Value::Object(user));
        }
    }
    json!({
        "apiVersion": v["apiVersion"],
        "kind": kind,
        "metadata": meta,
        "spec": v["spec"],
    })
}

pub fn to_yaml(v: &Value) -> String {
    serde_yaml::to_string(v).unwrap_or_else(|_| format!("{v:#}\n"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line<'a> {
    Same(&'a str),
    Del(&'a str),
    Add(&'a str),
}

/// Line diff by longest common subsequence (manifests are small; a pathological size falls
/// back to "everything replaced").
fn lines_diff<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<Line<'a>> {
    let (n, m) = (a.len(), b.len());
    if n.saturating_mul(m) > 16_000_000 {
        let mut out: Vec<Line> = a.iter().map(|l| Line::Del(l)).collect();
        out.extend(b.iter().map(|l| Line::Add(l)));
        return out;
    }
    // lcs[i][j]: LCS length of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(n + m);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(Line::Same(a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(Line::Del(a[i]));
            i += 1;
        } else {
            out.push(Line::Add(b[j]));
            j += 1;
        }
    }
    out
}

/// A unified diff of `old` → `new` with `context` lines around each change; empty when equal.
pub fn unified(old: &str, new: &str, old_name: &str, new_name: &str, context: usize) -> String {
    if old == new {
        return String::new();
    }
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let d = lines_diff(&a, &b);
    let changed: Vec<usize> = d
        .iter()
        .enumerate()
        .filter(|(_, l)| !matches!(l, Line::Same(_)))
        .map(|(i, _)| i)
        .collect();
    if changed.is_empty() {
        return String::new();
    }
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    // Group changes whose context windows touch into hunks.
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for &c in &changed {
        let lo = c.saturating_sub(context);
        let hi = (c + context + 1).min(d.len());
        match hunks.last_mut() {
            Some((_, end)) if lo <= *end => *end = hi,
            _ => hunks.push((lo, hi)),
        }
    }
    for (lo, hi) in hunks {
        // Line numbers (1-based) where the hunk starts in each side.
        let (mut oa, mut ob) = (1, 1);
        for l in &d[..lo] {
            match l {
                Line::Same(_) => {
                    oa += 1;
                    ob += 1;
                }
                Line::Del(_) => oa += 1,
                Line::Add(_) => ob += 1,
            }
        }
        let ca = d[lo..hi]
            .iter()
            .filter(|l| !matches!(l, Line::Add(_)))
            .count();
        let cb = d[lo..hi]
            .iter()
            .filter(|l| !matches!(l, Line::Del(_)))
            .count();
        let start = |s: usize, c: usize| if c == 0 { s - 1 } else { s };
        out.push_str(&format!(
            "@@ -{},{ca} +{},{cb} @@\n",
            start(oa, ca),
            start(ob, cb)
        ));
        for l in &d[lo..hi] {
            match l {
                Line::Same(s) => out.push_str(&format!(" {s}\n")),
                Line::Del(s) => out.push_str(&format!("-{s}\n")),
                Line::Add(s) => out.push_str(&format!("+{s}\n")),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified("a\nb\n", "a\nb\n", "x", "y", 3), "");
    }

    #[test]
    fn a_changed_line_is_a_small_hunk() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nD\ne\nf\ng\nh\n";
        let d = unified(old, new, "stored", "desired", 1);
        assert_eq!(
            d,
            "--- stored\n+++ desired\n@@ -3,3 +3,3 @@\n c\n-d\n+D\n e\n"
        );
    }

    #[test]
    fn additions_deletions_and_separate_hunks() {
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n";
        let new = "0\n1\n2\n3\n4\n5\n6\n7\n8\n10\n";
        let d = unified(old, new, "a", "b", 1);
        assert!(d.contains("@@ -1,1 +1,2 @@\n+0\n 1\n"), "{d}");
        assert!(d.contains("@@ -8,3 +9,2 @@\n 8\n-9\n 10\n"), "{d}");
        // Everything new: the old side is empty.
        let d = unified("", "x\n", "a", "b", 3);
        assert!(d.contains("@@ -0,0 +1,1 @@\n+x\n"), "{d}");
    }

    #[test]
    fn projection_ignores_ownership_status_and_revision() {
        let stored = json!({
            "apiVersion": "berth.dev/v1", "kind": "TaskDefinition",
            "metadata": {"name": "web:3", "revision": 42, "uid": "u",
                         "annotations": {"berth.dev/source": "m", "berth.dev/commit": "abc", "team": "a"}},
            "spec": {"cpu": 1}, "status": {"status": "ACTIVE"}
        });
        let desired = json!({
            "apiVersion": "berth.dev/v1", "kind": "TaskDefinition",
            "metadata": {"name": "web", "annotations": {"team": "a"}},
            "spec": {"cpu": 1}
        });
        assert_eq!(projection(&stored), projection(&desired));
        let yaml = to_yaml(&projection(&stored));
        assert!(yaml.contains("name: web\n"), "{yaml}");
        assert!(!yaml.contains("berth.dev/source"), "{yaml}");
    }
}
