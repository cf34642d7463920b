//! Names: ECS's rule for families, services, clusters, containers and volumes.

/// Longest name ECS accepts for families, services, clusters and containers.
const MAX_NAME: usize = 255;

/// Check a name: 1..=255 of `[A-Za-z0-9_-]` (ECS's rule for families, services, clusters and
/// containers; also safe as a store key segment).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().count() > MAX_NAME {
        return Err(format!("must be at most {MAX_NAME} characters"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "`{name}` is not a valid name: only letters, digits, `-` and `_` are allowed (found {bad:?})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("web-1_x").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("web:1").is_err());
        assert!(validate_name(&"a".repeat(255)).is_ok());
        assert!(validate_name(&"a".repeat(256)).is_err());
    }
}
