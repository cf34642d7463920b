//! Percent-encoding (RFC 3986 unreserved characters pass), the one encoder and decoder every
//! layer uses: SigV4 canonical forms, CLI query strings, request paths.

/// Encode every byte but the unreserved ones; `keep_slash` leaves `/` as is (paths).
pub fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decode `%XX` escapes; a malformed escape stays as written.
pub fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// A request path as the router's handlers see it: each segment percent-decoded. Refused
/// (with the reason) when a segment hides a `/` (`%2F`), is a dot segment (`.`, `..`, also
/// encoded), is empty inside the path (`//`), or does not decode to UTF-8 — spellings that
/// could make authorization and the handler disagree about the resource.
pub fn normalized_path(raw: &str) -> Result<String, &'static str> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err("the path must start with /");
    };
    let mut out = String::with_capacity(raw.len());
    let segs: Vec<&str> = rest.split('/').collect();
    for (i, seg) in segs.iter().enumerate() {
        let decoded = String::from_utf8(decode(seg)).map_err(|_| "the path is not valid UTF-8")?;
        if decoded.contains('/') {
            return Err("encoded slashes are not allowed in the path");
        }
        if decoded == "." || decoded == ".." {
            return Err("dot segments are not allowed in the path");
        }
        if decoded.is_empty() && i + 1 < segs.len() {
            return Err("empty segments are not allowed in the path");
        }
        out.push('/');
        out.push_str(&decoded);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_per_segment() {
        assert_eq!(
            normalized_path("/v1/services/w%65b").unwrap(),
            "/v1/services/web"
        );
        assert_eq!(normalized_path("/v1/services/").unwrap(), "/v1/services/");
        assert_eq!(normalized_path("/").unwrap(), "/");
        assert!(normalized_path("/v1/services/a%2Fb").is_err());
        assert!(normalized_path("/v1/services/a%2fb").is_err());
        assert!(normalized_path("/v1/services/..").is_err());
        assert!(normalized_path("/v1/%2e%2e/services").is_err());
        assert!(normalized_path("/v1//services").is_err());
        assert!(normalized_path("/v1/%ff").is_err());
    }
}
