//! Command-line flags shared by the bench's examples: every flag takes a value, given as
//! `--flag value` or `--flag=value`.

/// The (flag, value) pairs in order; `Err("")` when help was asked for.
pub fn pairs() -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        match flag.split_once('=') {
            Some((n, v)) => out.push((n.to_string(), v.to_string())),
            None => {
                let v = it
                    .next()
                    .ok_or_else(|| format!("missing value for {flag}"))?;
                out.push((flag, v));
            }
        }
    }
    Ok(out)
}
