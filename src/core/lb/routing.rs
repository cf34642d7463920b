//! Listener rules: which target group (or fixed response) a request goes to. Pure functions.

use crate::model::lb::{Action, Listener, Rule};

/// Does a rule's path pattern match? `*` matches all, `/api/*` a prefix, anything else exactly.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => {
            path.starts_with(prefix)
                // `/api/*` also takes `/api` itself.
                || prefix.strip_suffix('/').is_some_and(|p| path == p)
        }
        None => path == pattern,
    }
}

/// Host without port, case-insensitive; `*.example.com` matches any subdomain.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let (p, h) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match p.strip_prefix("*.") {
        Some(suffix) => h.ends_with(&format!(".{suffix}")),
        None => p == h,
    }
}

fn rule_matches(r: &Rule, host: &str, path: &str) -> bool {
    r.path_pattern
        .as_deref()
        .is_none_or(|p| path_matches(p, path))
        && r.host_header
            .as_deref()
            .is_none_or(|h| host_matches(h, host))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Forward(String),
    Fixed {
        status: u16,
        content_type: String,
        body: String,
    },
}

/// The route for a request: rules by ascending priority, then the default action, then 404.
pub fn route(listener: &Listener, host: &str, path: &str) -> Route {
    let mut rules: Vec<&Rule> = listener.rules.iter().collect();
    rules.sort_by_key(|r| r.priority);
    if let Some(r) = rules.into_iter().find(|r| rule_matches(r, host, path)) {
        return Route::Forward(r.target_group.clone());
    }
    match &listener.default_action {
        Some(Action {
            target_group: Some(tg),
            ..
        }) => Route::Forward(tg.clone()),
        Some(Action {
            fixed_response: Some(f),
            ..
        }) => Route::Fixed {
            status: f.status_code,
            content_type: f
                .content_type
                .clone()
                .unwrap_or_else(|| "text/plain".into()),
            body: f.message_body.clone().unwrap_or_default(),
        },
        _ => Route::Fixed {
            status: 404,
            content_type: "text/plain".into(),
            body: "no rule matched\n".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lb::FixedResponse;

    fn rule(priority: u32, path: Option<&str>, host: Option<&str>, tg: &str) -> Rule {
        Rule {
            priority,
            path_pattern: path.map(str::to_string),
            host_header: host.map(str::to_string),
            target_group: tg.into(),
        }
    }

    #[test]
    fn paths_and_hosts() {
        assert!(path_matches("/a/*", "/a/x/y"));
        assert!(path_matches("/a/*", "/a"));
        assert!(!path_matches("/a/*", "/ab"));
        assert!(path_matches("/exact", "/exact"));
        assert!(!path_matches("/exact", "/exact/more"));
        assert!(host_matches("Admin.Example", "admin.example:8088"));
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
    }

    #[test]
    fn priority_then_default() {
        let l = Listener {
            port: 80,
            protocol: "HTTP".into(),
            rules: vec![
                rule(20, Some("/a/*"), None, "wide"),
                rule(10, Some("/a/special/*"), None, "narrow"),
                rule(30, None, Some("admin.example"), "admin"),
            ],
            default_action: Some(Action {
                fixed_response: Some(FixedResponse {
                    status_code: 418,
                    content_type: None,
                    message_body: Some("teapot".into()),
                }),
                target_group: None,
            }),
        };
        assert_eq!(
            route(&l, "x", "/a/special/1"),
            Route::Forward("narrow".into())
        );
        assert_eq!(route(&l, "x", "/a/1"), Route::Forward("wide".into()));
        assert_eq!(
            route(&l, "admin.example", "/z"),
            Route::Forward("admin".into())
        );
        assert!(matches!(
            route(&l, "x", "/z"),
            Route::Fixed { status: 418, .. }
        ));
    }
}
