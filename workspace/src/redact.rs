//! Keeping secrets out of messages: a URL's password never reaches an
//! error, a log line or the terminal.

/// `url` with the password in its user info replaced by `***`
/// (`redis://:secret@host:6379/0` -> `redis://:***@host:6379/0`); a URL
/// without one is returned as it is.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let user_info = &authority[..at];
    let Some(colon) = user_info.find(':') else {
        return url.to_string();
    };
    format!(
        "{}{}:***{}",
        &url[..scheme_end],
        &user_info[..colon],
        &rest[at..]
    )
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden_and_the_rest_kept() {
        let cases = [
            ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
            ("rediss://user:p@ss:w@h/1", "rediss://user:***@h/1"),
            ("redis://user@h", "redis://user@h"),
            ("redis://h:6379/0", "redis://h:6379/0"),
            ("redis://h/0?x=a@b:c", "redis://h/0?x=a@b:c"),
            ("not a url :x@y", "not a url :x@y"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
