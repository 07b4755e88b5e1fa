//! An error and its causes as one line for the user, each said once.
//!
//! anyhow's `{:#}` joins every error of the chain with ": ". Many of our
//! errors already put their cause in their own words (`"the golden boot's
//! monitor process: {0}"`) and also give it as their `source`, so the
//! cause was printed twice. Here a cause whose words are already in the
//! line is left out.

/// `error` and each of its causes not already said, joined with ": ".
pub fn describe(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[derive(Debug, thiserror::Error)]
    #[error("the monitor could not restore the VM: {0}")]
    struct Inner(String);

    /// Says its cause and gives it as its source, as many of ours do.
    #[derive(Debug, thiserror::Error)]
    #[error("the golden boot's monitor process: {0}")]
    struct Says(#[from] Inner);

    /// Gives its cause as its source only.
    #[derive(Debug, thiserror::Error)]
    #[error("cannot create the golden snapshot")]
    struct Quiet(#[source] Inner);

    #[test]
    fn each_cause_is_said_once() {
        let inner = || Inner("no KVM".into());
        assert_eq!(
            describe(&anyhow::Error::new(Says(inner()))),
            "the golden boot's monitor process: the monitor could not restore the VM: no KVM"
        );
        assert_eq!(
            describe(&anyhow::Error::new(Quiet(inner()))),
            "cannot create the golden snapshot: the monitor could not restore the VM: no KVM"
        );
        let context = anyhow::Error::new(Quiet(inner())).context("run");
        assert_eq!(
            describe(&context),
            "run: cannot create the golden snapshot: the monitor could not restore the VM: no KVM"
        );
    }
}
