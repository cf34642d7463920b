//! Fuzzing (proptest) of everything berth decodes from outside: manifests (YAML and JSON,
//! structured and byte-mutated), SigV4 `Authorization` headers and signed-request checks, API
//! JSON bodies (apply/delete documents), request classification and audit redaction, plus raw
//! garbage HTTP requests against a live `berth up`.
//!
//! Properties: no panic, every input answered within a time bound, errors are errors (4xx for
//! the live server, never 5xx), and the server stays healthy.
//!
//! - `fuzz_short_*`: always on, a few seconds each.
//! - `fuzz_long`: `#[ignore]`d; runs each target for `FUZZ_SECS` seconds (default 60, so
//!   about five minutes in all): `cargo test --release --test fuzz -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use berth::auth::{actions, sigv4};
use berth::manifest::{parse_str, Document};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

/// The slowest any single input may take (generous: debug builds, a busy 2-core machine).
const PER_INPUT: Duration = Duration::from_secs(5);

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("apiVersion".to_string()),
        Just("kind".to_string()),
        Just("metadata".to_string()),
        Just("name".to_string()),
        Just("spec".to_string()),
        Just("containerDefinitions".to_string()),
        Just("image".to_string()),
        Just("taskDefinition".to_string()),
        Just("desiredCount".to_string()),
        Just("statements".to_string()),
        Just("effect".to_string()),
        Just("actions".to_string()),
        Just("resources".to_string()),
        Just("documents".to_string()),
        Just("resource".to_string()),
        Just("source".to_string()),
        Just("privileged".to_string()),
        Just("volumes".to_string()),
        Just("linuxParameters".to_string()),
        "[a-zA-Z]{1,10}",
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        prop_oneof![
            Just("Allow".to_string()),
            Just("Deny".to_string()),
            Just("berth:*".to_string()),
            Just("Service".to_string()),
            Just("Role".to_string()),
            Just("TaskDefinition".to_string()),
            Just("/var/run/docker.sock".to_string()),
            ".{0,24}",
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn envelope() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just("Cluster"),
            Just("TaskDefinition"),
            Just("Service"),
            Just("Role"),
            Just("ScalingPolicy"),
            Just("Task"),
            Just("Nope"),
        ],
        "[a-z][a-z0-9-]{0,12}",
        arb_json(),
    )
        .prop_map(|(kind, name, spec)| {
            serde_json::json!({"apiVersion": "berth.dev/v1", "kind": kind,
                               "metadata": {"name": name}, "spec": spec})
        })
}

/// A byte-level mutation: (position fraction, what to do, replacement text).
fn mutate(text: &str, edits: &[(f64, u8, String)]) -> String {
    let mut s: Vec<char> = text.chars().collect();
    for (at, op, rep) in edits {
        let i = ((s.len() as f64) * at) as usize;
        let i = i.min(s.len());
        match op % 3 {
            0 => {
                for (k, c) in rep.chars().enumerate() {
                    s.insert((i + k).min(s.len()), c);
                }
            }
            1 => {
                let end = (i + rep.len()).min(s.len());
                s.drain(i..end);
            }
            _ => {
                for (k, c) in rep.chars().enumerate() {
                    if let Some(slot) = s.get_mut(i + k) {
                        *slot = c;
                    }
                }
            }
        }
    }
    s.into_iter().collect()
}

fn edits() -> impl Strategy<Value = Vec<(f64, u8, String)>> {
    prop::collection::vec(
        (
            0.0f64..1.0,
            any::<u8>(),
            prop_oneof![
                "[-:&*!|>{}\\[\\],#'\"?%@` \n\t]{1,4}",
                Just("&a [*a, *a, *a, *a]".to_string()),
                Just("\n---\n".to_string()),
                Just("<<: *a".to_string()),
                ".{1,6}",
            ],
        ),
        0..6,
    )
}

fn manifest_text() -> impl Strategy<Value = (String, bool)> {
    (
        prop::collection::vec(envelope(), 1..4),
        edits(),
        any::<bool>(),
    )
        .prop_map(|(docs, edits, as_json)| {
            let text = if as_json {
                serde_json::to_string_pretty(&docs).unwrap()
            } else {
                docs.iter()
                    .map(|d| serde_yaml::to_string(d).unwrap())
                    .collect::<Vec<_>>()
                    .join("---\n")
            };
            (mutate(&text, &edits), as_json)
        })
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    assert!(t.elapsed() < PER_INPUT, "{what} took {:?}", t.elapsed());
    out
}

fn check_manifest(text: &str, as_json: bool) {
    let file = if as_json { "fuzz.json" } else { "fuzz.yaml" };
    let r = timed("parse_str", || parse_str(text, file));
    if let Ok(docs) = r {
        // What parses must validate without panicking and round-trip through the API's
        // JSON form (the CLI sends documents this way).
        let _ = berth::manifest::validate(&docs);
        let body = serde_json::to_vec(&serde_json::json!({"documents": docs})).unwrap();
        let back: Value = serde_json::from_slice(&body).unwrap();
        let _: Vec<Document> = serde_json::from_value(back["documents"].clone()).unwrap();
        let _ = actions::classify(&axum::http::Method::POST, "/v1/apply", &body);
    } else if let Err(errs) = r {
        assert!(!errs.is_empty());
        for e in errs {
            assert!(!e.message.is_empty());
        }
    }
}

fn auth_header() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        "Credential=[A-Z0-9]{16,24}/[0-9]{8}/[a-z0-9-]{1,12}/berth/aws4_request",
        "Credential=.{0,40}",
        "SignedHeaders=[a-z;-]{0,40}",
        "SignedHeaders=host;x-amz-date",
        "Signature=[0-9a-f]{64}",
        "Signature=.{0,70}",
        ".{0,20}",
    ];
    (
        prop_oneof![
            Just("AWS4-HMAC-SHA256 "),
            Just("AWS4-HMAC-SHA256"),
            Just("")
        ],
        prop::collection::vec(part, 0..5),
        prop_oneof![Just(", "), Just(","), Just(" ")],
    )
        .prop_map(|(alg, parts, sep)| format!("{alg}{}", parts.join(sep)))
}

fn check_sigv4(h: &str, path: &str, query: &str, headers: &[(String, String)], body: &[u8]) {
    let parsed = timed("parse_authorization", || sigv4::parse_authorization(h));
    let _ = sigv4::canonical_query(query);
    let _ = sigv4::canonical_uri(path);
    if let Ok(a) = parsed {
        assert_eq!(a.signature.len(), 64);
        assert!(!a.signed_headers.is_empty());
        let ph = sigv4::payload_hash_of(headers, body);
        let parts = sigv4::RequestParts {
            method: "POST",
            path,
            query,
            headers,
            payload_hash: &ph,
        };
        let now = chrono::Utc::now();
        if let Ok(d) = sigv4::precheck(&a, &parts, body, now) {
            // A random signature must never verify.
            assert!(sigv4::verify(&a, &parts, &d, "secret").is_err());
        }
    }
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (
            prop_oneof![
                Just("host".to_string()),
                Just("x-amz-date".to_string()),
                Just("x-amz-content-sha256".to_string()),
                Just("x-amz-security-token".to_string()),
                "[a-z-]{1,12}",
            ],
            prop_oneof![
                Just(sigv4::format_amz_date(chrono::Utc::now())),
                Just("UNSIGNED-PAYLOAD".to_string()),
                "[ -~]{0,30}",
            ],
        ),
        0..6,
    )
}

fn check_body(method: &str, path: &str, body: &[u8]) {
    let m: axum::http::Method = method.parse().unwrap();
    timed("classify", || actions::classify(&m, path, body));
    let _ = serde_json::from_slice::<Vec<Document>>(body);
    let _ = serde_json::from_slice::<berth::manifest::Resource>(body);
    let p = berth::audit::request_parameters(Some(path), body);
    let n = serde_json::to_vec(&p).unwrap().len();
    assert!(n < 64 * 1024, "audit parameters are bounded, got {n} bytes");
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        arb_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        prop::collection::vec(envelope(), 0..3).prop_map(|docs| {
            let docs: Vec<Value> = docs
                .into_iter()
                .map(|r| serde_json::json!({"source": {"file": "f", "document": 1}, "resource": r}))
                .collect();
            serde_json::to_vec(&serde_json::json!({"documents": docs})).unwrap()
        }),
        prop::collection::vec(any::<u8>(), 0..256),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("v1"),
            Just("services"),
            Just("tasks"),
            Just("roles"),
            Just("apply"),
            Just("auth"),
            Just("identities"),
            Just("audit"),
            Just("stop"),
            Just(""),
            Just("%2F"),
            Just("..")
        ],
        0..5,
    )
    .prop_map(|segs| format!("/{}", segs.join("/")))
}

/// Run `f` on `strategy` until `secs` pass (a fresh randomly seeded runner per round of 64
/// cases); returns the number of cases run.
fn run_for<S: Strategy>(
    name: &str,
    secs: f64,
    strategy: S,
    f: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> u64
where
    S::Value: std::fmt::Debug,
{
    use std::sync::atomic::{AtomicU64, Ordering};
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let n = AtomicU64::new(0);
    let counted = |v: S::Value| {
        n.fetch_add(1, Ordering::Relaxed);
        f(v)
    };
    while Instant::now() < deadline {
        let mut runner = TestRunner::new(Config {
            cases: 64,
            failure_persistence: None,
            ..Config::default()
        });
        if let Err(e) = runner.run(&strategy, counted) {
            panic!("{name}: {e}");
        }
    }
    let n = n.into_inner();
    eprintln!("fuzz {name}: {n} cases in {secs:.0}s");
    n
}

fn all_targets(secs: f64) -> u64 {
    let mut n = 0;
    n += run_for("manifest", secs, manifest_text(), |(t, j)| {
        check_manifest(&t, j);
        Ok(())
    });
    n += run_for("manifest-raw", secs / 2.0, ".{0,400}", |t| {
        check_manifest(&t, false);
        check_manifest(&t, true);
        Ok(())
    });
    n += run_for(
        "sigv4",
        secs,
        (
            auth_header(),
            path(),
            "[a-z=&%0-9]{0,30}",
            headers(),
            body(),
        ),
        |(h, p, q, hs, b)| {
            check_sigv4(&h, &p, &q, &hs, &b);
            Ok(())
        },
    );
    n += run_for(
        "api-bodies",
        secs,
        (
            prop_oneof![Just("GET"), Just("POST"), Just("DELETE"), Just("PUT")],
            path(),
            body(),
        ),
        |(m, p, b)| {
            check_body(m, &p, &b);
            Ok(())
        },
    );
    n += run_for("redact", secs / 2.0, arb_json(), |v| {
        let r = berth::audit::redact(&v);
        let text = serde_json::to_string(&r).unwrap();
        prop_assert!(text.len() <= serde_json::to_string(&v).unwrap().len() + 64 * 1024);
        Ok(())
    });
    n
}

#[test]
fn fuzz_short_decoders() {
    all_targets(2.0);
}

#[test]
fn fuzz_short_known_bombs() {
    // Alias bomb, deep nesting (YAML and JSON), a huge scalar: errors, fast.
    let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    assert!(timed("alias bomb", || parse_str(bomb, "bomb.yaml")).is_err());
    let deep_yaml = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(timed("deep yaml", || parse_str(&deep_yaml, "deep.yaml")).is_err());
    let deep_json = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(timed("deep json", || parse_str(&deep_json, "deep.json")).is_err());
    let m = axum::http::Method::POST;
    timed("deep body", || {
        actions::classify(&m, "/v1/apply", deep_json.as_bytes())
    });
    let _ = berth::audit::request_parameters(None, deep_json.as_bytes());
    let long = format!("AWS4-HMAC-SHA256 Credential={}", "A".repeat(1 << 20));
    assert!(sigv4::parse_authorization(&long).is_err());
}

/// Garbage requests against a live server: never a 5xx, never a hang, still healthy after.
fn live(secs: f64) -> u64 {
    use common::berth::{http_raw, Berth};
    let b = Berth::up(None);
    let port = b.port;
    let token = b.token();
    let strategy = (
        prop_oneof![
            Just("GET"),
            Just("POST"),
            Just("DELETE"),
            Just("PUT"),
            Just("HEAD")
        ],
        path(),
        "[a-z=&%0-9]{0,20}",
        prop_oneof![
            Just(None),
            Just(Some(format!("Bearer {token}"))),
            Just(Some("Bearer berth_nope".to_string())),
            auth_header().prop_map(Some),
            "[ -~]{0,40}".prop_map(Some),
        ],
        headers(),
        body(),
    );
    let n = run_for(
        "live-http",
        secs,
        strategy,
        |(m, p, q, auth, mut hs, body)| {
            hs.retain(|(n, _)| n != "host");
            if let Some(a) = auth {
                hs.push(("Authorization".into(), a));
            }
            let path = if q.is_empty() { p } else { format!("{p}?{q}") };
            let t = Instant::now();
            let r = http_raw(port, m, &path, &hs, &body);
            prop_assert!(t.elapsed() < Duration::from_secs(10), "hang on {m} {path}");
            if let Some((status, _, text)) = r {
                prop_assert!(status < 500, "{m} {path} -> {status}: {text}");
            }
            Ok(())
        },
    );
    let (s, _, _) = http_raw(port, "GET", "/healthz", &[], b"").expect("still serving");
    assert_eq!(s, 200);
    n
}

#[test]
fn fuzz_short_live_api() {
    live(3.0);
}

#[test]
#[ignore = "long fuzz run: cargo test --release --test fuzz -- --ignored --nocapture"]
fn fuzz_long() {
    let secs: f64 = std::env::var("FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60.0);
    let t = Instant::now();
    let n = all_targets(secs) + live(secs);
    eprintln!("fuzz_long: {n} cases in {:?}", t.elapsed());
}
