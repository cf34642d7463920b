//! Secret checks: key names, value sizes. Messages never quote a value.

use super::problems::{push, Problems};
use crate::model::SecretSpec;

/// Longest key name (Kubernetes' limit for Secret keys).
const MAX_KEY: usize = 253;
/// Largest value (Secrets Manager's limit).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Largest secret, all values together (sealed, it is about twice this in the store).
pub const MAX_SECRET_BYTES: usize = 256 * 1024;
const MAX_KEYS: usize = 100;

/// Problems with a secret's data, as (field path, message).
pub(super) fn check_secret(spec: &SecretSpec, out: &mut Problems) {
    if spec.data.is_empty() {
        push(
            out,
            "spec.data",
            "a secret needs at least one key (e.g. data: {value: ...})",
        );
    }
    if spec.data.len() > MAX_KEYS {
        push(
            out,
            "spec.data",
            format!("at most {MAX_KEYS} keys in one secret"),
        );
    }
    let mut total = 0;
    for (k, v) in &spec.data {
        let field = format!("spec.data.{k}");
        if k.is_empty()
            || k.len() > MAX_KEY
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            push(
                out,
                field.clone(),
                format!("invalid key name {k:?}: 1..={MAX_KEY} letters, digits, `-`, `_` or `.`"),
            );
        }
        if v.len() > MAX_VALUE_BYTES {
            push(
                out,
                field,
                format!(
                    "value is {} bytes; at most {MAX_VALUE_BYTES} bytes",
                    v.len()
                ),
            );
        }
        total += v.len();
    }
    if total > MAX_SECRET_BYTES {
        push(
            out,
            "spec.data",
            format!("values total {total} bytes; at most {MAX_SECRET_BYTES} bytes"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::problems_of;

    #[test]
    fn keys_and_sizes() {
        let ok = "apiVersion: berth.dev/v1\nkind: Secret\nmetadata: {name: db}\nspec:\n  data: {username: u, password: p, tls.crt: x}\n";
        assert_eq!(problems_of(ok), Vec::<String>::new());
        let bad = "apiVersion: berth.dev/v1\nkind: Secret\nmetadata: {name: db}\nspec:\n  data: {\"a b\": hunter2}\n";
        let p = problems_of(bad);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("spec.data.a b") && !p[0].contains("hunter2"),
            "{p:?}"
        );
        let empty =
            "apiVersion: berth.dev/v1\nkind: Secret\nmetadata: {name: db}\nspec: {data: {}}\n";
        assert!(problems_of(empty)[0].contains("at least one key"));
        let big = format!(
            "apiVersion: berth.dev/v1\nkind: Secret\nmetadata: {{name: db}}\nspec:\n  data: {{v: {}}}\n",
            "x".repeat(70_000)
        );
        assert!(problems_of(&big)[0].contains("at most 65536 bytes"));
    }

    #[test]
    fn scalars_are_strings_and_errors_never_quote_a_value() {
        let docs = crate::manifest::parse_str(
            "apiVersion: berth.dev/v1\nkind: Secret\nmetadata: {name: db}\nspec:\n  data: {pin: 1234, on: true}\n",
            "s.yaml",
        )
        .unwrap();
        let crate::manifest::Resource::Secret(s) = &docs[0].resource else {
            panic!("a Secret")
        };
        assert_eq!(s.spec.data["pin"], "1234");
        assert_eq!(s.spec.data["on"], "true");
        let e = crate::manifest::parse_str(
            "apiVersion: berth.dev/v1\nkind: Secret\nmetadata: {name: db}\nspec:\n  data: {v: {nested: hunter2}}\n",
            "s.yaml",
        )
        .unwrap_err();
        let shown = format!("{e:?}");
        assert!(
            shown.contains("must be a string") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn values_must_be_strings() {
        let e = crate::manifest::parse_str(
            "apiVersion: berth.dev/v1\nkind: Secret\nmetadata: {name: db}\nspec:\n  data: {v: [1]}\n",
            "s.yaml",
        )
        .unwrap_err();
        let shown = format!("{e:?}");
        assert!(shown.contains("spec.data"), "{shown}");
    }
}
